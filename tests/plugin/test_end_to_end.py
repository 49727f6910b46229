"""The whole app on real PH2 images: open an image from a project -> segment with the shipped
student (K = 4) -> edit -> save -> fine-tune the shipped teacher in a job process (a few
steps) -> the new version is selectable in the pickers -> compare it with the student."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imread

from tests.plugin.conftest import STUDENT, TEACHER, wait_idle, wait_ready

pytestmark = pytest.mark.gui


def test_open_segment_edit_save_finetune_pick_compare(viewer, qtbot, tmp_path,
                                                      ph2_subset) -> None:
    from napari_lesion_diffkd.plugin.compare_widget import CompareWidget, viewer_grid
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget
    from napari_lesion_diffkd.plugin.project_widget import ProjectWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    project, seg = ProjectWidget(viewer), SegmentWidget(viewer)
    jobs, compare = JobsWidget(viewer), CompareWidget(viewer)
    for w in (project, seg, jobs, compare):
        viewer.window.add_dock_widget(w)
    wait_ready(qtbot, seg.picker, jobs.form.picker, compare.teacher_picker)

    # Open: a project with 12 labelled PH2 images; Next opens the first one.
    project.open_project(tmp_path / "project")
    project.modality_combo.setCurrentText("dermoscopy")
    project.import_paths([str(ph2_subset)])
    wait_idle(qtbot, project)
    project.next_image()
    wait_idle(qtbot, project)
    name = project.current["name"]
    assert seg.image_combo.currentText() == name  # the Segment widget follows the panel

    # Segment with the student, K = 4.
    assert seg.select_model(STUDENT)
    seg.samples_spin.setValue(4)
    seg.run()
    wait_idle(qtbot, seg)
    consensus = seg.last_layers["consensus"]
    assert seg.last_layers["samples"].data.shape[0] == 4

    # Edit the consensus (a lesion blob in the corner), save it as a human label.
    consensus.brush_size = 15
    consensus.paint((20, 20), 1)
    edited = np.array(consensus.data)
    assert project.source_layer() is consensus
    version = project.save().result(30)
    store = project.context.store
    assert version.kind == "human" and store.current_label(name).id == version.id
    np.testing.assert_array_equal(store.read_label(version), edited)

    # Fine-tune the teacher on the project's human labels: a job process, a few steps.
    form = jobs.form
    form.kind_combo.setCurrentText("fine-tune")
    assert form.picker.select(TEACHER)
    form.steps_spin.setValue(4)
    form.threads_spin.setValue(1)
    form.overrides_edit.setText("batch_size: 4, val_samples: 2, val_steps: 1")
    job = jobs.launch()
    qtbot.waitUntil(lambda: jobs.jobs[job.id].status not in ("queued", "running"),
                    timeout=150_000)
    done = jobs.jobs[job.id]
    assert done.status == "done", done.error
    new_model = f"{TEACHER}@v1"
    assert done.result["model"] == new_model and new_model in jobs.status.text()
    assert jobs.plot.series["val Dice"] and "registered" in jobs.log_view.toPlainText()
    # It trained on the edited label: the job's exported mask is the saved one.
    exported = imread(store.root / "jobs" / str(job.id) / "data" / "masks" / f"{name}.png")
    np.testing.assert_array_equal(exported > 0, edited > 0)

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
    assert f"{name} [{new_model}] consensus" in viewer.layers
