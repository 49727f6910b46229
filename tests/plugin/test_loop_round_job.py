"""The Jobs panel's "loop round" form: a tiny teacher and a tiny new student run one round of
the active-learning loop on a project of real PH2 images (12 labelled, 2 unlabelled) in a
job process; both new models appear in the pickers and the annotation queue is re-ranked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin.conftest import STUDENT, TEACHER, wait_ready

pytestmark = pytest.mark.gui

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_loop_round_form_builds_its_config(tiny_bundle) -> None:
    from napari_lesion_diffkd.plugin._job_forms import JobForm, build_job

    kind, cfg = build_job(JobForm("loop round", model=TEACHER, student=STUDENT, steps=8,
                                  threshold=0.05, num_samples=3, threads=1,
                                  overrides={"batch_size": 2}))
    assert kind == "loop-round"
    assert (cfg["teacher"], cfg["student"], cfg["threshold"], cfg["num_samples"]) == (
        TEACHER, STUDENT, 0.05, 3)
    for key in ("teacher_overrides", "student_overrides"):
        assert cfg[key]["max_steps"] == 8 and cfg[key]["batch_size"] == 2
        assert cfg[key]["val_every"] == 8  # a short run still validates
    # A student config means a new student; the loop's own check accepts the config.
    from napari_lesion_diffkd.core.active_learning.loop import LoopSettings

    _, cfg = build_job(JobForm("loop round", model=str(tiny_bundle), student=STUDENT,
                               config_path=str(FIXTURES / "tiny_student.yaml")))
    assert "student" not in cfg and cfg["student_config"].endswith("tiny_student.yaml")
    assert LoopSettings.from_config(cfg).threshold == 0.1
    with pytest.raises(ValueError, match="needs a student"):
        build_job(JobForm("loop round", model=TEACHER))
    with pytest.raises(ValueError, match="outside"):
        build_job(JobForm("loop round", model=TEACHER, student=STUDENT, threshold=2.0))


def test_loop_round_job_runs_and_registers_both_models(viewer, qtbot, tmp_path, ph2_subset,
                                                       flat_images, tiny_bundle) -> None:
    from napari_lesion_diffkd.core.store import import_folder
    from napari_lesion_diffkd.core.active_learning.rounds import annotation_queue
    from napari_lesion_diffkd.plugin._context import app_context
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget

    context = app_context(viewer)
    store = context.set_project(tmp_path / "project")
    import_folder(store, ph2_subset, modality="dermoscopy")
    import_folder(store, flat_images, modality="dermoscopy")
    assert len(store.unlabelled_images()) == 2
    jobs = JobsWidget(viewer)
    viewer.window.add_dock_widget(jobs)
    form = jobs.form
    wait_ready(qtbot, form.picker, form.student_picker)
    context.add_user_bundle(tiny_bundle)  # "Add checkpoint..." with the tiny teacher

    form.kind_combo.setCurrentText("loop round")
    assert not form.student_picker.isHidden() and not form.threshold_spin.isHidden()
    assert form.images_combo.isHidden()
    assert form._form.labelForField(form.picker).text() == "teacher"
    qtbot.waitUntil(lambda: "tiny-dermoscopy" in form.picker.labels(), timeout=30_000)
    assert form.picker.select("tiny-dermoscopy")
    form.config_edit.setText(str(FIXTURES / "tiny_student.yaml"))
    form.steps_spin.setValue(4)
    form.threshold_spin.setValue(0.5)
    form.samples_spin.setValue(3)
    form.threads_spin.setValue(1)
    form.device_combo.setCurrentText("cpu")
    job = jobs.launch()
    assert job is not None and job.type == "loop-round", jobs.status.text()
    qtbot.waitUntil(lambda: jobs.jobs[job.id].status not in ("queued", "running"),
                    timeout=240_000)
    done = jobs.jobs[job.id]
    assert done.status == "done", done.error
    teacher, student = done.result["teacher"], done.result["student"]
    assert (teacher, student) == ("tiny-dermoscopy@v1", "tiny-dermoscopy-student@v1")
    assert teacher in jobs.status.text() and student in jobs.status.text()
    assert "queue re-ranked (2 images)" in jobs.status.text()
    # Both trainings' curves, the round's five steps in the log.
    assert jobs.plot.series["teacher loss"] and jobs.plot.series["student loss"]
    assert "5/5 queue" in jobs.log_view.toPlainText()
    # The pseudo labels (threshold 0.5: all confident) and the re-ranked queue.
    assert done.result["pseudo_labels"] == 2 and done.result["confident"] == 2
    assert len(annotation_queue(store)) == 2
    # Both models are selectable at once.
    qtbot.waitUntil(lambda: teacher in form.picker.labels()
                    and student in form.student_picker.labels(), timeout=30_000)
