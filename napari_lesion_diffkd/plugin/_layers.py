"""Segmentation results -> napari layer data (no Qt; pure data, kwargs and metadata).

Result layers of an image layer called ``<image>``:

* ``<image> samples``: labels, (K, Y, X) or (K, Z, Y, X) uint8 {0, 1}, hidden by default (for
  a large 2D image, (K, y, x) at the result's working shape, with a layer scale that lays it
  over the image: the K masks are not upsampled for display);
* ``<image> uncertainty``: image, (Y, X) or (Z, Y, X) float32 in [0, 1], magma colormap;
* ``<image> consensus``: labels, (Y, X) or (Z, Y, X) uint8 {0, 1}, editable; drawn as a
  high-contrast outline (:data:`CONSENSUS_COLOR`, :data:`CONSENSUS_CONTOUR`).

The Compare widget names its layers by the compared model's role, short, so that napari's
layer list shows them whole at 1366 x 768: ``T: uncertainty · <image>`` (teacher),
``S: consensus · <image>`` (student), etc.; the model's full name is in the marker and in
the grid cell's caption. (``<image> [<model>] uncertainty`` was cut off.) Every model layer
carries ``metadata["lesion_diffkd"]`` (:func:`model_meta`): the widgets find and replace
*their own* layers through it, never a user's layer that merely has the same name. Its
``clean`` digest is the content the layer had when a model or the store last wrote it, so
"the user edited this" is ``digest(data) != clean`` (:func:`is_dirty`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

META_KEY = "lesion_diffkd"
SUFFIXES = {"samples": " samples", "uncertainty": " uncertainty", "consensus": " consensus"}
ROLES = tuple(SUFFIXES)
#: The consensus is drawn as an opaque neon-green outline: a filled half-transparent mask in
#: napari's default label colour was barely visible over a brown lesion, and a filled mask
#: hides the lesion border the user has to judge. Green is far from every skin and lesion
#: tone, from magma (uncertainty) and from the correction proposal's cyan.
CONSENSUS_COLOR = "#39ff14"
CONSENSUS_COLORS = {0: "transparent", 1: CONSENSUS_COLOR, None: CONSENSUS_COLOR}
#: Outline width in pixels (0 = filled; set on the layer after it is made: napari's
#: add_labels takes no ``contour``); the brush still paints filled labels.
CONSENSUS_CONTOUR = 2


def layer_names(image_name: str, short: str | None = None) -> dict[str, str]:
    """The three result layer names for an image layer name (``short``: Compare's role tag,
    e.g. ``T`` or ``S``, see :func:`compare_name`)."""
    if short is not None:
        return {role: compare_name(short, role, image_name) for role in SUFFIXES}
    return {role: image_name + suffix for role, suffix in SUFFIXES.items()}


def compare_name(short: str, role: str, image_name: str) -> str:
    """A Compare layer's name: ``T: consensus · lesion``. The tag and the role come first:
    the layer list cuts long names off at the right."""
    return f"{short}: {role} \u00b7 {image_name}"


def digest(data: Any) -> str:
    """Content digest of an array (shape, dtype and bytes): 16 bytes of BLAKE2b, as hex."""
    arr = np.ascontiguousarray(np.asarray(data))
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}{arr.dtype}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def model_meta(role: str, image: str, group: str = "segment", model: str | None = None,
               clean: str | None = None, **extra: Any) -> dict[str, Any]:
    """The ``metadata`` dict of a layer this plugin manages.

    Args:
        role: ``samples`` | ``uncertainty`` | ``consensus`` (model outputs), ``label``
            (the project's label of the image), ``view`` (Compare's per-model image view),
            ``proposal`` / ``prompts`` (the correction panel's candidate and clicks).
        image: name of the source image layer.
        group: ``segment`` (Segment widget and cached predictions), ``compare`` (one set
            per model), ``project`` (labels), ``correction``.
        model: the model label that produced it, if any.
        clean: digest of the content last written by a model or the store.
        extra: anything else worth keeping (settings, STAPLE values, label version id).
    """
    return {META_KEY: {"role": role, "image": image, "group": group, "model": model,
                       "clean": clean, **extra}}


def managed(layer: Any) -> dict[str, Any] | None:
    """The plugin's marker of a layer, or None for a user's own layer."""
    meta = getattr(layer, "metadata", None) or {}
    marker = meta.get(META_KEY)
    return marker if isinstance(marker, dict) else None


def is_dirty(layer: Any) -> bool:
    """True when a managed labels layer differs from what a model or the store last wrote."""
    marker = managed(layer)
    if marker is None:
        return False
    return digest(layer.data) != marker.get("clean")


def prepare_display(result: Any) -> Any:
    """Do a 2D result's full-size display work off the GUI thread (call in the worker).

    Stores ``result._display``: ``consensus`` ((Y, X) uint8 {0, 1}, the layer's data),
    its ``digest`` and its ``outline`` ((Y, X) uint8: napari's contour of it at
    :data:`CONSENSUS_CONTOUR`, see :func:`outline`). napari computes that contour on the
    GUI thread at every full refresh of the layer: 0.5-0.7 s for a 4000 x 3000 image here;
    ``_layer_ops.use_outline`` hands it this one instead. Volumes are left alone (napari
    outlines one slice at a time). Returns ``result``.
    """
    consensus = np.asarray(result.consensus)
    if consensus.ndim == 2:
        data = consensus.astype(np.uint8)
        result._display = {"consensus": data, "digest": digest(data),
                           "outline": outline(data, CONSENSUS_CONTOUR)}
    return result


def outline(labels: np.ndarray, thickness: int, background: int = 0) -> np.ndarray:
    """The contour napari draws for a 2D labels array with ``contour = thickness``: the
    labels kept on their boundaries, ``background`` elsewhere ((Y, X), labels' dtype)."""
    # Copied from napari.layers.labels._labels_utils.get_contours (napari 0.9, a private
    # function): the same pixels, so the precomputed outline is what napari would draw
    # (tests/plugin/test_large_image_widget.py compares the two).
    from scipy import ndimage as ndi

    struct = ndi.generate_binary_structure(labels.ndim, 1)
    thick = ndi.iterate_structure(struct, thickness).astype(bool)
    dilated = ndi.grey_dilation(labels, footprint=struct)
    eroded = ndi.grey_erosion(labels, footprint=thick)
    contours = labels.copy()
    contours[dilated == eroded] = background
    return contours


def result_layer_tuples(
    result: Any,
    image_name: str,
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
    model: str | None = None,
    group: str = "segment",
    full_samples: bool = False,
    short: str | None = None,
) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Layer tuples ``(data, kwargs, kind)`` for a result whose maps are already in the
    image layer's data frame.

    Args:
        result: :class:`core.segmenter.SegmentationResult` ((Y, X) maps) or
            :class:`plugin._segment_job.VolumeResult` ((Z, Y, X) maps).
        image_name: name of the source image layer.
        scale, translate: the image layer's world transform over its spatial axes,
            (Y, X) or (Z, Y, X).
        model: model label for per-model names (Compare); None for the Segment widget.
        group: the marker's group (see :func:`model_meta`).
        full_samples: samples at the image's shape even when the result has a smaller
            working shape (e.g. to write one slice into a volume layer).
        short: Compare's role tag for the names (:func:`compare_name`); for group
            ``compare`` without one, the model label is the tag.
    """
    if group == "compare" and short is None:
        short = model
    names = layer_names(image_name, short if group == "compare" else None)
    scale, translate = [float(v) for v in scale], [float(v) for v in translate]
    samples = np.asarray(result.full_samples() if full_samples and hasattr(
        result, "full_samples") else result.samples).astype(np.uint8)
    uncertainty = np.asarray(result.uncertainty, dtype=np.float32)
    display = getattr(result, "_display", None)  # prepare_display, done in the worker
    consensus = display["consensus"] if display else \
        np.asarray(result.consensus).astype(np.uint8)
    # Samples at a working shape smaller than the image: scale them over it (pixel centres
    # as in the bilinear / nearest upsampling of core.data.preprocess).
    factor = [c / s for c, s in zip(consensus.shape[-2:], samples.shape[-2:])]
    s_scale = list(scale[:-2]) + [v * f for v, f in zip(scale[-2:], factor)]
    s_translate = list(translate[:-2]) + [
        t + v * (f - 1) / 2 for t, v, f in zip(translate[-2:], scale[-2:], factor)]
    label = model or result.settings.get("model")
    extra = {"settings": result.settings, "scores": result.scores,
             "sensitivity": _listed(result.sensitivity),
             "specificity": _listed(result.specificity)}

    def meta(role: str, data: np.ndarray | None = None) -> dict[str, Any]:
        clean = None if data is None else \
            display["digest"] if display and data is display["consensus"] else digest(data)
        return model_meta(role, image_name, group, label, clean, **extra)

    return [
        (samples, {"name": names["samples"], "scale": [1.0, *s_scale],
                   "translate": [0.0, *s_translate], "opacity": 0.5, "visible": False,
                   "metadata": meta("samples")}, "labels"),
        (uncertainty, {"name": names["uncertainty"], "scale": scale, "translate": translate,
                       "colormap": "magma", "contrast_limits": (0.0, 1.0),
                       "blending": "additive", "opacity": 0.7,
                       "metadata": meta("uncertainty")}, "image"),
        (consensus, {"name": names["consensus"], "scale": scale, "translate": translate,
                     "opacity": 1.0, "colormap": CONSENSUS_COLORS,
                     "metadata": meta("consensus", consensus)}, "labels"),
    ]


def _listed(values: Any) -> Any:
    return None if values is None else np.asarray(values).tolist()
