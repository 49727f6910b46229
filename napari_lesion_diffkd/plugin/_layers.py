"""Segmentation results -> napari layer data tuples (no Qt; pure data and kwargs).

Layer names are ``<image> samples`` (labels, (K, Y, X)), ``<image> uncertainty`` (image, (Y, X)
in [0, 1], magma colormap) and ``<image> consensus`` (labels, (Y, X), editable). For a slice of a
volume each map gets a singleton Z axis placed on that slice through ``translate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SUFFIXES = {"samples": " samples", "uncertainty": " uncertainty", "consensus": " consensus"}


def layer_names(image_name: str) -> dict[str, str]:
    """The three result layer names for an image layer name."""
    return {kind: image_name + suffix for kind, suffix in SUFFIXES.items()}


def result_layer_tuples(
    result: Any,
    image_name: str,
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Layer tuples for one :class:`core.segmenter.SegmentationResult`.

    Args:
        result: the segmentation result (maps in the image's (Y, X) frame).
        image_name: name of the source image layer.
        scale, translate: world transform of the source image, (Y, X) for a 2D image or
            (Z, Y, X) for a slice of a volume, with the Z translate already at that slice.
    """
    names = layer_names(image_name)
    scale, translate = [float(v) for v in scale], [float(v) for v in translate]
    samples = result.samples.astype(np.uint8)
    uncertainty, consensus = result.uncertainty, result.consensus.astype(np.uint8)
    if len(scale) == 3:
        # A slice of a volume: a singleton Z axis placed at that slice, so the maps show on
        # their own slice only (a 2D layer would be broadcast over every slice).
        samples, uncertainty, consensus = samples[:, None], uncertainty[None], consensus[None]
    meta = {"settings": result.settings, "scores": result.scores,
            "sensitivity": None if result.sensitivity is None else result.sensitivity.tolist(),
            "specificity": None if result.specificity is None else result.specificity.tolist()}
    return [
        (samples, {"name": names["samples"], "scale": [1.0, *scale],
         "translate": [0.0, *translate], "opacity": 0.5, "visible": False,
         "metadata": meta}, "labels"),
        (uncertainty, {"name": names["uncertainty"], "scale": scale,
         "translate": translate, "colormap": "magma", "contrast_limits": (0.0, 1.0),
         "blending": "additive", "opacity": 0.7, "metadata": meta}, "image"),
        (consensus, {"name": names["consensus"], "scale": scale,
         "translate": translate, "opacity": 0.5, "metadata": meta}, "labels"),
    ]
