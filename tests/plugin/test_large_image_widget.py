"""A large image in the Segment and Correct panels: the maps are computed at a working shape
and upsampled, the status line says so, the hidden samples layer is scaled over the image,
and a correction started from a sample has the image's shape."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import resize

from tests.plugin.conftest import wait_idle, wait_ready

pytestmark = pytest.mark.gui


def test_a_large_image_is_segmented_at_a_working_shape_and_says_so(
        viewer, ph2_image, qtbot) -> None:
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    shape = (2100, 2800)
    large = (resize(ph2_image, shape, order=1, preserve_range=True, anti_aliasing=False)
             .round().astype(np.uint8))
    viewer.add_image(large, name="big", rgb=True)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    wait_ready(qtbot, seg.picker)
    seg.samples_spin.setValue(2)
    seg.samples_layer_check.setChecked(True)
    seg.run()
    wait_idle(qtbot, seg)
    text = seg.status.text()
    assert text.startswith("done") and "large image" in text and "512x384" in text
    layers = seg.last_layers
    assert layers["consensus"].data.shape == shape and layers["uncertainty"].data.shape == shape
    samples = layers["samples"]
    assert samples.data.shape == (2, 384, 512)
    # Scaled over the image: the samples layer covers the same world extent.
    np.testing.assert_allclose(samples.scale[1:], [shape[0] / 384, shape[1] / 512])
    # Pixel edges line up: the samples' outer edges are the image's (-0.5 .. N - 0.5).
    first = np.asarray(samples.data_to_world([0, -0.5, -0.5]))[-2:]
    last = np.asarray(samples.data_to_world([0, 384 - 0.5, 512 - 0.5]))[-2:]
    np.testing.assert_allclose(first, [-0.5, -0.5], atol=1e-6)
    np.testing.assert_allclose(last, [shape[0] - 0.5, shape[1] - 0.5], atol=1e-6)

    correct = CorrectionWidget(viewer, autoload_sam=False)
    viewer.window.add_dock_widget(correct)
    correct.image_combo.setCurrentText("big")
    correct.source_combo.setCurrentText("sample")
    correct.sample_spin.setValue(1)
    proposal = correct.start()
    assert proposal.data.shape == shape and proposal.data.any()


def test_a_large_consensus_outline_comes_from_the_worker_and_matches_napari(
        viewer, ph2_image, qtbot, monkeypatch) -> None:
    """napari outlines a labels layer on the GUI thread at every full refresh (0.5-0.7 s at
    4000 x 3000 here); the Segment run computes it in its worker instead. What is drawn
    must be napari's own outline, every layer must line up with the image, and an edit
    must fall back to napari's computation."""
    import napari.layers.labels.labels as napari_labels

    from napari_lesion_diffkd.plugin._layers import CONSENSUS_CONTOUR
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    shape = (1500, 2000)
    large = (resize(ph2_image, shape, order=1, preserve_range=True, anti_aliasing=False)
             .round().astype(np.uint8))
    image = viewer.add_image(large, name="big", rgb=True, scale=(0.5, 0.5),
                             translate=(10.0, -4.0))
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    wait_ready(qtbot, seg.picker)
    whole: list[tuple[int, ...]] = []  # napari's own outlines of the whole image
    original = napari_labels.get_contours

    def counting(labels, thickness, background):
        if labels.shape == shape:
            whole.append(labels.shape)
        return original(labels, thickness, background)

    monkeypatch.setattr(napari_labels, "get_contours", counting)
    seg.samples_spin.setValue(2)
    seg.samples_layer_check.setChecked(True)
    for seed in (0, 1):  # a new layer, then a model write into it
        seg.seed_spin.setValue(seed)
        seg.run()
        wait_idle(qtbot, seg)
        assert seg.status.text().startswith("done"), seg.status.text()
    consensus = seg.last_layers["consensus"]
    assert whole == []  # never outlined on the GUI thread
    full = tuple(slice(0, n) for n in shape)
    drawn = consensus._calculate_contour(consensus.data, full)
    np.testing.assert_array_equal(drawn, original(consensus.data, CONSENSUS_CONTOUR, 0))
    assert drawn.any() and consensus.data.shape == shape  # full size, the one to save
    # Every result layer covers the image's world extent, pixel edge to pixel edge (the
    # samples at their working shape, scaled): they line up with the image.
    for layer in seg.last_layers.values():
        np.testing.assert_allclose(_edges(layer), _edges(image), atol=1e-6)
    # An edit: napari's own outline again (the precomputed one no longer matches).
    consensus.data_setitem((np.array([5]), np.array([7])), 1)
    consensus.refresh()
    assert whole and set(whole) == {shape}
    np.testing.assert_array_equal(consensus._calculate_contour(consensus.data, full),
                                  original(consensus.data, CONSENSUS_CONTOUR, 0))


def _edges(layer) -> np.ndarray:
    """World (y, x) of a 2D (or (K, y, x)) layer's outer pixel edges: [[top, left],
    [bottom, right]]."""
    shape = np.asarray(layer.data.shape[-2:] if not getattr(layer, "rgb", False)
                       else layer.data.shape[-3:-1])
    lead = [0] * (layer.ndim - 2)
    first = layer.data_to_world(lead + [-0.5, -0.5])
    last = layer.data_to_world(lead + list(shape - 0.5))
    return np.asarray([first[-2:], last[-2:]], float)
