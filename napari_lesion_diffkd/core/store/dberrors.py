"""SQLite failures as store errors with one clear line, instead of raw ``sqlite3`` tracebacks.

What the outside world can do to a project database, and what the caller then sees:

=====================================  =========================  =======================
SQLite error (``sqlite_errorname``)    cause                      raised as
=====================================  =========================  =======================
``SQLITE_CORRUPT``, ``SQLITE_NOTADB``  damaged / foreign file     :class:`StoreCorruptError`
``SQLITE_FULL``                        full disk                  :class:`DiskFullError`
``SQLITE_READONLY``                    read-only file or mount    :class:`StoreReadOnlyError`
``SQLITE_CANTOPEN``                    missing folder, perms      :class:`StoreError`
``SQLITE_IOERR``                       disk I/O error             :class:`StoreWriteError`
``SQLITE_BUSY``, ``SQLITE_LOCKED``     lock held past the timeout :class:`StoreWriteError`
=====================================  =========================  =======================

Other SQLite errors (constraint violations, SQL mistakes) are programming or input errors
and pass through unchanged (``ProjectStore.write`` still reports them as a failed write).

:class:`StoreConnection` applies this to every statement and fetch of the store's
connection, so callers (CLI commands, the job runner, the GUI) only need to catch
:class:`StoreError`.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any

from napari_lesion_diffkd.core.store.errors import (
    DiskFullError,
    StoreCorruptError,
    StoreError,
    StoreReadOnlyError,
    StoreWriteError,
)

#: Message fragments for errors built without an error code (older SQLite, test doubles).
_BY_TEXT = (
    ("malformed", "SQLITE_CORRUPT"),
    ("not a database", "SQLITE_NOTADB"),
    ("disk is full", "SQLITE_FULL"),
    ("readonly database", "SQLITE_READONLY"),
    ("read-only", "SQLITE_READONLY"),
    ("unable to open", "SQLITE_CANTOPEN"),
    ("disk i/o error", "SQLITE_IOERR"),
    ("database is locked", "SQLITE_BUSY"),
)


def error_name(exc: sqlite3.Error) -> str:
    """The primary SQLite error name (``SQLITE_FULL`` ...) of ``exc``, from its code when
    set, else guessed from its text; ``""`` when unknown."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    if name:
        # Extended codes (SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED) -> the primary one.
        for primary in ("SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_CORRUPT",
                        "SQLITE_BUSY", "SQLITE_LOCKED"):
            if name.startswith(primary):
                return primary
        return name
    text = str(exc).lower()
    return next((code for fragment, code in _BY_TEXT if fragment in text), "")


def translate(exc: BaseException, db_path: Any) -> BaseException:
    """The store error for an environmental SQLite failure (see the module table), or
    ``exc`` itself when it is not one."""
    if isinstance(exc, StoreError) or not isinstance(exc, sqlite3.Error):
        return exc
    name = error_name(exc)
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return StoreCorruptError(f"{db_path}: the project database is damaged ({exc}); "
                                 "restore project.sqlite from a backup")
    if name == "SQLITE_FULL":
        return DiskFullError(f"disk full: {db_path}: the disk is full ({exc}); free some space "
                             "and retry")
    if name == "SQLITE_READONLY":
        return StoreReadOnlyError(f"{db_path}: the project database is read-only ({exc})")
    if name == "SQLITE_CANTOPEN":
        return StoreError(f"{db_path}: cannot open the project database ({exc}): check that "
                          "the folder exists and can be written")
    if name == "SQLITE_IOERR":
        return StoreWriteError(f"{db_path}: disk I/O error on the project database ({exc})")
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return StoreWriteError(f"{db_path}: the project database stayed locked by another "
                               f"process ({exc}); retry later")
    return exc


def is_disk_full(exc: BaseException | None) -> bool:
    """True for ENOSPC / EDQUOT, SQLite's "database or disk is full", or a
    :class:`DiskFullError`, also when it is the cause of ``exc``."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.Error) and error_name(exc) == "SQLITE_FULL":
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class StoreCursor(sqlite3.Cursor):
    """A cursor whose statements and fetches raise translated errors (see :func:`translate`)."""

    def _path(self) -> Any:
        return getattr(self.connection, "db_path", "project.sqlite")

    def execute(self, sql: str, parameters: Any = (), /) -> StoreCursor:  # type: ignore[override]
        try:
            super().execute(sql, parameters)
        except sqlite3.Error as exc:
            raise translate(exc, self._path()) from exc
        return self

    def executemany(self, sql: str, seq: Any, /) -> StoreCursor:  # type: ignore[override]
        try:
            super().executemany(sql, seq)
        except sqlite3.Error as exc:
            raise translate(exc, self._path()) from exc
        return self

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as exc:
            raise translate(exc, self._path()) from exc

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self._path()) from exc

    def fetchmany(self, size: int = 1) -> list[Any]:  # type: ignore[override]
        try:
            return super().fetchmany(size)
        except sqlite3.Error as exc:
            raise translate(exc, self._path()) from exc

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as exc:
            raise translate(exc, self._path()) from exc


class StoreConnection(sqlite3.Connection):
    """The store's connection class: ``execute`` goes through a :class:`StoreCursor`.
    ``db_path`` is set by :func:`schema.connect` for the messages."""

    db_path: Any = "project.sqlite"

    def cursor(self, factory: Any = StoreCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> StoreCursor:  # type: ignore[override]
        cursor: StoreCursor = self.cursor()
        return cursor.execute(sql, parameters)

    def executemany(self, sql: str, seq: Any, /) -> StoreCursor:  # type: ignore[override]
        cursor: StoreCursor = self.cursor()
        return cursor.executemany(sql, seq)
