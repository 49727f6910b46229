"""One edit history for the label layer: accepted proposals, model outputs and the user's
brush strokes are steps of napari's own labels history, so Undo / Redo (the panel's and
napari's Ctrl-Z) walk through them in order and never drop a stroke."""

from __future__ import annotations

import numpy as np
import pytest

from tests.plugin.conftest import wait_idle, wait_ready

pytestmark = pytest.mark.gui


def _square(shape, r0, r1, c0, c1) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


def test_undo_accept_keeps_brush_strokes_made_after_it(viewer, ph2_image) -> None:
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    w = CorrectionWidget(viewer, autoload_sam=False)
    viewer.window.add_dock_widget(w)
    shape = ph2_image.shape[:2]
    w.source_combo.setCurrentText("empty")
    proposal = w.start()
    proposal.data = _square(shape, 50, 150, 60, 160)
    target = w.accept()
    accepted = np.array(target.data)
    assert accepted.sum() == 100 * 100 and w.undo_button.isEnabled()

    # A brush stroke on the label layer after the accept (as napari's paint tool does).
    target.brush_size = 5
    target.selected_label = 1
    target.paint((300, 300), 1)
    stroked = np.array(target.data)
    assert stroked.sum() > accepted.sum()

    w.undo()  # first the stroke ...
    np.testing.assert_array_equal(target.data, accepted)
    w.undo()  # ... then the accept
    assert not target.data.any() and not w.undo_button.isEnabled()
    w.redo()
    np.testing.assert_array_equal(target.data, accepted)
    w.redo()  # the stroke comes back: nothing was dropped
    np.testing.assert_array_equal(target.data, stroked)
    assert not w.redo_button.isEnabled()

    # napari's own Ctrl-Z is the same history.
    target.undo()
    np.testing.assert_array_equal(target.data, accepted)
    target.undo()
    assert not target.data.any()
    target.redo()
    target.redo()
    np.testing.assert_array_equal(target.data, stroked)

    # A second accept on top of the stroke is one more step; undo gives the stroke back.
    proposal = w.start()
    proposal.data = _square(shape, 200, 260, 200, 260)
    w.accept()
    w.undo()
    np.testing.assert_array_equal(target.data, stroked)


def test_a_rerun_of_the_model_is_one_undo_step_of_the_edited_consensus(
        viewer, ph2_image, qtbot) -> None:
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    wait_ready(qtbot, seg.picker)
    seg.samples_spin.setValue(2)
    seg.run()
    wait_idle(qtbot, seg)
    consensus = seg.last_layers["consensus"]
    first = np.array(consensus.data)
    consensus.brush_size = 9
    consensus.paint((10, 10), 1)  # the user's edit of the model output
    edited = np.array(consensus.data)
    seg.seed_spin.setValue(seg.seed_spin.value() + 7)
    seg.samples_spin.setValue(3)
    seg.run()
    wait_idle(qtbot, seg)
    assert seg.last_layers["consensus"] is consensus
    second = np.array(consensus.data)
    assert not np.array_equal(second, edited)
    consensus.undo()  # the re-run ...
    np.testing.assert_array_equal(consensus.data, edited)
    consensus.undo()  # ... then the stroke
    np.testing.assert_array_equal(consensus.data, first)
    consensus.redo()
    consensus.redo()
    np.testing.assert_array_equal(consensus.data, second)
