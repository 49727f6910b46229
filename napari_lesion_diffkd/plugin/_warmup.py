"""Warm-up on open: import off the GUI thread what a panel's first run would otherwise
import on it.

A model's first run used to freeze napari for 2-4 s. Most of it was imports on the GUI
thread: napari's first labels layer imports pandas (about 1.1 s here) for its features
table, and the first run's result handling pulls in the fusion, STAPLE and uncertainty code.
:func:`warm_up` imports them once per process in a worker thread as soon as a Segment or
Compare panel opens (a Python import holds the GIL only in short slices, so the event loop
keeps turning); by the first Run they are in ``sys.modules``.

Two more one-off costs were measured on the GUI thread (bench_gui_responsiveness.py with a
stack sampler, and cProfile around ``add_labels``):

* **Garbage collection.** After torch, pandas and napari are imported the process holds
  about 420,000 objects that live as long as it does; each full (generation 2) collection
  walks them all, about 0.15-0.4 s, and it fell on whatever GUI step allocated at that
  moment (a layer insert measured 597 ms instead of about 170). When the imports are done
  :func:`warm_up` calls ``gc.freeze()``: those objects move to the permanent generation,
  later collections only walk what was made since. (Start-up garbage caught in reference
  cycles is then never freed; the objects that matter live as long as the process.)
* **First labels layer.** napari's first labels layer imported ``skimage.color`` and
  ``scipy.linalg`` on the GUI thread (its label colormap, about 0.2 s): pre-imported too.

Tried and dropped: warming up napari's per-kind shader compilation by adding, drawing and
removing a tiny labels and image layer when a panel opens. It worked in one viewer, but
after a viewer that had removed a layer was closed, the next viewer in the same process
crashed in ``glDrawArrays`` (software OpenGL, llvmpipe; seemingly the removed layer's GL
objects are freed later, into another context). Removing a text Points layer crashed
the same way within one viewer, which is also why Compare reuses its layers on a re-run.
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

#: Imported in the background, in this order (cheap if already imported).
MODULES = (
    "pandas",  # napari's labels features table: the biggest single stall of a first run
    "napari.layers.labels.labels",
    "napari.layers.utils.layer_utils",
    "skimage.color.colorconv",  # napari's label colormap (skimage.color is lazy)
    "scipy.linalg",
    "scipy.ndimage",  # labels contours
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
        # Start-up objects out of the full collections (see the module docstring).
        gc.freeze()

    _state["worker"] = start_function_worker(
        preimport, on_error=lambda exc: _state.update(error=exc), on_finished=finished)
    return _state["worker"]


def is_warm() -> bool:
    """Whether the background imports have finished (or were not needed)."""
    return bool(_state["done"])

