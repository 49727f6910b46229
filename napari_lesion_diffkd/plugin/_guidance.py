"""In-app guidance: show the most uncertain region not yet reviewed, accept as is, and the
queue's per-image confidence badge. No Qt widgets (the correction panel adds the buttons).

Next uncertain region (:class:`RegionGuide`): the regions are the connected parts of the
image's uncertainty layer above ``core.annotation_sim.guidance.DEFAULT_THRESHOLD``, most
uncertain first (``uncertain_regions``, the same rule the ``uncertainty-guided``
simulation uses); each is proposed once (``RegionQueue``). The camera is centred on the
region and zoomed so that it fills about a third of the canvas; the region is marked
reviewed and logged (``review`` event). A new segmentation (a new uncertainty map) or
another slice starts the list again.

Confidence badge (:func:`confidence_badge`): from the stored prediction's per-image
``sample_disagreement`` (1 - mean pairwise Dice of the K samples): ``high`` up to 0.1 (the
loop's own "confident" threshold for pseudo labels), ``medium`` up to 0.25, ``low`` above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari

#: ``sample_disagreement`` upper bounds of the badges (see the module docstring).
BADGES = ((0.1, "high"), (0.25, "medium"))
NEXT_REGION_KEY = "Shift-N"
ACCEPT_AS_IS_KEY = "Shift-Enter"
#: The region's box fills about this fraction of the canvas's shorter side.
REGION_FILL = 1 / 3


def confidence_badge(score: float | None) -> str:
    """``high`` / ``medium`` / ``low`` for a ``sample_disagreement``; ``""`` without one."""
    if score is None or not np.isfinite(score):
        return ""
    for bound, badge in BADGES:
        if score <= bound:
            return badge
    return "low"


class RegionGuide:
    """The "next uncertain region" action of one viewer (see the module docstring).

    Attributes:
        last: the last region shown: ``{"image", "z", "box", "centre", "pixels",
            "reviewed", "left"}`` (data frame of the image), or None.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.last: dict[str, Any] | None = None
        self._queues: dict[tuple, Any] = {}

    def queue(self, image: Any) -> tuple[Any, int | None] | None:
        """The region queue of the image's current uncertainty map (and its slice), or
        None when the image has no uncertainty layer."""
        from napari_lesion_diffkd.core.annotation_sim.guidance import (
            RegionQueue,
            uncertain_regions,
        )
        from napari_lesion_diffkd.plugin._layer_ops import current_slice, find_managed

        layer = find_managed(self.viewer, image.name, "uncertainty")
        if layer is None:
            return None
        z = current_slice(self.viewer, image) if image.ndim == 3 else None
        key = (image.name, z, id(layer.data))
        if key not in self._queues:
            self._queues = {k: v for k, v in self._queues.items() if k[0] != image.name}
            data = np.asarray(layer.data if z is None else layer.data[z], np.float32)
            self._queues[key] = RegionQueue(uncertain_regions(data))
        return self._queues[key], z

    def next_region(self, image: Any) -> dict[str, Any] | None:
        """Centre and zoom the view on the image's most uncertain region not yet reviewed
        and mark it reviewed; returns :attr:`last`, or None when there is none (left)."""
        found = self.queue(image)
        if found is None:
            return None
        queue, z = found
        region = queue.next_region()
        if region is None:
            return None
        rows, cols = np.nonzero(region)
        box = [int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())]
        centre = [(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0]
        self._show(image, z, box, centre)
        self.last = {"image": image.name, "z": z, "box": box, "centre": centre,
                     "pixels": int(rows.size), "reviewed": queue.reviewed, "left": len(queue)}
        from napari_lesion_diffkd.plugin._interaction_log import interaction_log

        interaction_log(self.viewer).note(image.name, "review", dict(self.last))
        return self.last

    def _show(self, image: Any, z: int | None, box: list[int], centre: list[float]) -> None:
        scale = np.asarray(image.scale[-image.ndim:], float)
        translate = np.asarray(image.translate[-image.ndim:], float)
        point = np.array(([z] if z is not None else []) + centre, float)
        world = translate + scale * point
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; viewer.camera before
        camera = scene.camera if scene is not None else self.viewer.camera
        if z is not None:
            self.viewer.dims.set_point(self.viewer.dims.ndim - 3, float(world[0]))
        camera.center = (float(world[-2]), float(world[-1]))
        height = (box[2] - box[0] + 1) * scale[-2]
        width = (box[3] - box[1] + 1) * scale[-1]
        canvas = getattr(getattr(self.viewer, "canvas", None), "size", None) \
            or getattr(self.viewer, "_canvas_size", None) or (600, 800)
        side = max(1.0, float(min(canvas)))
        extent = max(height, width, 8.0 * float(min(scale[-2:])))
        camera.zoom = float(np.clip(side * REGION_FILL / extent, 0.01, 100.0))
