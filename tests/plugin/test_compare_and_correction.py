"""The "Compare teacher / student" and "Correct segmentation" dock widgets on a PH2 image."""

from __future__ import annotations

import numpy as np
import pytest

from tests.plugin.conftest import STUDENT, TEACHER, wait_idle, wait_ready

pytestmark = pytest.mark.gui


def test_compare_side_by_side_dice_latency_params(viewer, ph2_image, qtbot) -> None:
    from napari_lesion_diffkd.plugin.compare_widget import CompareWidget, viewer_grid

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    mine = viewer.add_labels(np.zeros(ph2_image.shape[:2], np.uint8), name="my labels")
    w = CompareWidget(viewer)
    viewer.window.add_dock_widget(w)
    wait_ready(qtbot, w.teacher_picker, w.student_picker)
    assert w.teacher_picker.current().label == TEACHER
    assert w.student_picker.current().label == STUDENT
    w.samples_spin.setValue(3)
    w.run()
    wait_idle(qtbot, w)
    result = w.last_result
    assert [r.label for r in result.runs] == [TEACHER, STUDENT]
    assert 0.8 < result.dice <= 1.0 and f"{result.dice:.3f}" in w.dice_label.text()
    assert w.table.verticalHeaderItem(0).text() == TEACHER
    assert w.table.item(0, 0).text() == "3.06 M" and w.table.item(1, 0).text() == "0.28 M"
    assert all(r.seconds > 0 for r in result.runs)
    assert all(w.table.item(i, 1).text().endswith(" s") for i in range(2))
    # Each model was warmed up once after loading: its latency is the steady-state one.
    assert all(r.warmup_seconds > 0 and r.load_seconds > 0 for r in result.runs)
    for tag in "TS":
        for role in ("view", "uncertainty", "consensus", "caption"):
            assert f"{tag}: {role} \u00b7 lesion" in viewer.layers
    # Captions name each cell's role and model.
    for role, model in (("teacher", TEACHER), ("student", STUDENT)):
        caption = viewer.layers[f"{role[0].upper()}: caption \u00b7 lesion"]
        assert caption.text.values[0].startswith(f"{role}: {model}")
        assert caption.metadata["lesion_diffkd"]["model"] == model
    # Grid: one cell per model (view, uncertainty, consensus, caption), all else hidden.
    grid = viewer_grid(viewer)
    assert grid.enabled and grid.stride == 4 and grid.actual_shape(viewer.layers) == (1, 2)
    assert not mine.visible and not viewer.layers["lesion"].visible
    assert grid.position(viewer.layers.index("S: consensus \u00b7 lesion"),
                         viewer.layers) == (0, 1)
    # The camera shows the whole image in each cell (reset, not the earlier zoomed crop).
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    zoom_fit = camera.zoom
    camera.zoom = zoom_fit * 8
    w.run()  # a re-run reuses its layers
    wait_idle(qtbot, w)
    n_layers = len(viewer.layers)
    assert np.isclose(camera.zoom, zoom_fit, rtol=0.05)
    assert all(r.warmup_seconds == 0 and r.load_seconds == 0 for r in w.last_result.runs)
    assert w.table.item(0, 2).text() == "cached"
    w.run()
    wait_idle(qtbot, w)
    assert len(viewer.layers) == n_layers
    w.grid_check.setChecked(False)
    assert not grid.enabled and mine.visible and viewer.layers["lesion"].visible
    # Grid off: only the student's overlays stay on the image; no views, no captions.
    for role in ("view", "uncertainty", "consensus", "caption"):
        assert not viewer.layers[f"T: {role} \u00b7 lesion"].visible
        assert viewer.layers[f"S: {role} \u00b7 lesion"].visible == (
            role in ("uncertainty", "consensus"))


class Dilate:
    """A stand-in prompt backend: grows the start mask around positive clicks' rows."""

    name = "dilate (test)"

    def __init__(self) -> None:
        self.requests = []

    def propose(self, request):
        from scipy.ndimage import binary_dilation

        self.requests.append(request)
        return binary_dilation(request.start, iterations=3)


def test_correction_start_accept_reject_undo_redo_and_hook(viewer, ph2_image, qtbot) -> None:
    from napari_lesion_diffkd.plugin._layers import META_KEY
    from napari_lesion_diffkd.plugin.correction_widget import NO_BACKEND, CorrectionWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    seg = SegmentWidget(viewer)
    wait_ready(qtbot, seg.picker)
    seg.samples_spin.setValue(3)
    seg.run()
    wait_idle(qtbot, seg)
    consensus = seg.last_layers["consensus"]
    # A 2D image's samples ride on the consensus layer: no (K, Y, X) layer, no K slider.
    assert "samples" not in seg.last_layers and viewer.dims.ndim == 2
    samples = consensus.metadata[META_KEY]["samples"]
    w = CorrectionWidget(viewer, autoload_sam=False)  # a stand-in backend below, not SAM
    viewer.window.add_dock_widget(w)
    assert w.backend_label.text() == NO_BACKEND and not w.refine_button.isEnabled()

    w.source_combo.setCurrentText("sample")
    w.sample_spin.setValue(2)
    proposal = w.start()
    np.testing.assert_array_equal(proposal.data, samples[1])
    w.source_combo.setCurrentText("empty")
    assert w.start() is proposal and not proposal.data.any()
    w.sample_spin.setValue(9)
    w.source_combo.setCurrentText("sample")
    w.start()
    assert "sample 9 does not exist" in w.status.text()

    w.source_combo.setCurrentText("consensus")
    w.start()
    proposal.brush_size = 1
    proposal.paint((5, 5), 1)  # the proposal is a normal labels layer: brush works
    target = w.accept()
    assert target.name == "lesion label" and "lesion proposal" not in viewer.layers
    expected = np.array(consensus.data)
    expected[5, 5] = 1
    np.testing.assert_array_equal(target.data, expected)
    w.start()
    w.reject()
    np.testing.assert_array_equal(target.data, expected)  # reject changes nothing
    w.undo()
    assert not target.data.any() and w.redo_button.isEnabled()
    w.redo()
    np.testing.assert_array_equal(target.data, expected)

    # The prompt hook: clicks and the proposal go to the backend in a worker thread.
    backend = Dilate()
    w.set_backend(backend)
    assert w.refine_button.isEnabled() and backend.name in w.backend_label.text()
    proposal = w.start()
    prompts = viewer.layers["lesion prompts"]
    prompts.add([[100.0, 120.0]])
    w.negative_check.setChecked(True)
    prompts.add([[10.0, 10.0]])
    w.refine()
    wait_idle(qtbot, w)
    [request] = backend.requests
    np.testing.assert_array_equal(request.points, [[100, 120], [10, 10]])
    np.testing.assert_array_equal(request.point_labels, [1, 0])
    assert request.image.shape == ph2_image.shape and request.key == ("lesion", None)
    assert proposal.data.sum() > consensus.data.sum()
    w.accept()
    assert target.metadata[META_KEY]["save_kind"] == "sam-assisted"


def _shown_whole(viewer, layer) -> bool:
    """Whether napari's layer list shows ``layer``'s name without eliding it (its delegate
    elides in the middle; text rect as the item view lays the row out)."""
    from napari._qt.containers._base_item_model import ItemRole
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QStyle, QStyleOptionViewItem

    view = viewer.window._qt_viewer.layers
    model = view.model()
    index = next(model.index(row, 0) for row in range(model.rowCount())
                 if model.index(row, 0).data(ItemRole) is layer)
    option = QStyleOptionViewItem()
    option.rect = view.visualRect(index)
    view.itemDelegate().initStyleOption(option, index)
    view.itemDelegate().get_layer_icon(option, index)
    text = view.style().subElementRect(QStyle.SubElement.SE_ItemViewItemText, option, view)
    return option.fontMetrics.elidedText(
        layer.name, Qt.TextElideMode.ElideMiddle, text.width()) == layer.name


def test_compare_layer_names_are_short_unique_and_shown_whole_at_1366x768(
        make_napari_viewer, ph2_image, qtbot) -> None:
    viewer = make_napari_viewer(show=True)  # shown, as a user's: docks lay out for real
    viewer.window._qt_window.resize(1366, 768)
    viewer.add_image(ph2_image, name="lesion", rgb=True)
    _, w = viewer.window.add_plugin_dock_widget("napari-lesion-diffkd",
                                                "Compare teacher / student")
    wait_ready(qtbot, w.teacher_picker, w.student_picker)
    # The former name pattern is cut off in this layer list (the check can fail).
    old = viewer.add_labels(np.zeros((4, 4), np.uint8), name=f"lesion [{TEACHER}] consensus")
    qtbot.wait(100)
    assert not _shown_whole(viewer, old)
    viewer.layers.remove(old)
    w.samples_spin.setValue(2)
    w.run()
    wait_idle(qtbot, w)
    ours = [layer for layer in viewer.layers
            if (layer.metadata.get("lesion_diffkd") or {}).get("group") == "compare"]
    names = [layer.name for layer in ours]
    assert len(ours) == 8 and len(set(names)) == 8, names
    assert all(_shown_whole(viewer, layer) for layer in ours), names
    # Each name says whose it is: T (teacher) or S (student), as the marker.
    for layer in ours:
        model = layer.metadata["lesion_diffkd"]["model"]
        assert layer.name.startswith("T: " if model == TEACHER else "S: ")
    # Compared again with the roles swapped: each role's layers are reused for the model
    # now in it (no second set under the same names).
    assert w.teacher_picker.select(STUDENT) and w.student_picker.select(TEACHER)
    w.run()
    wait_idle(qtbot, w)
    assert [layer.name for layer in viewer.layers if layer.name != "lesion"] == names
    assert viewer.layers["S: consensus \u00b7 lesion"].metadata["lesion_diffkd"]["model"] \
        == TEACHER
    caption = viewer.layers["S: caption \u00b7 lesion"]
    assert caption.text.values[0] == f"student: {TEACHER}"
