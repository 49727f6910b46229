"""Rebuild a saved label from the interaction log, and sum up the annotation effort.

:func:`rebuild_label`: the ``save`` event of a label version names its session and place
in it; the session's ``base`` gives the start mask and every pixel event before the save
(strokes, accepts, undo / redo steps, model writes, other edits) is applied in order. The
result must equal the stored label bit for bit (:func:`replay_label` counts the pixels
that differ).

:func:`effort`: per image, what the person really did: prompts, strokes, accepts, undos,
redos, model calls and their seconds, regions reviewed, saves, and the active seconds (the
time between consecutive events, each gap capped at :data:`IDLE_CAP_S` so a coffee break
does not count).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.store.errors import InvalidInputError, StoreError
from napari_lesion_diffkd.core.store.interactions import (
    PIXEL_KINDS,
    InteractionEvent,
    apply_diff,
    events,
    payload,
    save_events,
)

#: A pause longer than this (seconds) between two events counts as this long.
IDLE_CAP_S = 60.0


@dataclass(frozen=True)
class ReplayResult:
    """:func:`replay_label`'s answer: ``different`` pixels (0 = bit for bit equal)."""

    image: str
    version: int
    session: str
    events: int
    different: int
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "version": self.version, "session": self.session,
                "events": self.events, "different": self.different,
                "identical": self.different == 0, "shape": list(self.shape)}


def _base(store: Any, event: InteractionEvent) -> np.ndarray:
    data = event.data
    shape = tuple(int(v) for v in data.get("shape", ()))
    dtype = np.dtype(data.get("dtype", "uint8"))
    source = data.get("source")
    if source == "label":
        array = np.array(store.read_label(int(data["version"])), dtype=dtype)
        if shape and array.shape != shape:
            raise StoreError(f"interaction base: label version {data['version']} has shape "
                             f"{array.shape}, the log says {shape}")
        return np.ascontiguousarray(array)
    if source in ("empty", "pixels"):
        array = np.zeros(shape, dtype)
        blob = payload(store, event)
        if source == "pixels" and blob is not None:
            apply_diff(array, blob)
        return array
    raise StoreError(f"interaction base {event.id}: unknown source {source!r}")


def rebuild_label(store: Any, version_id: int) -> tuple[np.ndarray, InteractionEvent, int]:
    """The label version rebuilt from its log: ``(array, save event, events applied)``.

    Raises:
        InvalidInputError: no log links to this version.
        StoreError: the log is incomplete (no base) or a payload file is missing.
    """
    saves = save_events(store, version_id)
    if not saves:
        raise InvalidInputError(f"label version {version_id} has no interaction log (saved "
                                "outside the app, or before the log existed)")
    save = saves[0]
    session = [e for e in events(store, session=save.session) if e.seq < save.seq]
    bases = [e for e in session if e.kind == "base"]
    if not bases:
        raise StoreError(f"the interaction log of label version {version_id} has no base "
                         f"(session {save.session})")
    array = _base(store, bases[0])
    applied = 1
    for event in session:
        if event.seq <= bases[0].seq or event.kind not in PIXEL_KINDS or not event.has_payload:
            continue
        blob = payload(store, event)
        if blob is not None:
            apply_diff(array, blob)
            applied += 1
    return array, save, applied


def replay_label(store: Any, image: Any, version: int | None = None) -> ReplayResult:
    """Rebuild ``image``'s label version (default: the newest one with a log) and compare
    it with the stored file.

    Raises:
        InvalidInputError: unknown image, a version of another image, or no log.
    """
    record = store.image(image)
    if version is None:
        row = store.conn.execute(
            "SELECT MAX(e.label_version_id) FROM interaction_events e JOIN label_versions v "
            "ON v.id = e.label_version_id WHERE e.kind = 'save' AND v.image_id = ?",
            (record.id,)).fetchone()
        if row is None or row[0] is None:
            raise InvalidInputError(f"image {record.name!r} has no label saved with an "
                                    "interaction log")
        version = int(row[0])
    label = store.label(int(version))
    if label.image_id != record.id:
        raise InvalidInputError(f"label version {version} is not a label of image "
                                f"{record.name!r}")
    rebuilt, save, applied = rebuild_label(store, label.id)
    stored = np.asarray(store.read_label(label))
    if rebuilt.ndim == stored.ndim + 1 and rebuilt.shape[0] == 1:
        rebuilt = rebuilt[0]
    if rebuilt.shape != stored.shape:
        different = int(stored.size)
    else:
        different = int(np.count_nonzero(rebuilt.astype(np.int64) != stored.astype(np.int64)))
    return ReplayResult(record.name, label.id, save.session, applied, different,
                        tuple(stored.shape))


def _time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def effort(store: Any) -> list[dict[str, Any]]:
    """Per image with a log, in image order: counts of each kind of interaction, model
    seconds and active seconds (see the module docstring)."""
    by_image: dict[int, list[InteractionEvent]] = {}
    for event in events(store):
        by_image.setdefault(event.image_id, []).append(event)
    names = {img.id: img.name for img in store.images()}
    out = []
    for image_id in sorted(by_image):
        evs = sorted(by_image[image_id], key=lambda e: (e.at, e.session, e.seq))
        count = {k: sum(e.kind == k for e in evs)
                 for k in ("prompt", "stroke", "accept", "undo", "redo", "review", "save",
                           "edit")}
        calls = [e for e in evs if e.kind == "model" and not e.data.get("cached")]
        times = [_time(e.at) for e in evs]
        active = sum(min(max(b - a, 0.0), IDLE_CAP_S) for a, b in zip(times, times[1:]))
        out.append({
            "image": names.get(image_id, str(image_id)),
            "prompts": count["prompt"], "strokes": count["stroke"],
            "accepts": count["accept"], "undos": count["undo"], "redos": count["redo"],
            "edits": count["stroke"] + count["undo"] + count["redo"] + count["edit"],
            "model_calls": len(calls),
            "model_seconds": round(sum(float(e.data.get("seconds") or 0.0) for e in calls), 3),
            "reviews": count["review"], "saves": count["save"],
            "seconds": round(active, 3),
            "versions": sorted({e.label_version_id for e in evs
                                if e.kind == "save" and e.label_version_id is not None}),
        })
    return out
