"""Warm-up on open: import off the GUI thread what a panel's first run would otherwise
import on it.

A model's first run used to freeze napari for 2-4 s. Most of it was imports on the GUI
thread: napari's first labels layer imports pandas (about 1.1 s here) for its features
table, and the first run's result handling pulls in the fusion, STAPLE and uncertainty code.
:func:`warm_up` imports them once per process in a worker thread as soon as a Segment or
Compare panel opens (a Python import holds the GIL only in short slices, so the event loop
keeps turning); by the first Run they are in ``sys.modules``. The rest of the first run's
GUI work (creating the layers, their controls and their vispy shaders) is what napari does
for any new layer.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

#: Imported in the background, in this order (cheap if already imported).
MODULES = (
    "pandas",  # napari's labels features table: the biggest single stall of a first run
    "napari.layers.labels.labels",
    "napari.layers.utils.layer_utils",
    "napari_lesion_diffkd.core.segmenter",
    "napari_lesion_diffkd.core.ensemble.fusion",
    "napari_lesion_diffkd.core.ensemble.staple",
    "napari_lesion_diffkd.core.ensemble.uncertainty",
    "napari_lesion_diffkd.core.diffusion.samplers",
    "napari_lesion_diffkd.plugin._layer_ops",
)

_state: dict[str, Any] = {"worker": None, "done": False, "error": None}


def preimport(modules: tuple[str, ...] = MODULES) -> list[str]:
    """Import ``modules`` (call from a worker thread); returns those that failed (a missing
    optional module is no error: the run that needs it will say so)."""
    failed = []
    for name in modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - best effort; the real import reports it later
            failed.append(name)
    return failed


def warm_up() -> Any:
    """Start the background imports once per process; returns the worker (None when done
    or already running)."""
    if _state["done"] or _state["worker"] is not None:
        return None
    if all(name in sys.modules for name in MODULES):
        _state["done"] = True
        return None
    from napari_lesion_diffkd.plugin._workers import start_function_worker

    def finished() -> None:
        _state["worker"], _state["done"] = None, True

    _state["worker"] = start_function_worker(
        preimport, on_error=lambda exc: _state.update(error=exc), on_finished=finished)
    return _state["worker"]


def is_warm() -> bool:
    """Whether the background imports have finished (or were not needed)."""
    return bool(_state["done"])
