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
