"""Store side of the active-learning loop (job type ``loop-round``, driven by
``core/active_learning/loop.py``): round rows, the annotation queue, a training-set folder
of chosen label versions, and the resumable train step behind the round's teacher and
student.

Tables (schema version 3)::

    loop_rounds(round, job_id, strategy, steps, created_at, finished_at)
    annotation_queue(round, position, image_id, score)

A round gets its number when its job first runs (1 + the largest so far) and keeps it
across re-runs. ``steps`` (JSON) holds one record per finished step; a step is recorded in
one transaction after its outputs are committed, so a recorded step is never redone. The
queue rows and ``finished_at`` are written together in one transaction: a round either
has its whole queue or none.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from napari_lesion_diffkd.core.store.records import dumps, loads
from napari_lesion_diffkd.core.store.schema import now
from napari_lesion_diffkd.core.tasks import TaskContext, TaskResult

if TYPE_CHECKING:
    from napari_lesion_diffkd.core.data.datasets import ImageRecord as DataImage
    from napari_lesion_diffkd.core.store.project import ProjectStore
    from napari_lesion_diffkd.core.store.records import ImageRecord, LabelVersion, ModelRecord


@dataclass(frozen=True)
class LoopRound:
    """A row of ``loop_rounds``. ``steps``: step name -> its record (counts, model tags,
    seconds); ``finished_at`` is None until the round's queue is stored."""

    round: int
    job_id: int
    strategy: str
    steps: dict[str, Any]
    created_at: str
    finished_at: str | None


@dataclass(frozen=True)
class QueueEntry:
    """One place in a round's annotation queue (position 0 = annotate first)."""

    round: int
    position: int
    image_id: int
    image_name: str
    score: float | None


def _round(row: Any) -> LoopRound:
    return LoopRound(round=row["round"], job_id=row["job_id"], strategy=row["strategy"],
                     steps=loads(row["steps"], {}), created_at=row["created_at"],
                     finished_at=row["finished_at"])


def start_round(store: ProjectStore, job_id: int, strategy: str) -> LoopRound:
    """The round of job ``job_id``: its existing row (a re-run), else a new one numbered
    1 + the largest round so far (taken under the write lock, so two jobs cannot share a
    number)."""
    with store.write() as conn:
        row = conn.execute("SELECT round FROM loop_rounds WHERE job_id = ?",
                           (job_id,)).fetchone()
        if row is None:
            top = conn.execute("SELECT MAX(round) FROM loop_rounds").fetchone()[0]
            conn.execute("INSERT INTO loop_rounds (round, job_id, strategy, steps, created_at)"
                         " VALUES (?, ?, ?, '{}', ?)", (int(top or 0) + 1, job_id, strategy,
                                                         now()))
    found = loop_round_of(store, job_id)
    assert found is not None
    return found


def loop_round_of(store: ProjectStore, job_id: int) -> LoopRound | None:
    """The round run by job ``job_id``, or None."""
    row = store.conn.execute("SELECT * FROM loop_rounds WHERE job_id = ?",
                             (job_id,)).fetchone()
    return None if row is None else _round(row)


def loop_rounds(store: ProjectStore) -> list[LoopRound]:
    """Every round, oldest first."""
    return [_round(r) for r in store.conn.execute("SELECT * FROM loop_rounds ORDER BY round")]


def record_step(store: ProjectStore, round_no: int, name: str, record: dict[str, Any]) -> None:
    """Mark step ``name`` of round ``round_no`` finished with ``record`` (JSON-able)."""
    with store.write() as conn:
        steps = loads(conn.execute("SELECT steps FROM loop_rounds WHERE round = ?",
                                   (round_no,)).fetchone()[0], {})
        steps[name] = record
        conn.execute("UPDATE loop_rounds SET steps = ? WHERE round = ?",
                     (dumps(steps), round_no))


def finish_round(store: ProjectStore, round_no: int,
                 entries: Sequence[tuple[int, float | None]], name: str,
                 record: dict[str, Any]) -> None:
    """Store the round's queue (``(image id, score)`` in annotation order), step ``name``'s
    record and ``finished_at``, all in one transaction (replacing an earlier queue of this
    round, if any)."""
    with store.write() as conn:
        steps = loads(conn.execute("SELECT steps FROM loop_rounds WHERE round = ?",
                                   (round_no,)).fetchone()[0], {})
        steps[name] = record
        conn.execute("DELETE FROM annotation_queue WHERE round = ?", (round_no,))
        conn.executemany(
            "INSERT INTO annotation_queue (round, position, image_id, score) "
            "VALUES (?, ?, ?, ?)",
            [(round_no, i, image_id, score) for i, (image_id, score) in enumerate(entries)])
        conn.execute("UPDATE loop_rounds SET steps = ?, finished_at = ? WHERE round = ?",
                     (dumps(steps), now(), round_no))


def annotation_queue(store: ProjectStore, round_no: int | None = None,
                     unlabelled_only: bool = False) -> list[QueueEntry]:
    """A round's queue in annotation order (default: the newest finished round; empty when
    there is none). ``unlabelled_only`` drops images that got a human label since."""
    from napari_lesion_diffkd.core.store.records import HUMAN_KINDS

    if round_no is None:
        top = store.conn.execute("SELECT MAX(round) FROM loop_rounds "
                                 "WHERE finished_at IS NOT NULL").fetchone()[0]
        if top is None:
            return []
        round_no = int(top)
    sql = ("SELECT q.*, i.name FROM annotation_queue q JOIN images i ON i.id = q.image_id "
           "WHERE q.round = ?")
    if unlabelled_only:
        sql += (" AND q.image_id NOT IN (SELECT image_id FROM label_versions "
                f"WHERE kind IN {HUMAN_KINDS!r})")
    rows = store.conn.execute(sql + " ORDER BY q.position", (round_no,)).fetchall()
    return [QueueEntry(round=r["round"], position=r["position"], image_id=r["image_id"],
                       image_name=r["name"], score=r["score"]) for r in rows]


# --------------------------------------------------------------------- training data


def write_dataset(store: ProjectStore, folder: Path,
                  items: Iterable[tuple[ImageRecord, LabelVersion]]) -> int:
    """Write ``(image, label version)`` pairs as a plain dataset folder (``images/``
    symlinks, ``masks/<name>.png`` {0, 255}, ``metadata.csv`` with groups) once: a folder
    completed earlier (marker file) is kept as it is, so a resumed run trains on the very
    same data. 3D images are left out (the trainer is 2D). Returns the number of pairs."""
    import shutil

    from napari_lesion_diffkd.core.data.readers import path_suffix
    from napari_lesion_diffkd.core.data.writers import atomic_write, write_mask_png
    from napari_lesion_diffkd.core.store.names import child_file
    from napari_lesion_diffkd.core.store.transfer import _place_image
    from napari_lesion_diffkd.core.tasks.train import DONE_MARKER

    if (folder / DONE_MARKER).is_file():
        return len(list((folder / "masks").glob("*.png")))
    shutil.rmtree(folder, ignore_errors=True)  # an earlier attempt cut short
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "group"])
    count = 0
    for image, version in items:
        if len(image.shape) != 2:
            continue
        # child_file: a stored name is checked on entry and migrated, and the destination is
        # checked again here so that no name can ever write outside the round's folder.
        write_mask_png(child_file(folder / "masks", f"{image.name}.png", root=folder),
                       store.read_label(version))
        _place_image(image.path, child_file(folder / "images",
                                            f"{image.name}{path_suffix(image.path)}", root=folder),
                     link=True)
        writer.writerow([image.name, image.group or image.name])
        count += 1

    def _write_csv(fh: BinaryIO) -> None:
        fh.write(buffer.getvalue().encode())

    atomic_write(folder / "metadata.csv", _write_csv)
    (folder / DONE_MARKER).write_text("")
    return count


def teacher_only_records(folder: Path, images: Sequence[ImageRecord]) -> list[DataImage]:
    """Unlabelled project images as the trainer's label-free records, grouped the way
    :func:`core.data.datasets.scan_pairs` groups the pairs of ``folder`` (``<folder
    name>/<group>``), so that the trainer can leave out images of validation groups."""
    from napari_lesion_diffkd.core.data.datasets import ImageRecord as DataImage

    return [DataImage(image.name, f"{folder.name}/{image.group or image.name}", folder.name,
                      image.path) for image in images if len(image.shape) == 2]


# --------------------------------------------------------------------- training step


def registered_from(store: ProjectStore, run_dir: Path) -> ModelRecord | None:
    """The project model whose bundle folder is ``run_dir``, if one was registered."""
    target = run_dir.resolve()
    found = [m for m in store.models() if m.path.resolve() == target]
    return found[-1] if found else None


def train_step(ctx: TaskContext, unlabelled: Sequence[DataImage] = ()) -> TaskResult:
    """A ``train`` / ``distill`` job's work (:func:`tasks.train.run_train`: config snapshot,
    data exported once, resume from ``run/checkpoint.pt``) with two additions for the loop:

    * ``unlabelled``: label-free images for a ``trajectory`` student (the teacher's masks
      are their only target); those of validation groups are left out here, as the
      trainer would, so that none left is not an error;
    * idempotent registration: a model already registered from this ``run/`` folder (the
      step was cut short after registering) is returned instead of training again.

    Returns ``{"model": "name@vN", "init": the starting bundle or None, "steps",
    "best_val_dice", "n_train", "n_unlabelled"}``.
    """
    from napari_lesion_diffkd.core.data.datasets import group_split
    from napari_lesion_diffkd.core.jobs import JobEvent
    from napari_lesion_diffkd.core.store.errors import InvalidInputError
    from napari_lesion_diffkd.core.tasks.common import apply_threads
    from napari_lesion_diffkd.core.tasks.train import (
        CONFIG_SNAPSHOT,
        _data_folders,
        _load_config,
    )
    from napari_lesion_diffkd.core.training.cli_driver import collect_records
    from napari_lesion_diffkd.core.training.trainer import CHECKPOINT_NAME, train

    run_dir = ctx.work_dir / "run"
    known = registered_from(ctx.store, run_dir)
    if known is not None:  # the snapshot exists: it was written before training began
        snapshot = json.loads((ctx.work_dir / CONFIG_SNAPSHOT).read_text())
        yield JobEvent("log", message=f"{known.tag} was registered by an earlier attempt")
        return {"model": known.tag, "init": snapshot.get("init_bundle"), "reused": True,
                "best_val_dice": known.metrics.get("model_resolution_dice")}
    apply_threads(ctx.job.config)
    config = _load_config(ctx)
    folders = _data_folders(ctx)
    try:
        records = collect_records(",".join(str(f) for f in folders))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"training data: {exc}") from exc
    if unlabelled and config.objective != "trajectory":
        yield JobEvent("log", message=f"{len(unlabelled)} unlabelled images not used: the "
                                      f"{config.objective!r} objective needs labels")
        unlabelled = ()
    _, val = group_split(records, config.val_fraction, config.split_seed)
    val_groups = {r.group for r in val}
    kept = [u for u in unlabelled if u.group not in val_groups]
    resume = (run_dir / CHECKPOINT_NAME).is_file()
    yield JobEvent("log", message=f"{'resuming' if resume else 'training'} {config.name} "
                                  f"from {config.init_bundle or 'scratch'} on {len(records)} "
                                  f"pairs + {len(kept)} teacher-only images")
    provenance = {"project": str(ctx.store.root), "job_id": ctx.job.id,
                  "job_type": "loop-round", "data": [str(f) for f in folders]}
    summary = yield from train(config, records, run_dir, device=ctx.device, resume=resume,
                               provenance=provenance, unlabelled=kept)
    model = ctx.store.register_model(
        config.name, run_dir, role=config.role, job_id=ctx.job.id,
        metrics={"model_resolution_dice": summary.get("best_val_dice")})
    yield JobEvent("log", message=f"registered {model.tag}")
    return {"model": model.tag, "init": config.init_bundle, "steps": summary.get("steps"),
            "best_val_dice": summary.get("best_val_dice"),
            "n_train": len(records) - len(summary.get("val_records") or []),
            "n_unlabelled": len(kept)}
