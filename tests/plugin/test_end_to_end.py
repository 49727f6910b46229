"""The whole app on real PH2 images held out from every shipped model's training (the
validation split of the dermoscopy models and of lesion-sam-tiny): open an image from a
project -> segment with the shipped student (K = 4) -> correct it with a SAM box prompt
(lesion-sam-tiny, box from the true lesion) -> accept -> save -> fine-tune the shipped
teacher for one epoch in a job process -> the new version is selectable in the pickers ->
compare it with the student."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

from tests.plugin.conftest import STUDENT, TEACHER, wait_idle, wait_ready

pytestmark = pytest.mark.gui

HELD_OUT = ("IMD009", "IMD018", "IMD027", "IMD090", "IMD126", "IMD132")


@pytest.fixture(autouse=True)
def _lesion_sam_tiny_default(monkeypatch):
    """These tests are written for lesion-sam-tiny (the default before medsam-lite, which
    tests/plugin/test_medsam_correction.py covers)."""
    monkeypatch.setenv("LESION_DIFFKD_SAM", "lesion-sam-tiny")


@pytest.fixture
def ph2_held_out(tmp_path, data_root) -> Path:
    """A dataset folder with six held-out PH2 pairs (symlinks) and their metadata rows."""
    src, dst = data_root / "ph2_dermoscopy", tmp_path / "ph2_held_out"
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    for name in HELD_OUT:
        image = next((src / "images").glob(f"{name}.*"))
        (dst / "images" / image.name).symlink_to(image)
        (dst / "masks" / f"{name}.png").symlink_to(src / "masks" / f"{name}.png")
    (dst / "metadata.csv").write_text("id,group\n" + "".join(f"{i},{i}\n" for i in HELD_OUT))
    return dst


def box_around(mask: np.ndarray, margin: int = 5) -> np.ndarray:
    """(4, 2) napari rectangle (row, col) around a mask's lesion, ``margin`` px out."""
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min() - margin, rows.max() + margin, cols.min() - margin, \
        cols.max() + margin
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_open_segment_sam_correct_save_finetune_pick_compare(viewer, qtbot, tmp_path,
                                                             ph2_held_out) -> None:
    from napari_lesion_diffkd.plugin._layers import META_KEY
    from napari_lesion_diffkd.plugin.compare_widget import CompareWidget, viewer_grid
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget
    from napari_lesion_diffkd.plugin.project_widget import ProjectWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    project, seg = ProjectWidget(viewer), SegmentWidget(viewer)
    correct, jobs, compare = CorrectionWidget(viewer), JobsWidget(viewer), CompareWidget(viewer)
    for w in (project, seg, correct, jobs, compare):
        viewer.window.add_dock_widget(w)
    wait_ready(qtbot, seg.picker, jobs.form.picker, compare.teacher_picker)

    # Open: a project with the six labelled held-out images; Next opens the first one.
    project.open_project(tmp_path / "project")
    project.modality_combo.setCurrentText("dermoscopy")
    project.import_paths([str(ph2_held_out)])
    wait_idle(qtbot, project)
    project.next_image()
    wait_idle(qtbot, project)
    name = project.current["name"]
    assert seg.image_combo.currentText() == name  # the Segment widget follows the panel
    truth = imread(ph2_held_out / "masks" / f"{name}.png") > 127

    # Segment with the student, K = 4.
    assert seg.select_model(STUDENT)
    seg.samples_spin.setValue(4)
    seg.run()
    wait_idle(qtbot, seg)
    consensus = seg.last_layers["consensus"]
    assert seg.last_result.samples.shape[0] == 4

    # Correct with SAM: start from the consensus, draw a box around the true lesion; the
    # proposal follows live (lesion-sam-tiny, the default prompt model).
    qtbot.waitUntil(lambda: correct.backend is not None, timeout=60_000)
    assert "lesion-sam-tiny" in correct.backend.name
    assert correct.image_combo.currentText() == name
    correct.source_combo.setCurrentText("consensus")
    proposal = correct.start()
    np.testing.assert_array_equal(proposal.data, consensus.data > 0)
    viewer.layers[f"{name} box"].add_rectangles(box_around(truth))
    qtbot.waitUntil(lambda: correct.proposals == 1 and not correct.is_busy, timeout=30_000)
    sam_mask = np.array(proposal.data)
    print(f"{name}: consensus Dice {dice(consensus.data, truth):.3f}, "
          f"SAM box Dice {dice(sam_mask, truth):.3f}")
    assert dice(sam_mask, truth) > 0.85
    label = viewer.layers[f"{name} label"]  # the project's label layer: its stored label
    before = np.array(label.data)
    target = correct.accept()
    assert target is label
    np.testing.assert_array_equal(target.data > 0, sam_mask > 0)
    assert target.metadata[META_KEY]["save_kind"] == "sam-assisted"
    correct.undo()
    np.testing.assert_array_equal(target.data, before)
    correct.redo()
    np.testing.assert_array_equal(target.data > 0, sam_mask > 0)

    # Save: the accepted SAM mask is the image's current label, kind sam-assisted.
    assert project.source_layer() is target
    version = project.save().result(30)
    store = project.context.store
    assert version.kind == "sam-assisted" and store.current_label(name).id == version.id
    np.testing.assert_array_equal(store.read_label(version) > 0, sam_mask > 0)

    # Fine-tune the teacher on the project's labels for one epoch (6 images, batch 3).
    form = jobs.form
    form.kind_combo.setCurrentText("fine-tune")
    assert form.picker.select(TEACHER)
    form.steps_spin.setValue(2)
    form.threads_spin.setValue(1)
    form.overrides_edit.setText("batch_size: 3, val_samples: 2, val_steps: 1")
    job = jobs.launch()
    qtbot.waitUntil(lambda: jobs.jobs[job.id].status not in ("queued", "running"),
                    timeout=150_000)
    done = jobs.jobs[job.id]
    assert done.status == "done", done.error
    new_model = f"{TEACHER}@v1"
    assert done.result["model"] == new_model and new_model in jobs.status.text()
    assert jobs.plot.series["val Dice"] and "registered" in jobs.log_view.toPlainText()
    # It trained on the SAM-corrected label: the job's exported mask is the saved one.
    exported = imread(store.root / "jobs" / str(job.id) / "data" / "masks" / f"{name}.png")
    np.testing.assert_array_equal(exported > 0, sam_mask > 0)

    # The new version is selectable in every picker, and compares with the student.
    assert new_model in seg.picker.labels()
    assert compare.teacher_picker.select(new_model)
    assert compare.student_picker.select(STUDENT)
    assert seg.select_model(new_model) and seg.picker.current().source == "project"
    compare.samples_spin.setValue(2)
    compare.run()
    wait_idle(qtbot, compare)
    result = compare.last_result
    assert [r.label for r in result.runs] == [new_model, STUDENT]
    assert 0.0 <= result.dice <= 1.0 and result.runs[0].params == 3_056_241
    grid = viewer_grid(viewer)
    assert grid.enabled and grid.actual_shape(viewer.layers) == (1, 2)
    for tag, model in (("T", new_model), ("S", STUDENT)):  # short names, model in marker
        assert viewer.layers[f"{tag}: consensus \u00b7 {name}"].metadata[
            "lesion_diffkd"]["model"] == model
