"""The app's zero-prompt proposal: the model's consensus refined by the promptable model.

With no user prompt at all, the app draws the box a user would draw around the model's
consensus (its bounding box grown 5%, like the simulated annotator's and the SAM benchmarks'
box) and asks SAM through the correction backend (``SamCorrection.propose``, the path the
correction panel uses), with the consensus as SAM's mask prompt where the backend sends mask
prompts (``use_start_mask``: on for ``lesion-sam-tiny``, off for ``medsam-lite``, which was
trained on boxes only). Mirrors seed 003's SAM-refined pseudo-labels.

Which mask is shown is decided without ground truth: the refined mask when it agrees with the
consensus (Dice >= ``min_agreement``, i.e. SAM segmented the object the model found), else the
consensus (SAM latched on to something else inside the box). The same agreement gives a
per-image triage score, ``refine_disagreement = 1 - Dice(consensus, refined)``: an image whose
consensus the promptable model would redraw is one to look at.

Frames: masks are (Y, X) bool in the image's pixel frame; the box is a napari rectangle (4, 2)
``(row, col)`` (``coords.py`` converts it to SAM's XYXY inside the backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy, xyxy_to_napari_rectangle
from napari_lesion_diffkd.core.sam.prompts import expand_box

#: The box around the consensus: its bounding box times this (as a user's box, +5%).
BOX_EXPAND = 1.05
#: Show the refined mask when it overlaps the consensus at least this much (Dice). Fixed a
#: priori: below 0.5 the two masks are more different than alike, i.e. not the same object.
MIN_AGREEMENT = 0.5


@dataclass(frozen=True)
class PanelRequest:
    """A correction-panel request: the attributes ``SamCorrection.propose`` reads (those of
    ``plugin._correction.CorrectionRequest``, which core may not import). Used here and by
    the simulated annotator (``core.annotation_sim.sam_annotator``).

    Attributes:
        image: (Y, X) or (Y, X, 3) pixels. start: (Y, X) bool, the mask prompt (here the
        consensus). points: (N, 2) napari ``(row, col)``. point_labels: (N,) 1/0.
        box: (4, 2) napari rectangle or None.
        key: the caller's hashable name for the image (embedding cache).
    """

    image: np.ndarray
    start: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    box: np.ndarray | None
    key: Any


@dataclass(frozen=True)
class RefinedProposal:
    """The app's proposal for one image.

    Attributes:
        mask: (Y, X) bool, the mask shown (``refined`` or ``consensus``, per ``source``).
        consensus: (Y, X) bool, the model's consensus as given.
        refined: (Y, X) bool, SAM's answer to the consensus box (all False when the
            consensus is empty: nothing to box).
        agreement: Dice(consensus, refined) in [0, 1] (0 for an empty consensus).
        source: ``"refined"`` or ``"consensus"``.
        box: (4, 2) napari rectangle ``(row, col)`` sent to SAM, or None (empty consensus).
        sam_score: SAM's predicted IoU of ``refined`` (NaN when SAM was not asked).
    """

    mask: np.ndarray
    consensus: np.ndarray
    refined: np.ndarray
    agreement: float
    source: str
    box: np.ndarray | None
    sam_score: float

    @property
    def disagreement(self) -> float:
        """``1 - agreement``: the per-image triage score (larger = look at it first)."""
        return 1.0 - self.agreement


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two (Y, X) bool masks; 1.0 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def consensus_box(consensus: np.ndarray, expand: float = BOX_EXPAND) -> np.ndarray | None:
    """The box around every consensus pixel, grown by ``expand`` and clipped to the image.

    Returns:
        (4, 2) float napari rectangle ``(row, col)``, or None for an empty consensus.
    """
    c = np.asarray(consensus, dtype=bool)
    box = mask_to_xyxy(c)
    if box is None:
        return None
    return xyxy_to_napari_rectangle(expand_box(box, expand, c.shape))


def refine_consensus(backend: Any, image: np.ndarray, consensus: np.ndarray, key: Any,
                     expand: float = BOX_EXPAND,
                     min_agreement: float = MIN_AGREEMENT) -> RefinedProposal:
    """Refine a model's consensus with SAM, with no user prompt.

    Args:
        backend: a ``correction_backend.SamCorrection`` (the correction panel's backend).
        image: (Y, X) gray or (Y, X, 3) pixels of a 2D image or slice.
        consensus: (Y, X) bool, the model's consensus on ``image``.
        key: the caller's name for the image (e.g. ``(layer name, slice)``); an embedding
            cached under it (prefetch) is reused.
        expand: box growth factor, in [1, 2].
        min_agreement: show the refined mask when Dice(consensus, refined) >= this.

    Returns:
        :class:`RefinedProposal`. An empty consensus comes back as is (source
        ``consensus``, agreement 0): there is no object to box.

    Raises:
        ValueError: a consensus that is not (Y, X) of the image's size, or ``expand`` /
            ``min_agreement`` out of range.
    """
    image = np.asarray(image)
    c = np.asarray(consensus, dtype=bool)
    hw = tuple(int(s) for s in image.shape[:2])
    if c.shape != hw:
        raise ValueError(f"consensus {c.shape} does not match the image {hw} (rows, cols)")
    if not 1.0 <= expand <= 2.0:
        raise ValueError(f"expand must lie in [1, 2], got {expand}")
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"min_agreement must lie in [0, 1], got {min_agreement}")
    box = consensus_box(c, expand)
    if box is None:
        return RefinedProposal(mask=c.copy(), consensus=c, refined=np.zeros_like(c),
                               agreement=0.0, source="consensus", box=None,
                               sam_score=float("nan"))
    request = PanelRequest(image=image, start=c, points=np.zeros((0, 2)),
                            point_labels=np.zeros(0, dtype=np.int64), box=box, key=key)
    refined = np.asarray(backend.propose(request), dtype=bool)
    last = getattr(backend, "last", None)
    score = float(last.score) if last is not None else float("nan")
    agreement = mask_dice(c, refined)
    use_refined = bool(refined.any()) and agreement >= min_agreement
    return RefinedProposal(mask=refined.copy() if use_refined else c.copy(), consensus=c,
                           refined=refined, agreement=agreement,
                           source="refined" if use_refined else "consensus", box=box,
                           sam_score=score)
