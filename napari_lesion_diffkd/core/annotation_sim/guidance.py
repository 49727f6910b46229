"""Where the app tells the annotator to look next: the most uncertain region not yet reviewed.

A region is a connected component (8-connectivity) of the pixel uncertainty map above a
threshold; regions are ranked by their summed uncertainty (large and very uncertain first).
The map is ``SegmentationResult.uncertainty``: (Y, X) float32 in [0, 1] (by default the
entropy, in bits, of the K samples' mean soft probability), in the image's pixel frame.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Default threshold (bits of entropy): a pixel the samples put between about 0.11 and 0.89
#: lesion probability. Fixed a priori for every modality, not tuned on evaluation images.
DEFAULT_THRESHOLD = 0.5


def uncertain_regions(uncertainty: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                      min_pixels: int = 1) -> list[np.ndarray]:
    """The uncertain regions of a map, most uncertain first.

    Args:
        uncertainty: (Y, X) float map, larger = less sure (NaN treated as 0).
        threshold: a pixel belongs to a region when its value is strictly above this.
        min_pixels: regions smaller than this are dropped.

    Returns:
        (Y, X) bool masks, sorted by summed uncertainty, descending (ties: larger first,
        then raster order of their first pixel).

    Raises:
        ValueError: a map that is not 2D, or a threshold that is not finite.
    """
    u = np.nan_to_num(np.asarray(uncertainty, dtype=np.float64), nan=0.0)
    if u.ndim != 2:
        raise ValueError(f"expected a (Y, X) uncertainty map, got shape {u.shape}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    labels, n = ndi.label(u > threshold, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    sums = ndi.sum(u, labels, index)
    sizes = ndi.sum(np.ones_like(u), labels, index)
    order = sorted(range(n), key=lambda i: (-sums[i], -sizes[i], i))
    return [labels == i + 1 for i in order if sizes[i] >= max(1, int(min_pixels))]


class RegionQueue:
    """The regions of one image in the order the app proposes them; each is shown once.

    Args:
        regions: (Y, X) bool masks, most uncertain first (:func:`uncertain_regions`).

    Attributes:
        reviewed: how many regions were proposed so far.
    """

    def __init__(self, regions: list[np.ndarray]) -> None:
        self._regions = list(regions)
        self.reviewed = 0

    def __len__(self) -> int:
        return len(self._regions) - self.reviewed

    def next_region(self) -> np.ndarray | None:
        """The most uncertain region not yet reviewed (marked reviewed now), or None."""
        if self.reviewed >= len(self._regions):
            return None
        region = self._regions[self.reviewed]
        self.reviewed += 1
        return region
