"""Saving training checkpoints (``checkpoint.pt``) so that no failure leaves a partial file.

:func:`save_checkpoint` writes through :func:`core.data.writers.atomic_write`: the payload
goes to a hidden temporary file in the same folder, is fsynced, then replaces the
checkpoint. A failure (full disk, kill) leaves the previous checkpoint as it was; on an
exception the temporary file is removed, and a full disk is reported as an ``OSError``
with ``errno.ENOSPC`` whose message starts with ``disk full:`` (torch itself wraps it into
an unhelpful ``RuntimeError: ... unexpected pos``). A SIGKILL can leave only a hidden
``.checkpoint.pt.<hex>.tmp``: ignored by loading, removed by the next save (a run folder's
checkpoint has one writer, the run itself).

The loading side is :mod:`core.checkpoint_load`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, BinaryIO

_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full_cause(exc: BaseException | None) -> OSError | None:
    """The ENOSPC / EDQUOT ``OSError`` behind ``exc`` (itself, its cause or context)."""
    for _ in range(10):
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (see the module docstring).

    Also removes the ``<stem>.tmp`` that earlier versions wrote next to the checkpoint (a
    kill could leave it behind).

    Raises:
        OSError: the write failed; ``ENOSPC`` with a ``disk full: ...`` message when the
            disk is full. The previous checkpoint and no temporary file remain.
    """
    import torch

    from napari_lesion_diffkd.core.data.writers import atomic_write

    dest = Path(path)
    for stale in dest.parent.glob(f".{dest.name}.*.tmp"):  # left by a killed save
        stale.unlink(missing_ok=True)

    def _write(fh: BinaryIO) -> None:
        torch.save(payload, fh)

    try:
        atomic_write(dest, _write)
    except Exception as exc:
        full = _disk_full_cause(exc)
        if full is not None:
            raise OSError(full.errno, f"disk full: saving the checkpoint {dest} failed "
                          f"({os.strerror(full.errno)}); the previous checkpoint is kept"
                          ) from exc
        raise
    dest.with_suffix(".tmp").unlink(missing_ok=True)  # the old, fixed temporary name
    return dest
