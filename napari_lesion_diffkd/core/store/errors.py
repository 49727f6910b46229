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
