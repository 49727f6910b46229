"""Plain, immutable views of the store's rows (what the API returns; no database handle)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Kinds a person produced or accepted; they take precedence in ``current_label``.
HUMAN_KINDS = ("human", "sam-assisted")


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys) for the database's JSON columns."""
    return json.dumps(obj, sort_keys=True, default=str)


def loads(text: str | None, default: Any = None) -> Any:
    """Parse a JSON column; ``default`` for NULL."""
    return default if text is None else json.loads(text)


def filtered_rows(conn: sqlite3.Connection, select: str,
                  filters: list[tuple[str, Any]], order_by: str) -> list[sqlite3.Row]:
    """Rows of ``select`` (``SELECT ... FROM table``) with ``column = ?`` for every filter
    whose value is not None, ordered by ``order_by``. Column names and ``order_by`` are the
    caller's constants, never user input; values are bound parameters."""
    clauses = [f"{column} = ?" for column, value in filters if value is not None]
    args = [value for _, value in filters if value is not None]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return conn.execute(f"{select}{where} ORDER BY {order_by}", args).fetchall()


@dataclass(frozen=True)
class ImageRecord:
    """An indexed image. ``shape`` is spatial, ``(Y, X)`` or ``(Z, Y, X)``; ``spacing`` in
    mm per spatial axis; ``path`` is absolute."""

    id: int
    name: str
    path: Path
    modality: str | None
    sha256: str
    shape: tuple[int, ...]
    channels: int
    spacing: tuple[float, ...]
    group: str | None
    added_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row, root: Path) -> ImageRecord:
        return cls(id=row["id"], name=row["name"], path=_absolute(row["path"], root),
                   modality=row["modality"], sha256=row["sha256"],
                   shape=tuple(loads(row["shape"])), channels=row["channels"],
                   spacing=tuple(loads(row["spacing"])), group=row["grp"],
                   added_at=row["added_at"])


@dataclass(frozen=True)
class LabelVersion:
    """One saved label mask; immutable once written. ``file`` is absolute; ``parent_id`` is
    the version this one superseded (the image's current label when it was saved)."""

    id: int
    image_id: int
    kind: str
    model_name: str | None
    model_version: str | None
    parent_id: int | None
    author: str | None
    created_at: str
    file: Path
    sha256: str
    note: str | None

    @property
    def is_human(self) -> bool:
        """True for kinds a person made or accepted (``human``, ``sam-assisted``)."""
        return self.kind in HUMAN_KINDS

    @classmethod
    def from_row(cls, row: sqlite3.Row, root: Path) -> LabelVersion:
        return cls(id=row["id"], image_id=row["image_id"], kind=row["kind"],
                   model_name=row["model_name"], model_version=row["model_version"],
                   parent_id=row["parent_id"], author=row["author"],
                   created_at=row["created_at"], file=root / row["file"],
                   sha256=row["sha256"], note=row["note"])


@dataclass(frozen=True)
class PredictionRecord:
    """Stored model outputs for one image. ``files`` maps ``samples`` / ``probability`` /
    ``uncertainty`` / ``consensus`` to absolute paths (see :meth:`read_prediction`)."""

    id: int
    image_id: int
    model_name: str
    model_version: str
    settings: dict[str, Any]
    settings_key: str
    files: dict[str, Path]
    scores: dict[str, float]
    job_id: int | None
    created_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row, root: Path) -> PredictionRecord:
        files = {k: root / row[f"{k}_file"]
                 for k in ("samples", "probability", "uncertainty", "consensus")
                 if row[f"{k}_file"]}
        return cls(id=row["id"], image_id=row["image_id"], model_name=row["model_name"],
                   model_version=row["model_version"], settings=loads(row["settings"], {}),
                   settings_key=row["settings_key"], files=files,
                   scores=loads(row["scores"], {}), job_id=row["job_id"],
                   created_at=row["created_at"])


@dataclass(frozen=True)
class ModelRecord:
    """A model version known to the project (e.g. produced by a training job)."""

    id: int
    name: str
    version: int
    path: Path
    role: str | None
    job_id: int | None
    metrics: dict[str, Any]
    created_at: str

    @property
    def tag(self) -> str:
        """``name@vN``, the form job configs use to pick a project model."""
        return f"{self.name}@v{self.version}"

    @classmethod
    def from_row(cls, row: sqlite3.Row, root: Path) -> ModelRecord:
        return cls(id=row["id"], name=row["name"], version=row["version"],
                   path=_absolute(row["path"], root), role=row["role"], job_id=row["job_id"],
                   metrics=loads(row["metrics"], {}), created_at=row["created_at"])


@dataclass(frozen=True)
class JobRecord:
    """A job row. ``status``: queued | running | done | failed | cancelled; ``progress`` in
    [0, 1]; ``checkpoints``: ``[{"step": int, "path": str}, ...]`` oldest first."""

    id: int
    type: str
    config: dict[str, Any]
    status: str
    heavy: bool
    device: str | None
    progress: float
    step: int
    total: int
    message: str
    log: str
    pid: int | None
    pid_token: str | None
    host: str | None
    checkpoints: list[dict[str, Any]]
    result: dict[str, Any] | None
    error: str | None
    resumable: bool
    cancel_requested: bool
    attempts: int
    created_at: str
    started_at: str | None
    updated_at: str | None
    finished_at: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        return cls(id=row["id"], type=row["type"], config=loads(row["config"], {}),
                   status=row["status"], heavy=bool(row["heavy"]), device=row["device"],
                   progress=row["progress"], step=row["step"], total=row["total"],
                   message=row["message"], log=row["log"], pid=row["pid"],
                   pid_token=row["pid_token"], host=row["host"],
                   checkpoints=loads(row["checkpoints"], []), result=loads(row["result"]),
                   error=row["error"], resumable=bool(row["resumable"]),
                   cancel_requested=bool(row["cancel_requested"]), attempts=row["attempts"],
                   created_at=row["created_at"], started_at=row["started_at"],
                   updated_at=row["updated_at"], finished_at=row["finished_at"])


def _absolute(path: str, root: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p
