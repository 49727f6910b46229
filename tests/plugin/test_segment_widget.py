"""The "Lesion segmentation" dock widget on real images with the shipped models: picker,
presets, run / re-run / cancel, STAPLE table, slices and volumes, errors (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imread

from tests.plugin.conftest import STUDENT, TEACHER, wait_idle, wait_ready

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(viewer, ph2_image, qtbot):
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    wait_ready(qtbot, w.picker)
    return w


def test_picker_lists_modality_models_with_role_params_and_devices(widget) -> None:
    import torch

    assert widget.image_combo.currentText() == "lesion"
    # An RGB image is dermoscopy: its preset shows dermoscopy models, the student first.
    assert set(widget.picker.labels()) == {STUDENT, TEACHER, "dermoscopy-unet"}
    assert widget.model_combo.currentText() == STUDENT
    assert "student" in widget.model_info.text() and "0.28M params" in widget.model_info.text()
    devices = widget.device_combo.model()
    enabled = {devices.item(i).text(): devices.item(i).isEnabled() for i in range(4)}
    assert enabled["auto"] and enabled["cpu"] and enabled["cuda"] == torch.cuda.is_available()
    widget.picker.all_check.setChecked(True)
    assert {"ultrasound-teacher", "ct-unet"} <= set(widget.picker.labels())
    # A one-step student has no step count; a DDIM teacher has.
    assert not widget.steps_spin.isEnabled()
    assert widget.select_model(TEACHER) and widget.steps_spin.isEnabled()
    assert widget.select_model("dermoscopy-unet") and not widget.samples_spin.isEnabled()


def test_run_rerun_replaces_only_model_layers(widget, qtbot) -> None:
    viewer = widget.viewer
    h, w = viewer.layers["lesion"].data.shape[:2]
    # A user's own layer that happens to carry a result layer's name is never touched.
    mine = viewer.add_labels(np.zeros((h, w), np.uint8), name="lesion consensus")
    widget.samples_layer_check.setChecked(True)  # a 2D image's samples layer, on request
    widget.samples_spin.setValue(4)
    widget.run()
    assert widget.worker is not None and widget.cancel_button.isEnabled()
    wait_idle(qtbot, widget)
    layers = widget.last_layers
    assert layers["samples"].data.shape == (4, h, w) and not layers["samples"].visible
    assert layers["uncertainty"].colormap.name == "magma"
    assert layers["uncertainty"].data.shape == (h, w)
    consensus = layers["consensus"]
    assert consensus is not mine and consensus.editable
    assert set(np.unique(consensus.data)) <= {0, 1} and consensus.data.mean() > 0.05
    assert len(widget.staple_table.values()) == 4
    assert all(0.8 < s <= 1 and 0.8 < p <= 1 for s, p in widget.staple_table.values())
    assert "done in" in widget.status.text()

    n_layers = len(viewer.layers)
    widget.select_model(TEACHER)
    widget.samples_spin.setValue(2)
    widget.steps_spin.setValue(2)
    widget.run()
    wait_idle(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert widget.last_layers["consensus"] is consensus  # updated in place
    assert consensus.data.shape == (h, w) and layers["samples"].data.shape == (2, h, w)
    assert widget.last_result.settings["sampler"]["num_steps"] == 2
    assert not mine.data.any()


def test_cancel_closes_the_generator_and_changes_no_layer(widget, qtbot, monkeypatch) -> None:
    from napari_lesion_diffkd.core import segmenter

    closed = []
    original = segmenter.segment_image

    def slow(bundle, image, **kwargs):  # the teacher with DDPM: 250 network calls
        gen = original(bundle, image, **{**kwargs, "sampler": "ddpm", "num_steps": None})
        try:
            return (yield from gen)
        finally:
            closed.append(True)

    monkeypatch.setattr(segmenter, "segment_image", slow)
    viewer = widget.viewer
    n_layers = len(viewer.layers)
    widget.select_model(TEACHER)
    widget.samples_spin.setValue(2)
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() >= 2, timeout=30_000)
    widget.cancel()
    wait_idle(qtbot, widget)
    assert "cancelled" in widget.status.text() and closed == [True]
    assert widget.progress.maximum() == 1 and len(viewer.layers) == n_layers
    assert widget.run_button.isEnabled()


def test_errors_are_shown_not_raised(widget, qtbot, bundle_copy, tmp_path) -> None:
    widget.viewer.layers.remove("lesion")
    widget.run()
    assert "select an image layer" in widget.status.text() and widget.worker is None
    widget.viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="lesion", rgb=True)

    (tmp_path / "not-a-bundle").mkdir()
    with pytest.raises(Exception, match="not a model bundle"):
        widget.picker.add_folder(str(tmp_path / "not-a-bundle"))
    entry = widget.picker.add_folder(str(bundle_copy))  # "Add checkpoint..."
    assert widget.model_combo.currentText() == "my-student" and entry.source == "folder"
    # A device the machine lacks is refused in the worker with a message.
    widget.device_combo.setCurrentText("mps")
    widget.run()
    wait_idle(qtbot, widget)
    assert "error: device 'mps' requested" in widget.status.text()


def test_volume_slice_and_whole_volume(widget, qtbot, ct_pairs) -> None:
    viewer = widget.viewer
    volume = np.stack([imread(p) for p, _ in ct_pairs[:3]])
    layer = viewer.add_image(volume, name="ct", metadata={"modality": "CT",
                                                         "spacing": (2.5, 0.7, 0.7)})
    widget.select_image("ct")
    # The CT preset: spacing as layer scale, the CT model, no window for 8-bit PNG data.
    assert tuple(layer.scale) == pytest.approx((2.5, 0.7, 0.7))
    assert widget.model_combo.currentText() == "ct-student"
    assert not widget.form.window_combo.isVisible()
    assert [widget.scope_combo.itemText(i) for i in range(2)] == ["current slice",
                                                                "whole volume"]
    viewer.dims.set_point(0, 2 * 2.5)  # the third slice, in world units
    widget.run()
    wait_idle(qtbot, widget)
    consensus = widget.last_layers["consensus"]
    assert consensus.data.shape == volume.shape
    np.testing.assert_allclose(consensus.scale, (2.5, 0.7, 0.7))
    assert consensus.data[2].any() and not consensus.data[:2].any()

    widget.scope_combo.setCurrentText("whole volume")
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.last_layers["consensus"] is consensus
    # the CT student's K samples per slice, stacked as (K, Z, Y, X)
    assert widget.last_layers["samples"].data.shape == (widget.samples_spin.value(),
                                                        *volume.shape)
    assert consensus.data[0].any() or consensus.data[1].any()


def test_ct_hu_preset_window_and_ultrasound_preset(widget, qtbot, busbra_pairs) -> None:
    viewer = widget.viewer
    hu = np.full((64, 64), -1000.0, np.float32)
    hu[20:40, 20:40] = 40.0
    viewer.add_image(hu, name="hu", metadata={"modality": "CT"})
    widget.select_image("hu")
    assert widget.form.window_combo.isVisibleTo(widget)
    assert widget.form.window_combo.currentText() == "lung"
    assert tuple(viewer.layers["hu"].contrast_limits) == pytest.approx((-1350.0, 150.0))
    widget.form.window_combo.setCurrentText("soft_tissue")
    assert tuple(viewer.layers["hu"].contrast_limits) == pytest.approx((-160.0, 240.0))

    viewer.add_image(imread(busbra_pairs[0][0]), name="us", metadata={"modality": "US"})
    widget.select_image("us")
    assert not widget.form.window_combo.isVisibleTo(widget)
    assert set(widget.picker.labels()) == {"ultrasound-student", "ultrasound-teacher",
                                           "ultrasound-unet"}
    assert widget.model_combo.currentText() == "ultrasound-student"  # the fast default


def test_backend_combo_runs_onnxruntime_with_the_same_masks(widget, qtbot, monkeypatch,
                                                           tmp_path) -> None:
    """torch and ONNX Runtime, same seed: the same K samples and consensus on a real PH2
    image; the ONNX file is exported into the cache on first use, once."""
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "cache"))
    assert [widget.backend_combo.itemText(i) for i in range(widget.backend_combo.count())] \
        == ["torch", "onnxruntime"]
    widget.samples_spin.setValue(4)
    widget.seed_spin.setValue(5)
    widget.run()
    wait_idle(qtbot, widget)
    torch_result = widget.last_result
    assert torch_result.settings["backend"] == "torch"

    widget.backend_combo.setCurrentText("onnxruntime")
    assert not widget.device_combo.isEnabled()  # ONNX Runtime runs on the CPU
    assert widget.form.request().backend == "onnxruntime"
    widget.run()
    wait_idle(qtbot, widget)
    onnx_result = widget.last_result
    assert onnx_result.settings["backend"] == "onnxruntime", widget.status.text()
    files = list((tmp_path / "cache" / "onnx").glob(f"{STUDENT}-*.onnx"))
    assert len(files) == 1
    np.testing.assert_array_equal(onnx_result.samples, torch_result.samples)
    np.testing.assert_array_equal(onnx_result.consensus, torch_result.consensus)
    np.testing.assert_allclose(onnx_result.uncertainty, torch_result.uncertainty, atol=1e-4)
    assert widget.last_layers["consensus"].data.any()
    widget.backend_combo.setCurrentText("torch")
    assert widget.device_combo.isEnabled()
