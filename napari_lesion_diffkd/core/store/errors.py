"""Exceptions of the project store: every refusal says what is wrong and changed nothing."""

from __future__ import annotations


class StoreError(Exception):
    """The project store refused an operation; the message names the file or row and why.

    A :class:`StoreError` is raised *before* anything is committed: the database and the
    files it indexes are exactly as they were before the call.
    """


class InvalidInputError(StoreError, ValueError):
    """Bad input: a missing or corrupt image, a mask of the wrong size, dtype or values."""


class StoreWriteError(StoreError, OSError):
    """Writing a file or a row failed (full disk, permissions, a locked database ...)."""


class JobStateError(StoreError):
    """A job cannot do what was asked in its current state (e.g. run a job that is done)."""


class StoreCorruptError(StoreError):
    """The project database is not usable: empty, not an SQLite file, not this package's
    schema, or damaged (``database disk image is malformed``). Nothing was changed; restore
    ``project.sqlite`` from a backup."""


class StoreReadOnlyError(StoreWriteError):
    """The database (or its folder) cannot be written: read-only disk, mount or file."""


class DiskFullError(StoreWriteError):
    """A write failed because the disk (or the database's size limit) is full. The message
    starts with ``disk full:``."""


class UnhealthyStoreError(StoreError):
    """A maintenance operation (``cleanup``) was refused because ``check`` found damage."""
