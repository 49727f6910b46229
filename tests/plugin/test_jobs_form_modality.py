"""The Jobs form's "start from" offers the project's modality (issue 14, item 4: it
defaulted to ct-teacher in a dermoscopy project)."""

from __future__ import annotations

import pytest

from tests.plugin.conftest import TEACHER, wait_ready

pytestmark = pytest.mark.gui


def test_start_from_defaults_to_the_projects_modality(viewer, qtbot, tmp_path, ph2_subset,
                                                       busbra_pairs) -> None:
    from napari_lesion_diffkd.core.store import import_folder
    from napari_lesion_diffkd.plugin._context import app_context
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget

    context = app_context(viewer)
    context.set_project(tmp_path / "derm")
    import_folder(context.store, ph2_subset, modality="dermoscopy")
    jobs = JobsWidget(viewer)
    viewer.window.add_dock_widget(jobs)
    wait_ready(qtbot, jobs.form.picker, jobs.form.student_picker)
    jobs.form.kind_combo.setCurrentText("fine-tune")
    assert jobs.form.picker.current().label == TEACHER
    assert all(label.startswith("dermoscopy") for label in jobs.form.picker.labels())

    # Another project, of ultrasound images: its own teacher.
    context.set_project(tmp_path / "us")
    for image, _ in busbra_pairs[:2]:
        context.store.add_image(image, modality="ultrasound")
    context.set_project(tmp_path / "us")  # reopened: the form reads the project again
    jobs.form.kind_combo.setCurrentText("loop round")
    assert jobs.form.picker.current().label == "ultrasound-teacher"
    assert jobs.form.student_picker.current().label == "ultrasound-student"
