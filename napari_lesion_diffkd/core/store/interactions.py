"""The annotation interaction log: what a person did to get each saved label (persist only).

One row of ``interaction_events`` (schema version 5) per interaction, in *sessions*: a
session is one tracked layer (``label``, ``consensus`` or ``proposal``) of one image, from
its *base* (the content it started with) on. Each row has its UTC time (``at``), the
seconds since the session began (``elapsed``), a kind and, for a change of the layer's
pixels, the changed pixels.

Kinds (:data:`KINDS`)
    ``base``    the start mask: ``data["source"]`` is ``empty`` (zeros of ``data["shape"]``
                and ``data["dtype"]``), ``label`` (label version ``data["version"]``) or
                ``pixels`` (its non-zero pixels are the payload, e.g. a model's consensus
                or a proposal);
    ``stroke``  a brush / fill / erase stroke of the person;
    ``accept``  a proposal accepted into the layer ("accept as is" too);
    ``undo`` / ``redo``  a step of the layer's edit history walked back or forth;
    ``model``   a model call (``data``: model name, seconds, prompts) and, with a payload,
                what it wrote into the layer;
    ``edit``    any other change of the layer (``data["source"]`` says which);
    ``prompt``  a SAM prompt (point or box, ``data``), no pixels;
    ``review``  the app showed an uncertain region (``data``: its box and centre);
    ``save``    the layer was saved as label version ``label_version_id``: the session's
                events with a smaller ``seq`` rebuild it (``replay.py``).

Pixel payloads (:func:`encode_diff`): an ``.npz`` (zlib) of the changed pixels' flat
indices, delta-encoded (a stroke's run of neighbours becomes a run of 1s, which compresses to
almost nothing), and their new values (one value when they are all the same). A change of
more than 1/:data:`DENSE_FRACTION` of the pixels (an accepted mask, a model output) stores
a bit mask of the changed pixels instead of indices: as small, and much faster to make. A payload
over :data:`FILE_THRESHOLD` bytes is written as a file ``interactions/<ab>/<token>.npz``
(atomic, like every store file; ``check`` / ``cleanup`` know the folder) and the row names
it, so the database stays small even for a 4000 x 3000 image.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.store import files
from napari_lesion_diffkd.core.store.errors import InvalidInputError, StoreError
from napari_lesion_diffkd.core.store.records import dumps, filtered_rows, loads

KINDS = ("base", "stroke", "accept", "undo", "redo", "model", "edit", "prompt", "review",
         "save")
#: Kinds whose payload (when present) changes the layer's pixels.
PIXEL_KINDS = ("stroke", "accept", "undo", "redo", "model", "edit")
#: Payloads larger than this many bytes go to a file, not into the database.
FILE_THRESHOLD = 64 * 1024
FOLDER = "interactions"
#: A diff touching more than ``size / DENSE_FRACTION`` pixels is stored as a bit mask.
DENSE_FRACTION = 64


@dataclass(frozen=True)
class InteractionEvent:
    """One logged interaction (see the module docstring); ``file`` is absolute or None."""

    id: int
    image_id: int
    session: str
    seq: int
    kind: str
    layer: str | None
    at: str
    elapsed: float | None
    label_version_id: int | None
    pixels: int
    data: dict[str, Any]
    has_payload: bool
    file: Path | None

    @classmethod
    def from_row(cls, row: Any, root: Path) -> InteractionEvent:
        return cls(id=row["id"], image_id=row["image_id"], session=row["session"],
                   seq=row["seq"], kind=row["kind"], layer=row["layer"], at=row["at"],
                   elapsed=row["elapsed"], label_version_id=row["label_version_id"],
                   pixels=row["pixels"], data=loads(row["data"], {}),
                   has_payload=bool(row["has_blob"]) or row["file"] is not None,
                   file=None if row["file"] is None else root / row["file"])


@dataclass
class NewEvent:
    """An event to store (:func:`record_events`); ``payload`` from :func:`encode_diff`."""

    session: str
    seq: int
    kind: str
    at: str
    layer: str | None = None
    elapsed: float | None = None
    pixels: int = 0
    data: dict[str, Any] | None = None
    payload: bytes | None = None
    label_version_id: int | None = None


# --------------------------------------------------------------------------- payloads

def encode_diff(before: np.ndarray | None, after: np.ndarray) -> tuple[bytes | None, int]:
    """The pixels of ``after`` that differ from ``before`` (zeros when None), compressed;
    returns ``(payload, count)``, ``(None, 0)`` when nothing changed."""
    after = np.asarray(after)
    flat_after = after.reshape(-1)
    if before is None:
        flat = np.flatnonzero(flat_after)
    else:
        before = np.asarray(before)
        if before.shape != after.shape:
            raise ValueError(f"shape {before.shape} != {after.shape}")
        flat = np.flatnonzero(before.reshape(-1) != flat_after)
    if not flat.size:
        return None, 0
    values = flat_after[flat]
    if np.all(values == values[0]):
        values = values[:1]
    buf = io.BytesIO()
    if flat.size * DENSE_FRACTION > after.size:
        changed = np.zeros(after.size, bool)
        changed[flat] = True
        np.savez_compressed(buf, m=np.packbits(changed), n=np.array([after.size]), v=values)
    else:
        index_type = np.uint32 if after.size < 2 ** 32 else np.uint64
        np.savez_compressed(buf, i=np.diff(flat, prepend=0).astype(index_type), v=values)
    return buf.getvalue(), int(flat.size)


def apply_diff(array: np.ndarray, payload: bytes) -> int:
    """Write a payload of :func:`encode_diff` into ``array`` (C-contiguous) in place;
    returns the pixel count."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        if "m" in npz.files:
            size = int(npz["n"][0])
            if size != array.size:
                raise StoreError(f"an interaction diff of {size} pixels for an array of "
                                 f"{array.size}")
            flat = np.flatnonzero(np.unpackbits(npz["m"], count=size))
        else:
            flat = np.cumsum(npz["i"].astype(np.int64))
        values = npz["v"]
    if flat.size and int(flat[-1]) >= array.size:
        raise StoreError(f"an interaction diff addresses pixel {int(flat[-1])} of an array "
                         f"of {array.size}")
    np.put(array, flat, values.astype(array.dtype, copy=False) if values.size > 1
           else array.dtype.type(values[0]))
    return int(flat.size)


# --------------------------------------------------------------------------- rows

def record_events(store: Any, image: Any, events: Iterable[NewEvent]) -> list[int]:
    """Store events of one image in one transaction; returns their ids. Large payloads are
    written as files first (removed again when the transaction fails).

    Raises:
        InvalidInputError: unknown image or kind.
        StoreWriteError: a file or the rows could not be written (nothing is left).
    """
    from napari_lesion_diffkd.core.store.project import write_error

    record = store.image(image)
    events = list(events)
    for event in events:
        if event.kind not in KINDS:
            raise InvalidInputError(f"unknown interaction kind {event.kind!r}; one of {KINDS}")
    written: list[Path] = []
    rels: list[str | None] = []
    try:
        for event in events:
            rel = None
            if event.payload is not None and len(event.payload) > FILE_THRESHOLD:
                token = files.unique_name()
                rel = f"{FOLDER}/{token[:2]}/{token}.npz"
                path = store.root / rel
                written.append(path)
                from napari_lesion_diffkd.core.data.writers import atomic_write_bytes

                atomic_write_bytes(path, event.payload)
            rels.append(rel)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise write_error(exc, f"logging interactions of {record.name!r}") from exc
    ids = []
    try:
        with store.write() as conn:
            for event, rel in zip(events, rels, strict=True):
                blob = event.payload if rel is None else None
                cur = conn.execute(
                    "INSERT INTO interaction_events (image_id, session, seq, kind, layer, at, "
                    "elapsed, label_version_id, pixels, data, blob, file) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.id, event.session, int(event.seq), event.kind, event.layer,
                     event.at, event.elapsed, event.label_version_id, int(event.pixels),
                     dumps(event.data or {}), blob, rel))
                ids.append(int(cur.lastrowid or 0))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return ids


_COLUMNS = ("id, image_id, session, seq, kind, layer, at, elapsed, label_version_id, pixels, "
            "data, blob IS NOT NULL AS has_blob, file")


def events(store: Any, image: Any = None, session: str | None = None) -> list[InteractionEvent]:
    """Events of one image (or all) and optionally one session, by image, session, seq."""
    rows = filtered_rows(store.conn, f"SELECT {_COLUMNS} FROM interaction_events", [
        ("image_id", None if image is None else store.image(image).id),
        ("session", session)], "image_id, session, seq")
    return [InteractionEvent.from_row(r, store.root) for r in rows]


def save_events(store: Any, version_id: int) -> list[InteractionEvent]:
    """The ``save`` events that link a session to label version ``version_id``."""
    rows = store.conn.execute(
        f"SELECT {_COLUMNS} FROM interaction_events WHERE kind = 'save' "
        "AND label_version_id = ? ORDER BY id", (int(version_id),)).fetchall()
    return [InteractionEvent.from_row(r, store.root) for r in rows]


def payload(store: Any, event: InteractionEvent) -> bytes | None:
    """An event's pixel payload (from the row or its file), or None."""
    if event.file is not None:
        if not event.file.is_file():
            raise StoreError(f"interaction {event.id}: file {event.file} is missing")
        return event.file.read_bytes()
    row = store.conn.execute("SELECT blob FROM interaction_events WHERE id = ?",
                             (event.id,)).fetchone()
    return None if row is None or row[0] is None else bytes(row[0])
