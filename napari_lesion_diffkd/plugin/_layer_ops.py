"""Put results into a viewer: add or update the plugin's own layers, never a user's.

GUI thread only (napari layers are not thread-safe); no Qt imports. Layers are found by their
``metadata["lesion_diffkd"]`` marker (see :mod:`._layers`), not by name.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_lesion_diffkd.plugin._layers import (
    CONSENSUS_CONTOUR,
    META_KEY,
    ROLES,
    digest,
    is_dirty,
    managed,
    result_layer_tuples,
)

if TYPE_CHECKING:
    import napari


def find_managed(viewer: napari.viewer.Viewer, image: str, role: str, group: str = "segment",
                 model: str | None = None) -> Any:
    """The plugin layer with this marker, or None (``model`` matters for ``compare`` only)."""
    for layer in viewer.layers:
        marker = managed(layer)
        if (marker and marker.get("image") == image and marker.get("role") == role
                and marker.get("group") == group
                and (group != "compare" or marker.get("model") == model)):
            return layer
    return None


def spatial_transform(layer: Any) -> tuple[list[float], list[float], int]:
    """``(scale, translate, ndim_spatial)`` of an image layer (the RGB axis is no dim)."""
    ndim = layer.ndim
    return [float(v) for v in layer.scale[-ndim:]], \
        [float(v) for v in layer.translate[-ndim:]], ndim


def current_slice(viewer: napari.viewer.Viewer, layer: Any) -> int:
    """Index of the slice under the viewer's current position, in a 3D layer's data frame
    (the layer may have its own scale / translate, e.g. the slice spacing)."""
    point = viewer.dims.point[-layer.ndim:]
    depth = np.asarray(layer.data).shape[0]
    return int(np.clip(round(float(layer.world_to_data(point)[0])), 0, depth - 1))


def apply_result(viewer: napari.viewer.Viewer, result: Any, image_layer: Any,
                 z: int | None = None, model: str | None = None, group: str = "segment",
                 before_replace: Callable[[Any], None] | None = None,
                 roles: tuple[str, ...] = ROLES,
                 samples_layer: bool | None = None,
                 short: str | None = None) -> dict[str, Any]:
    """Show a result as the image's model layers (added, or updated in place).

    Args:
        result: a 2D :class:`SegmentationResult`, or a :class:`VolumeResult` for a volume.
        image_layer: the source image layer ((Y, X[, 3]) or (Z, Y, X[, 3])).
        z: for a 2D result of one slice of a volume: that slice. The volume-shaped model
            layers keep the other slices (zeros where never segmented).
        model, group: marker fields (see :func:`._layers.model_meta`).
        before_replace: called with an edited (dirty) consensus layer before it is
            overwritten, so the project panel can keep the user's edits.
        roles: which of the three layers to show (Compare leaves the samples out).
        samples_layer: whether the K samples get their own ``(K, ...)`` labels layer. None
            (default): for a volume only, or when the image has one already. For a 2D
            image a (K, Y, X) layer would add a dims slider for K to a 2D view, even
            hidden, and cost the GUI thread another labels layer; the samples then ride on
            the consensus layer's marker (``metadata["lesion_diffkd"]["samples"]``, what
            the correction panel starts "from sample k" with).
        short: Compare's role tag for the layer names (``T`` / ``S``, see
            :func:`._layers.compare_name`).

    Returns:
        ``{role: layer}`` for the roles shown.

    The interaction log (``_interaction_log``) records the write as a ``model`` event of
    the consensus layer, with the model call (a cached result, 0 s, is marked so).
    """
    from napari_lesion_diffkd.plugin._interaction_log import interaction_log

    log = interaction_log(viewer)
    seconds = float(getattr(result, "seconds", 0.0) or 0.0)
    log.note(image_layer.name, "model", {"model": model, "group": group, "z": z,
                                         "seconds": round(seconds, 4),
                                         "cached": seconds == 0.0})
    with log.cause("model", {"model": model, "group": group}):
        return _apply_result(viewer, result, image_layer, z, model, group, before_replace,
                             roles, samples_layer, short)


def _apply_result(viewer: napari.viewer.Viewer, result: Any, image_layer: Any,
                  z: int | None, model: str | None, group: str,
                  before_replace: Callable[[Any], None] | None, roles: tuple[str, ...],
                  samples_layer: bool | None, short: str | None) -> dict[str, Any]:
    scale, translate, _ = spatial_transform(image_layer)
    tuples = result_layer_tuples(result, image_layer.name, scale, translate, model, group,
                                 full_samples=z is not None, short=short)
    layers = {}
    kept_samples = None  # the samples, when they get no layer of their own
    for data, kwargs, kind in tuples:
        role = kwargs["metadata"][META_KEY]["role"]
        if role not in roles:
            continue
        existing = find_managed(viewer, image_layer.name, role, group, model)
        if role == "samples" and existing is None and not (
                samples_layer if samples_layer is not None else image_layer.ndim == 3):
            kept_samples = data
            continue
        if role == "consensus" and kept_samples is not None and z is None:
            kwargs["metadata"][META_KEY]["samples"] = kept_samples
        was_dirty = existing is not None and role == "consensus" and is_dirty(existing)
        if was_dirty and before_replace is not None:
            before_replace(existing)  # may save it and mark it clean
            was_dirty = is_dirty(existing)
        undoable = (role == "consensus" and existing is not None
                    and existing.data.shape == (image_layer.data.shape[:image_layer.ndim]))
        if z is not None:
            # An edited consensus gets the new slice through napari's history (below), so
            # the previous result and the user's strokes stay one Ctrl-Z away.
            data = _into_volume(None if undoable else existing, data, z, role, image_layer)
            if undoable:
                full = np.array(existing.data, copy=True)
                full[z] = data[z]
                data = full
        display = getattr(result, "_display", None) if role == "consensus" and z is None \
            else None
        if existing is None:
            add = viewer.add_labels if kind == "labels" else viewer.add_image
            if z is not None and role == "consensus":
                kwargs["metadata"][META_KEY]["clean"] = digest(data)
            layers[role] = add(data, **kwargs)
            if role == "consensus":
                if display is not None:
                    use_outline(layers[role], display)
                layers[role].contour = CONSENSUS_CONTOUR
            continue
        if display is not None:
            use_outline(existing, display)  # before the write and its refresh
        if undoable and existing.data.dtype == data.dtype:
            write_labels(existing, data)  # one undo step, shared with brush strokes
        elif existing.data is not data:
            existing.data = data
        else:
            existing.refresh()
        # Each transform change re-slices the layer (~30 ms here): only when it moved.
        if not _same(existing.scale, kwargs["scale"]):
            existing.scale = kwargs["scale"]
        if not _same(existing.translate, kwargs["translate"]):
            existing.translate = kwargs["translate"]
        marker = dict(kwargs["metadata"][META_KEY])
        if role == "consensus":
            # Edits on other slices of a volume stay "dirty" (unsaved) after a slice run.
            # (A 2D model write leaves exactly the worker's array: its digest is known.)
            marker["clean"] = existing.metadata[META_KEY].get("clean") \
                if was_dirty and z is not None \
                else display["digest"] if display is not None \
                and existing.data.dtype == display["consensus"].dtype \
                and np.array_equal(existing.data, display["consensus"]) \
                else digest(existing.data)
        existing.metadata = {**existing.metadata, META_KEY: marker}
        layers[role] = existing
    return layers


#: Per consensus layer: the worker's outline, its digest and width (see use_outline).
_OUTLINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def use_outline(layer: Any, display: dict[str, Any]) -> None:
    """Let napari's full refreshes of a 2D consensus labels layer use the outline computed
    in the worker (:func:`._layers.prepare_display`) while the layer holds exactly that
    content (same digest) at that contour width. Anything else (a partial refresh while
    painting, edited content, another width) is napari's own computation, as before.

    napari outlines the whole slice on the GUI thread at each full refresh (0.5-0.7 s for
    4000 x 3000 here): a new layer, a model write, a colormap change.
    """
    # The layer itself, not napari's PublicOnlyProxy of it (a plugin's private attribute
    # access through the proxy warns).
    layer = getattr(layer, "__wrapped__", layer)
    state = _OUTLINES.get(layer)
    if state is None:
        # napari's (private) per-layer outline hook, bound to this layer: where a napari
        # version lacks it, napari computes the outline itself, as before (slower, correct).
        compute = getattr(layer, "_calculate_contour", None)
        if not callable(compute):
            return
        state = {}

        def calculate(labels: Any, data_slice: tuple[slice, ...]) -> Any:
            pre = state.get("outline")
            whole = all((sl.start or 0) == 0 and sl.stop in (None, n) and sl.step in (None, 1)
                        for sl, n in zip(data_slice, np.shape(labels)))
            if (pre is not None and whole and np.shape(labels) == pre.shape
                    and layer.contour == state["thickness"]
                    and getattr(labels, "dtype", None) == pre.dtype
                    and digest(labels) == state["digest"]):
                return pre
            return compute(labels, data_slice)

        layer._calculate_contour = calculate
        _OUTLINES[layer] = state
    state.update(outline=display["outline"], digest=display["digest"],
                 thickness=CONSENSUS_CONTOUR)


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and np.allclose(a, b)


def _into_volume(existing: Any, data: np.ndarray, z: int, role: str, image_layer: Any
                 ) -> np.ndarray:
    """Write a one-slice map into the volume-shaped layer data (in place when it fits)."""
    depth = np.asarray(image_layer.data).shape[0]
    if role == "samples":  # (K, Y, X) -> (K, Z, Y, X)
        shape = (data.shape[0], depth, *data.shape[1:])
        target = existing.data if existing is not None and existing.data.shape == shape \
            else np.zeros(shape, data.dtype)
        target[:, z] = data
    else:  # (Y, X) -> (Z, Y, X)
        shape = (depth, *data.shape)
        target = existing.data if existing is not None and existing.data.shape == shape \
            else np.zeros(shape, data.dtype)
        target[z] = data
    return target


def set_clean(layer: Any) -> None:
    """Record the layer's current content as saved / model-written (not an edit)."""
    marker = dict(managed(layer) or {})
    marker["clean"] = digest(layer.data)
    layer.metadata = {**layer.metadata, META_KEY: marker}


def remove_image_layers(viewer: napari.viewer.Viewer, image: str,
                        groups: tuple[str, ...] | None = None) -> None:
    """Remove the plugin's layers of ``image`` (optionally of some groups only)."""
    for layer in list(viewer.layers):
        marker = managed(layer)
        if marker and marker.get("image") == image and (
                groups is None or marker.get("group") in groups):
            viewer.layers.remove(layer)


def refresh_image_combo(combo: Any, viewer: napari.viewer.Viewer) -> bool:
    """Fill ``combo`` with the viewer's own image layers (the plugin's result layers left out),
    keeping the current choice when it still exists, else choosing the newest image. Signals
    are blocked while filling. Returns whether the previous choice was kept."""
    import napari

    current = combo.currentText()
    names = [layer.name for layer in viewer.layers
             if isinstance(layer, napari.layers.Image) and managed(layer) is None]
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    keep = current in names
    if keep:
        combo.setCurrentText(current)
    elif names:
        combo.setCurrentIndex(len(names) - 1)
    combo.blockSignals(False)
    return keep


def write_labels(layer: Any, after: Any) -> int:
    """Write ``after`` into a labels layer *through napari's own edit history*, as one undo
    step; returns the number of pixels changed (0: nothing written, no step).

    Model outputs and accepted proposals go through here, so they share one history with
    the user's brush strokes: napari's Ctrl-Z / Ctrl-Shift-Z and the panels' Undo / Redo walk
    through all of them in order, and an undo never drops a later stroke. Only the changed
    pixels are recorded (one bounding box and mask per new label value), not whole copies.
    The layer's array is updated in place (same shape and dtype; ``after`` is cast).
    """
    data = layer.data
    after = np.asarray(after)
    if after.shape != data.shape:
        raise ValueError(f"shape {after.shape} does not match the layer's {data.shape}")
    after = after.astype(data.dtype, copy=False)
    changed = data != after
    count = int(changed.sum())
    if not count:
        return 0
    try:
        from napari.layers.labels.labels import _MaskedPaintAtom
    except ImportError:  # another napari: the public (larger) fancy-index record
        _MaskedPaintAtom = None
    with layer.block_history():  # one undo step for the whole write
        for value in np.unique(after[changed]):
            where = changed & (after == value)
            if _MaskedPaintAtom is None:
                layer.data_setitem(np.nonzero(where), value, refresh=False)
                continue
            key = _bounding_box(where)  # np.nonzero of a 12-Mpx mask took ~40 ms here
            mask = where[key]
            layer._save_history(_MaskedPaintAtom(key, mask, np.array(data[key][mask]),
                                                 int(value)))
            region = np.asarray(data[key])
            region[mask] = value
            data[key] = region
    layer.refresh()
    return count


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The slices of the smallest box holding every True pixel of a non-empty mask."""
    key = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        key.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(key)


def can_undo(layer: Any) -> bool:
    """Whether napari's history of a labels layer has a step to undo."""
    return bool(getattr(layer, "_undo_history", None))


def can_redo(layer: Any) -> bool:
    """Whether napari's history of a labels layer has a step to redo."""
    return bool(getattr(layer, "_redo_history", None))
