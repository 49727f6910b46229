"""The "Lesion segmentation" dock widget: run, re-run, cancel, bad input (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imread

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(make_napari_viewer, tiny_bundle, monkeypatch, ph2_pairs):
    monkeypatch.setenv("NAPARI_LESION_DIFFKD_MODELS", str(tiny_bundle.parent))
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(imread(ph2_pairs[0][0]), name="lesion", rgb=True)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_combo.setCurrentText("tiny-dermoscopy")
    return w


def _wait_idle(qtbot, w, timeout=60_000) -> None:
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)


def test_widget_lists_images_and_models(widget) -> None:
    assert widget.image_combo.currentText() == "lesion"
    models = [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]
    assert models[0] == "dermoscopy-teacher" and "tiny-dermoscopy" in models
    assert "params" in widget.model_info.text()


def test_run_adds_samples_uncertainty_and_editable_consensus(widget, qtbot) -> None:
    viewer = widget.viewer
    widget.samples_spin.setValue(3)
    widget.run()
    assert widget.worker is not None and widget.cancel_button.isEnabled()
    _wait_idle(qtbot, widget)
    h, w = viewer.layers["lesion"].data.shape[:2]
    assert viewer.layers["lesion samples"].data.shape == (3, h, w)
    assert viewer.layers["lesion uncertainty"].data.shape == (h, w)
    consensus = viewer.layers["lesion consensus"]
    assert consensus.__class__.__name__ == "Labels" and consensus.editable
    assert set(np.unique(consensus.data)) <= {0, 1}
    assert "STAPLE sensitivity" in widget.status.text()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    # Re-running updates the result layers in place and leaves user layers alone.
    viewer.add_labels(np.zeros((h, w), np.uint8), name="my labels")
    n_layers = len(viewer.layers)
    widget.samples_spin.setValue(2)
    widget.run()
    _wait_idle(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["lesion samples"].data.shape == (2, h, w)
    assert not viewer.layers["my labels"].data.any()


def test_cancel_stops_between_steps_and_changes_no_layer(widget, qtbot, monkeypatch) -> None:
    viewer = widget.viewer
    n_layers = len(viewer.layers)
    from napari_lesion_diffkd.core import segmenter

    original = segmenter.build_bundle_sampler
    monkeypatch.setattr(  # the slowest sampler: one network call per timestep
        segmenter, "build_bundle_sampler", lambda b, s, n: original(b, "ddpm", None)
    )
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.maximum() == 50, timeout=30_000)
    widget.cancel()
    _wait_idle(qtbot, widget)
    assert "cancelled" in widget.status.text()
    assert len(viewer.layers) == n_layers
    assert widget.run_button.isEnabled()


def test_no_image_layer_is_reported_not_raised(make_napari_viewer) -> None:
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    w = SegmentWidget(make_napari_viewer())
    w.run()
    assert "select an image layer" in w.status.text() and w.worker is None


def test_errors_in_the_worker_are_shown(widget, qtbot) -> None:
    widget.model_combo.addItem("missing-model")
    widget.model_combo.setCurrentText("missing-model")
    widget.run()
    _wait_idle(qtbot, widget)
    assert "unknown model 'missing-model'" in widget.status.text()


def test_volume_segments_the_current_slice(widget, qtbot, ct_pairs) -> None:
    viewer = widget.viewer
    volume = np.stack([imread(p) for p, _ in ct_pairs[:3]])
    viewer.add_image(volume, name="ct", scale=(2.5, 0.7, 0.7))
    viewer.dims.set_current_step(0, 2)
    widget.image_combo.setCurrentText("ct")
    widget.samples_spin.setValue(2)
    widget.run()
    _wait_idle(qtbot, widget)
    consensus = viewer.layers["ct consensus"]
    assert consensus.data.shape == (1, *volume.shape[1:])
    assert consensus.translate[0] == pytest.approx(2 * 2.5)
