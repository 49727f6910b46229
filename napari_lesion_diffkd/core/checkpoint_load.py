"""Reading training checkpoints and caches (``torch.load(weights_only=True)``) with one error.

Why: ``torch.load(..., weights_only=True)`` refuses a pickle that needs arbitrary Python
objects (a malicious or a foreign checkpoint) with ``pickle.UnpicklingError``, and a
truncated file gives ``RuntimeError`` / ``EOFError``; none of them is a ``ValueError``, so
``train --resume`` and ``distill`` printed a raw traceback. Every checkpoint read in the
package goes through :func:`load_checkpoint`, which raises :class:`CheckpointLoadError` (a
``ValueError``: the CLIs already turn those into one ``error:`` line and exit code 2).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch


class CheckpointLoadError(ValueError):
    """A checkpoint file is unreadable, refused as unsafe, or not the expected dict."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu",
                    required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` that must give a dict with ``required`` keys.

    Args:
        path: the ``.pt`` file.
        map_location: as for ``torch.load``.
        required: keys the dict must hold (a resume reads them all).

    Returns:
        The checkpoint dict (tensors, numbers, strings, nested dicts/lists of them).

    Raises:
        CheckpointLoadError: one line naming the file and the reason.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 5": noise next to our own one-line error.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointLoadError(
            f"{path}: refused: the checkpoint needs arbitrary Python objects to load and is "
            f"only read with weights_only=True (unsafe or foreign file?): "
            f"{unpickler_reason(exc)}") from None
    except (OSError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, MemoryError) as exc:
        # A truncated zip, a non-checkpoint file, a bad storage record ... (torch's loader
        # reports these with many types).
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointLoadError(f"{path}: unreadable checkpoint ({type(exc).__name__}: "
                                  f"{first})") from None
    if not isinstance(obj, dict):
        raise CheckpointLoadError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, "
                                  "expected a dict)")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointLoadError(f"{path}: incomplete checkpoint, missing {missing}")
    return obj


def unpickler_reason(exc: BaseException, limit: int = 200) -> str:
    """The useful part of torch's weights-only refusal, on one line.

    torch's message opens with advice to retry with ``weights_only=False`` (which would run
    the file's code); only the ``WeightsUnpickler error:`` part says what was refused, e.g.
    ``Unsupported global: GLOBAL pathlib.Path.touch``.
    """
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        text = text.split("Please use")[0]  # advice to allowlist the global: not ours to give
    text = re.sub(r"\s+", " ", text).strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
