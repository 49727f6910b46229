"""The correction panel's data side (no Qt): start masks and the prompt-backend contract.
(Undo / redo is napari's own labels history, see ``_layer_ops.write_labels``.)

**Prompt backend contract** (SAM's is ``core/sam/correction_backend.SamCorrection``, which
the panel loads through ``_sam_models.SamModelBox``; tests plug in stand-ins).
A backend is any object with

* ``name: str`` (shown in the panel), and
* ``propose(request: CorrectionRequest) -> np.ndarray``: a (Y, X) bool mask in the image's
  pixel frame. It is called in a *worker thread*, never on the GUI thread, and may be slow
  the first time for an image (an encoder run) and fast after (its own cache, keyed by
  ``request.key``). It raises an exception with a readable message on failure; the panel
  shows it and keeps the proposal as it was.

All coordinates in :class:`CorrectionRequest` are in the **napari data frame of the 2D
image** (rows, cols; pixel ``[r, c]`` centred on ``(r, c)``), already reduced to the slice
for a volume. The backend converts them to SAM's ``(x, y)`` / XYXY with
``core.sam.coords`` (``napari_points_to_xy``, ``napari_rectangle_to_xyxy``) and passes
``start`` as ``PromptSession.predict(mask=...)``. Register one with
``CorrectionWidget.set_backend(backend)``; without one, the panel still starts from the
consensus / a sample / empty, and accepts, rejects, undoes and redoes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

START_SOURCES = ("consensus", "sample", "empty")


@dataclass(frozen=True)
class CorrectionRequest:
    """One prompt round.

    Attributes:
        image: (Y, X) gray or (Y, X, 3) RGB pixels of the image (or of the slice).
        start: (Y, X) bool, the mask being corrected (the current proposal).
        points: (N, 2) float (row, col) clicks; N may be 0.
        point_labels: (N,) int, 1 = lesion (positive), 0 = background (negative).
        box: (4, 2) float napari rectangle vertices (row, col), or None.
        key: identifies the image for the backend's embedding cache, e.g.
            ``(layer name, slice index or None)``.
    """

    image: np.ndarray
    start: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    box: np.ndarray | None = None
    key: Hashable = None


class CorrectionBackend(Protocol):
    """What the correction panel calls (see the module docstring)."""

    name: str

    def propose(self, request: CorrectionRequest) -> np.ndarray:
        """A (Y, X) bool mask for the request, in the image's pixel frame."""
        ...


def start_mask(source: str, shape: tuple[int, ...], consensus: np.ndarray | None = None,
               samples: np.ndarray | None = None, k: int = 0) -> np.ndarray:
    """The mask a correction starts from.

    Args:
        source: ``consensus`` | ``sample`` | ``empty``.
        shape: the image's spatial shape, (Y, X) or (Z, Y, X).
        consensus: the consensus layer's data (same shape).
        samples: the samples layer's data, (K, *shape).
        k: which sample (0-based).

    Returns:
        uint8 {0, 1} array of ``shape`` (a copy: editing it changes no model layer).

    Raises:
        ValueError: the source is unknown or not available (no segmentation yet).
    """
    if source == "empty":
        return np.zeros(shape, np.uint8)
    if source == "consensus":
        if consensus is None:
            raise ValueError("no consensus yet: segment the image first")
        return (np.asarray(consensus) > 0).astype(np.uint8)
    if source == "sample":
        if samples is None:
            raise ValueError("no samples yet: segment the image first")
        samples = np.asarray(samples)
        if not 0 <= k < samples.shape[0]:
            raise ValueError(f"sample {k + 1} does not exist (K = {samples.shape[0]})")
        mask = samples[k] > 0
        if mask.shape != tuple(shape):  # a large image's samples, at the working shape
            from napari_lesion_diffkd.core.data.preprocess import upsample_masks

            mask = upsample_masks(mask, tuple(shape))
        return mask.astype(np.uint8)
    raise ValueError(f"unknown start {source!r}; one of {START_SOURCES}")
