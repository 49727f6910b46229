"""Read a running job's training curve as it grows (no Qt).

The trainer appends one JSON object per line to ``<project>/jobs/<id>/run/train_log.jsonl``
(``core.training.trainer``): ``{"step", "loss", "lr", "seconds"}`` every 10 steps and
``{"step", "val_dice", "val_hd95", ...}`` after each validation (the SAM trainer,
``core.sam.training``, logs ``val_score`` instead: read with ``val_key="val_score"``).
:class:`TrainLogTail` reads
only the bytes added since its last call and only complete lines, so polling it twice a
second costs next to nothing and never sees half a line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: ``core.training.trainer.LOG_NAME``, repeated so the GUI thread need not import the trainer
#: (and torch with it) to find the file; a test checks the two agree.
LOG_NAME = "train_log.jsonl"


class TrainLogTail:
    """Incremental reader of one ``train_log.jsonl``.

    Attributes:
        loss: ``[(step, loss), ...]`` (the trainer's running EMA of the loss).
        val_dice: ``[(step, value), ...]`` of the validation key ``val_key`` (``val_dice``
            unless given).
    """

    def __init__(self, path: str | os.PathLike, val_key: str = "val_dice") -> None:
        self.path = Path(path)
        self.val_key = val_key
        self.loss: list[tuple[int, float]] = []
        self.val_dice: list[tuple[int, float]] = []
        self._offset = 0
        self._partial = b""

    def read_new(self) -> bool:
        """Read what was appended since the last call; True when new points arrived."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return False
        if not chunk:
            return False
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next call
        before = len(self.loss) + len(self.val_dice)
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "loss" in entry:
                self.loss.append((int(entry["step"]), float(entry["loss"])))
            if self.val_key in entry:
                self.val_dice.append((int(entry["step"]), float(entry[self.val_key])))
        return len(self.loss) + len(self.val_dice) > before


def train_log_path(project: str | os.PathLike, job_id: int) -> Path:
    """Where a training job's trainer writes its log (``jobs/<id>/run/train_log.jsonl``)."""
    from napari_lesion_diffkd.core.job_runner import job_dir

    return job_dir(project, job_id) / "run" / LOG_NAME


def log_tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a job's log text."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
