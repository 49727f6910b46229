"""The project store: a folder with ``project.sqlite`` and the label/prediction files it indexes.

Layout::

    <project>/project.sqlite (+ -wal, -shm)   the index (see schema.py)
    <project>/labels/<ab>/<ab...>.png       label ids, (Y, X) 8/16-bit PNG
    <project>/labels/<ab>/<ab...>.nii.gz    label ids, (Z, Y, X) NIfTI with spacing
    <project>/predictions/<ab>/<ab...>/     samples.npy, probability.npy, ...
    <project>/jobs/<job id>/                a job's run folder, logs, exported data

File names are 16 random hex digits (sharded by the first two), independent of image ids,
so a file can be written before its row exists and outside the write lock.

Images stay where they are and are referenced by path and SHA-256; files *inside* the
project are stored by relative path, so the folder can be moved as a whole.

Write protocol (every save): validate the input, write the new file under a fresh name
(atomic: temp + fsync + ``os.replace``), then insert the row in one ``BEGIN IMMEDIATE``
transaction. A failure before the commit deletes the new file and leaves the database as it
was; a crash between file and commit leaves only an unreferenced file (``check`` lists it,
``cleanup`` removes it). Referenced files are never rewritten, so an earlier label can never
be damaged by a later save.

Label versions and ``current_label``
    Saving never overwrites: each save adds a version whose ``parent_id`` is the version it
    supersedes (by default the image's current label at the time of the save). The current
    label of an image is, in this order:

    1. the newest version of a *human* kind (``human`` or ``sam-assisted``: a person drew
       or accepted it), else
    2. the newest version of any other kind (``model``, ``pseudo``),

    where "newest" means the largest version id (ids increase with every commit; wall
    clocks can go backwards). So a pseudo label produced after a human label never hides
    it. ``None`` if the image has no label.

One :class:`ProjectStore` holds one SQLite connection: use it from one thread; every process
(GUI, job runner) opens its own.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_lesion_diffkd.core.store import files
from napari_lesion_diffkd.core.store.dberrors import error_name
from napari_lesion_diffkd.core.store.errors import (
    DiskFullError,
    InvalidInputError,
    StoreCorruptError,
    StoreError,
    StoreWriteError,
)
from napari_lesion_diffkd.core.store.names import check_image_name
from napari_lesion_diffkd.core.store.records import (
    HUMAN_KINDS,
    ImageRecord,
    LabelVersion,
    dumps,
    filtered_rows,
)
from napari_lesion_diffkd.core.store.results import ResultsMixin
from napari_lesion_diffkd.core.store.schema import (
    DB_NAME,
    LABEL_KINDS,
    connect,
    database_file_problem,
    migrate,
    now,
)
from napari_lesion_diffkd.core.store.validate import ImageInfo, check_labels, inspect_image

if TYPE_CHECKING:
    from typing_extensions import Self

    from napari_lesion_diffkd.core.data.readers import LoadedImage
    from napari_lesion_diffkd.core.store.maintenance import CheckReport
    from napari_lesion_diffkd.core.store.queue import JobQueue

ImageRef = int | str | ImageRecord

_HUMAN_FIRST = f"(kind IN {HUMAN_KINDS!r}) DESC, id DESC"


def write_error(exc: BaseException, what: str) -> StoreWriteError:
    """A :class:`StoreWriteError` naming ``what``; for ENOSPC / SQLite's "database or disk
    is full" a :class:`DiskFullError` whose message starts with ``disk full:``."""
    if isinstance(exc, StoreWriteError):
        return exc
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            isinstance(exc, sqlite3.Error) and error_name(exc) == "SQLITE_FULL"):
        return DiskFullError(f"disk full: {what}: the disk is full ({exc}); nothing was changed")
    return StoreWriteError(f"{what}: {type(exc).__name__}: {exc}; nothing was changed")


def _create_database(root: Path) -> None:
    """Create ``root/project.sqlite`` with the current schema, atomically: the schema is
    built in a temporary file that is then hard-linked to the final name (which fails if
    another process created it meanwhile: theirs is kept). So no process ever sees a
    half-made (e.g. 0-byte) project database, and none is ever made over an existing file.
    """
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{DB_NAME}.{files.unique_name()}.tmp"
    try:
        conn = connect(tmp)
        try:
            migrate(conn)
        finally:
            conn.close()  # checkpoints the WAL into the file and removes it
        try:
            os.link(tmp, root / DB_NAME)
        except FileExistsError:
            pass  # created by another process meanwhile
        except OSError:  # no hard links here: a rename (tiny race, same result)
            if not os.path.lexists(root / DB_NAME):
                os.replace(tmp, root / DB_NAME)
    except sqlite3.Error as exc:
        raise write_error(exc, f"creating {root / DB_NAME}") from exc
    except OSError as exc:
        raise write_error(exc, f"creating {root / DB_NAME}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


class ProjectStore(ResultsMixin):
    """An annotation project on disk (see the module docstring).

    Args:
        path: the project folder, or its ``project.sqlite``.
        create: create the folder and database if missing (else a missing project is an
            error). An existing database file is never re-created, whatever its state.
        readonly: open the database read-only (SQLite ``mode=ro``): every write raises
            :class:`StoreReadOnlyError`; for inspection (``check``) of a store on a
            read-only disk.

    Use as a context manager or call :meth:`close`.

    Raises:
        StoreError: no project there (without ``create``), or it cannot be opened.
        StoreCorruptError: ``project.sqlite`` is empty, not SQLite, not a project database,
            or damaged; nothing was written to it.
    """

    def __init__(self, path: str | os.PathLike, create: bool = False,
                 readonly: bool = False):
        p = Path(path).expanduser()
        if p.name == DB_NAME:
            p = p.parent
        self.root = p.resolve()
        self.db_path = self.root / DB_NAME
        if not os.path.lexists(self.db_path):
            if not create or readonly:
                raise StoreError(f"{self.root}: not a project (no {DB_NAME}); create it first")
            _create_database(self.root)
        problem = database_file_problem(self.db_path)
        if problem is not None:
            raise StoreCorruptError(
                f"{self.db_path} {problem}: not a project database; nothing was changed. "
                "Restore it from a backup (or move it away to start a new project)")
        self._conn = connect(self.db_path, readonly=readonly, require_schema=True)
        try:
            self.schema_version = migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise
        self.readonly = readonly
        self._jobs: JobQueue | None = None

    @classmethod
    def create(cls, path: str | os.PathLike) -> ProjectStore:
        """Open the project at ``path``, creating it if needed."""
        return cls(path, create=True)

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- transactions

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, for reads. Writes go through :meth:`write`."""
        return self._conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: takes the write lock up front, so a
        read-then-write inside it cannot race another process). Rolled back on any error;
        SQLite errors surface as :class:`StoreWriteError`."""
        if self._conn.in_transaction:
            raise RuntimeError("ProjectStore.write() does not nest")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise write_error(exc, f"{self.db_path}: cannot start a write") from exc
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException as exc:
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except StoreError:
                    pass  # e.g. the disk is full: the first error is the one to report
            if isinstance(exc, sqlite3.Error):
                raise write_error(exc, f"{self.db_path}: write failed") from exc
            raise

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the project folder when inside it, else absolute (text)."""
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    @property
    def jobs(self) -> JobQueue:
        """The job queue of this project (see :mod:`.queue`)."""
        if self._jobs is None:
            from napari_lesion_diffkd.core.store.queue import JobQueue

            self._jobs = JobQueue(self)
        return self._jobs

    def check(self, verify_hashes: bool = True) -> CheckReport:
        """Database integrity + every indexed file present and unchanged; lists leftovers
        (see :mod:`.maintenance`)."""
        from napari_lesion_diffkd.core.store.maintenance import check_store

        return check_store(self, verify_hashes)

    def cleanup(self, min_age_s: float = 3600.0, force: bool = False) -> list[Path]:
        """Delete leftover unreferenced files older than ``min_age_s``; returns them.
        Refused (:class:`UnhealthyStoreError`) unless :meth:`check` finds the store
        healthy (see :func:`maintenance.cleanup_store`)."""
        from napari_lesion_diffkd.core.store.maintenance import cleanup_store

        return cleanup_store(self, min_age_s, force=force)

    # ----------------------------------------------------------------- images

    def add_image(self, path: str | os.PathLike, name: str | None = None,
                  modality: str | None = None, group: str | None = None) -> ImageRecord:
        """Index an image file (or DICOM series folder) after reading it fully.

        Args:
            path: the image; it is referenced, not copied.
            name: unique id in the project (default: the file stem, ``.nii.gz`` stripped);
                one safe file-name component (``names.py``: no separators, ``:``, control
                characters or leading ``.``, at most 200 bytes), since exports use it.
            modality: e.g. ``"dermoscopy"`` (default: the file's DICOM modality, if any).
            group: patient / case for group-aware splits (default: the name).

        Returns:
            The new record, or the existing one when the same name and content are present.

        Raises:
            InvalidInputError: missing / corrupt image, or ``name`` already used by an image
                with different content.
        """
        info = inspect_image(path, modality)
        with self.write() as conn:
            image_id = self.insert_image(conn, info, name, group)
        return self.image(image_id)

    def insert_image(self, conn: sqlite3.Connection, info: ImageInfo, name: str | None = None,
                     group: str | None = None) -> int:
        """Insert an inspected image inside an open :meth:`write` transaction; returns its id
        (the existing id for the same name and content; :class:`InvalidInputError` for the
        same name with other content)."""
        from napari_lesion_diffkd.core.data.readers import output_stem

        name = check_image_name(name or output_stem(info.path))  # it becomes a file name
        row = conn.execute("SELECT id, sha256, path FROM images WHERE name = ?",
                           (name,)).fetchone()
        if row is not None:
            if row["sha256"] != info.sha256:
                raise InvalidInputError(
                    f"image name {name!r} is already used by {row['path']} with different "
                    f"content; give {info.path} another name")
            return int(row["id"])
        cur = conn.execute(
            "INSERT INTO images (name, path, modality, sha256, shape, channels, spacing, "
            "grp, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, self.relative(info.path), info.modality, info.sha256,
             dumps(list(info.shape)), info.channels, dumps(list(info.spacing)),
             group or name, now()))
        return int(cur.lastrowid or 0)

    def image(self, ref: ImageRef) -> ImageRecord:
        """The image with this id, name or record.

        Raises:
            InvalidInputError: no such image.
        """
        if isinstance(ref, ImageRecord):
            ref = ref.id
        if isinstance(ref, np.integer):
            ref = int(ref)
        column = "id" if isinstance(ref, int) else "name"
        row = self._conn.execute(f"SELECT * FROM images WHERE {column} = ?", (ref,)).fetchone()
        if row is None:
            raise InvalidInputError(f"no image {ref!r} in the project {self.root}")
        return ImageRecord.from_row(row, self.root)

    def images(self) -> list[ImageRecord]:
        """All images, in insertion order."""
        rows = self._conn.execute("SELECT * FROM images ORDER BY id").fetchall()
        return [ImageRecord.from_row(r, self.root) for r in rows]

    def unlabelled_images(self) -> list[ImageRecord]:
        """Images without a human (``human`` / ``sam-assisted``) label, in insertion order."""
        rows = self._conn.execute(
            "SELECT * FROM images WHERE id NOT IN (SELECT image_id FROM label_versions "
            f"WHERE kind IN {HUMAN_KINDS!r}) ORDER BY id").fetchall()
        return [ImageRecord.from_row(r, self.root) for r in rows]

    def read_image(self, ref: ImageRef, verify: bool = False) -> LoadedImage:
        """Load the image's pixels (see :func:`core.data.readers.read_image`).

        Args:
            verify: also check the file still has the SHA-256 recorded when it was added.

        Raises:
            InvalidInputError: the file is gone, unreadable or (``verify``) has changed.
        """
        from napari_lesion_diffkd.core.data.readers import ImageReadError, read_image

        record = self.image(ref)
        if not record.path.exists():
            raise InvalidInputError(f"image {record.name!r}: {record.path} was moved or deleted")
        if verify and files.sha256_file(record.path) != record.sha256:
            raise InvalidInputError(f"image {record.name!r}: {record.path} changed since it "
                                    "was added (SHA-256 differs)")
        try:
            return read_image(record.path)
        except ImageReadError as exc:
            raise InvalidInputError(f"image {record.name!r}: {exc}") from exc

    # ----------------------------------------------------------------- labels

    def save_label(self, image: ImageRef, labels: np.ndarray, kind: str = "human",
                   author: str | None = None, model_name: str | None = None,
                   model_version: str | None = None, parent: int | None = None,
                   note: str | None = None) -> LabelVersion:
        """Save a new label version for ``image`` (never overwrites an earlier one).

        Args:
            image: id, name or record.
            labels: ``(Y, X)`` / ``(Z, Y, X)`` bool or integer label ids in the image's own
                pixel frame (0 = background; a binary lesion mask is {0, 1} or bool).
            kind: ``human`` | ``model`` | ``pseudo`` | ``sam-assisted``.
            author: who drew it (human kinds) or the job that made it.
            model_name, model_version: the model behind ``model`` / ``pseudo`` /
                ``sam-assisted`` labels.
            parent: the version this one supersedes (default: the current label).
            note: free text.

        Returns:
            The new version.

        Raises:
            InvalidInputError: unknown image or kind, wrong shape / dtype / values, or a
                parent from another image. Nothing is written.
            StoreWriteError: the file or the row could not be written (e.g. disk full).
                The previous versions are untouched and no row or file is left.
        """
        if kind not in LABEL_KINDS:
            raise InvalidInputError(f"unknown label kind {kind!r}; choose one of {LABEL_KINDS}")
        record = self.image(image)
        arr = check_labels(labels, record.shape, f"label for image {record.name!r}")
        rel, digest = self.write_label_file(arr, record.spacing, record.name)
        try:
            with self.write() as conn:
                version_id = self.insert_label(conn, record.id, rel, digest, kind=kind,
                                               author=author, model_name=model_name,
                                               model_version=model_version, parent=parent,
                                               note=note)
        except BaseException:
            (self.root / rel).unlink(missing_ok=True)  # no row points at it
            raise
        return self.label(version_id)

    def write_label_file(self, labels: np.ndarray, spacing: tuple[float, ...],
                         name: str) -> tuple[str, str]:
        """Write checked label ids (see :func:`validate.check_labels`) of image ``name`` to
        a fresh file; returns (path relative to the project, SHA-256). No lock is held.

        Raises:
            StoreWriteError: the file could not be written (nothing is left behind).
        """
        token = files.unique_name()
        rel = f"labels/{token[:2]}/{token}{files.label_suffix(labels.ndim)}"
        path = self.root / rel
        try:
            files.write_label_file(path, labels, spacing)
            return rel, files.sha256_file(path)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise write_error(exc, f"saving a label for {name!r}") from exc

    def insert_label(self, conn: sqlite3.Connection, image_id: int, rel: str, digest: str,
                     kind: str = "human", author: str | None = None,
                     model_name: str | None = None, model_version: str | None = None,
                     parent: int | None = None, note: str | None = None) -> int:
        """Insert a label row for a file written by :meth:`write_label_file`, inside an open
        :meth:`write` transaction; ``parent`` defaults to the current label. Returns the id."""
        if parent is None:
            current = self._current_row(image_id)
            parent = None if current is None else int(current["id"])
        else:
            owner = conn.execute("SELECT image_id FROM label_versions WHERE id = ?",
                                 (parent,)).fetchone()
            if owner is None or owner[0] != image_id:
                raise InvalidInputError(f"parent label {parent} is not a label of image "
                                        f"{image_id}")
        cur = conn.execute(
            "INSERT INTO label_versions (image_id, kind, model_name, model_version, "
            "parent_id, author, created_at, file, sha256, note) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image_id, kind, model_name, model_version, parent, author, now(), rel, digest,
             note))
        return int(cur.lastrowid or 0)

    def label(self, version_id: int) -> LabelVersion:
        """One label version by id (:class:`InvalidInputError` if unknown)."""
        row = self._conn.execute("SELECT * FROM label_versions WHERE id = ?",
                                 (version_id,)).fetchone()
        if row is None:
            raise InvalidInputError(f"no label version {version_id} in the project")
        return LabelVersion.from_row(row, self.root)

    def label_versions(self, image: ImageRef | None = None,
                       kind: str | None = None) -> list[LabelVersion]:
        """Versions of one image (or all), optionally of one kind, oldest first."""
        rows = filtered_rows(self._conn, "SELECT * FROM label_versions", [
            ("image_id", None if image is None else self.image(image).id),
            ("kind", kind)], "id")
        return [LabelVersion.from_row(r, self.root) for r in rows]

    def current_label(self, image: ImageRef) -> LabelVersion | None:
        """The image's current label by the rule of the module docstring (newest human
        kind, else newest other kind), or None."""
        row = self._current_row(self.image(image).id)
        return None if row is None else LabelVersion.from_row(row, self.root)

    def _current_row(self, image_id: int) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(
            f"SELECT * FROM label_versions WHERE image_id = ? ORDER BY {_HUMAN_FIRST} LIMIT 1",
            (image_id,)).fetchone()
        return row

    def read_label(self, version: int | LabelVersion, verify: bool = True) -> np.ndarray:
        """The label ids of a version: ``(Y, X)`` or ``(Z, Y, X)`` uint8 / uint16.

        Raises:
            StoreError: the file is missing or (``verify``) its SHA-256 differs from the
                one recorded at save time.
        """
        record = version if isinstance(version, LabelVersion) else self.label(version)
        if not record.file.is_file():
            raise StoreError(f"label version {record.id}: file {record.file} is missing")
        if verify and files.sha256_file(record.file) != record.sha256:
            raise StoreError(f"label version {record.id}: file {record.file} is damaged "
                             "(SHA-256 differs from the one recorded at save time)")
        return files.read_label_file(record.file)
