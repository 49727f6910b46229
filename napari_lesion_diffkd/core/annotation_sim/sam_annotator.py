"""The correction panel's prompting, driven by a simulated annotator on one image.

Every prompt goes through the app's correction backend (``core.sam.correction_backend``
``SamCorrection``), the object the correction panel calls:

* the **first** prompt on an image is a panel request answered by ``SamCorrection.propose``:
  a box from scratch (start mask empty), or a click on the model's mask (start mask = the
  consensus, which the backend turns into SAM's mask prompt);
* every **later** prompt re-sends all prompts so far (box and accumulated clicks) with the
  previous answer's low-resolution logits as the mask prompt, through the backend's
  ``PromptSession.predict`` (the standard interactive protocol: the previous mask is the mask
  prompt).

The image is encoded once per image key and kept in the backend's embedding cache, so all
workflows on one image share one encoding.

Frames: clicks and boxes arrive in the napari data frame (``clicks.Click`` ``(row, col)``,
rectangles (4, 2) ``(row, col)``); ``core/sam/coords.py`` converts them to SAM's ``(x, y)``.
Masks are (Y, X) bool in the image frame.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.annotation_sim.clicks import Click
from napari_lesion_diffkd.core.sam.coords import (
    clip_xyxy,
    napari_points_to_xy,
    napari_rectangle_to_xyxy,
)
from napari_lesion_diffkd.core.sam.refine_proposal import PanelRequest


class SamAnnotator:
    """Prompts on one image through a ``SamCorrection`` backend, remembering what was given.

    Args:
        backend: a ``core.sam.correction_backend.SamCorrection`` (or an object with its
            ``session``, ``image_key``, ``propose`` and ``last``).
        image: (Y, X) or (Y, X, 3) pixels. key: the caller's hashable name for the image.

    Attributes:
        seconds: model wall time spent by this annotator's prompts (decoder calls).
        mask: (Y, X) bool, the current SAM answer (None before the first prompt).
    """

    def __init__(self, backend: Any, image: np.ndarray, key: Hashable,
                 memo: dict | None = None) -> None:
        self.backend = backend
        # Answers to box-started prompt chains, shared by the workflows on one image: after
        # the same box and clicks SAM answers the same (deterministic decoder), so a workflow
        # that restarted with a box replays sam-first's chain without decoding it again. Its
        # recorded decoder seconds are charged again, as the app would spend them.
        self._memo = memo
        self.image = np.asarray(image)
        self.key = key
        self.hw = tuple(int(s) for s in self.image.shape[:2])
        self._points: list[tuple[int, int]] = []
        self._labels: list[int] = []
        self._box: np.ndarray | None = None
        self._logits: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.seconds = 0.0

    def encode(self) -> float:
        """Encode the image into the backend's cache (no-op when cached); returns seconds."""
        start = time.perf_counter()
        self.backend.session.set_image(self.image, key=self.backend.image_key(self.image,
                                                                            self.key))
        return time.perf_counter() - start

    def box(self, rectangle: np.ndarray) -> np.ndarray:
        """Start over with a box (napari rectangle (4, 2)); clears earlier clicks.

        Returns:
            (Y, X) bool, SAM's answer to the box alone.
        """
        self._points, self._labels, self._logits = [], [], None
        self._box = np.asarray(rectangle, dtype=np.float64)
        if self._replay():
            return self.mask
        request = PanelRequest(self.image, np.zeros(self.hw, dtype=bool),
                               np.zeros((0, 2)), np.zeros(0, dtype=np.int64), self._box,
                               self.key)
        before = self.seconds
        mask = self._first(request)
        self._remember(self.seconds - before)
        return mask

    def click(self, click: Click, start: np.ndarray | None = None) -> np.ndarray:
        """Add one click; returns the new (Y, X) bool mask.

        Args:
            click: napari ``(row, col)`` click with its sign.
            start: the mask the correction starts from (e.g. the consensus), used only when
                this is the image's first prompt; it becomes SAM's mask prompt.
        """
        self._points.append((click.row, click.col))
        self._labels.append(click.label)
        points = np.asarray(self._points, dtype=np.float64)
        labels = np.asarray(self._labels, dtype=np.int64)
        if self._logits is None and self._box is None:
            begin = np.zeros(self.hw, dtype=bool) if start is None else np.asarray(start, bool)
            return self._first(PanelRequest(self.image, begin, points, labels, None, self.key))
        if self._replay():
            return self.mask
        t0 = time.perf_counter()
        box = None if self._box is None else clip_xyxy(napari_rectangle_to_xyxy(self._box),
                                                       self.hw)
        result = self.backend.session.predict(
            points_xy=napari_points_to_xy(points), point_labels=labels, box_xyxy=box,
            mask_logits=self._logits)
        spent = time.perf_counter() - t0
        self.seconds += spent
        self._logits = result.low_res_logits
        self.mask = result.mask
        self._remember(spent)
        return result.mask

    def _chain(self) -> tuple | None:
        """The memo key of the prompts so far: only chains that began with a box from an
        empty start (their answers depend on the prompts alone)."""
        if self._memo is None or self._box is None:
            return None
        return (self.key, tuple(self._box.ravel().tolist()), tuple(self._points),
                tuple(self._labels))

    def _replay(self) -> bool:
        chain = self._chain()
        if chain is None or chain not in self._memo:
            return False
        mask, logits, seconds = self._memo[chain]
        self.mask, self._logits = mask.copy(), logits
        self.seconds += seconds
        return True

    def _remember(self, seconds: float) -> None:
        chain = self._chain()
        if chain is not None and self.mask is not None:
            self._memo[chain] = (self.mask.copy(), self._logits, seconds)

    def _first(self, request: PanelRequest) -> np.ndarray:
        t0 = time.perf_counter()
        mask = self.backend.propose(request)
        self.seconds += time.perf_counter() - t0
        last = self.backend.last
        self._logits = None if last is None else last.low_res_logits
        self.mask = np.asarray(mask, dtype=bool)
        return self.mask
