"""An error in a worker always reaches the user and always re-enables the widget, whatever
its type: superqt's generator worker takes any RuntimeError (BundleError, torch's errors)
for a deleted worker and emits neither ``errored`` nor ``finished`` unless we carry it."""

from __future__ import annotations

import pytest

from tests.plugin.conftest import STUDENT, wait_idle, wait_ready

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("error", [
    "bundle",        # BundleError, a RuntimeError: the case that froze the widgets
    "runtime",       # torch raises plain RuntimeErrors
    "value",         # a ValueError always worked; it still must
])
def test_generator_worker_reports_every_error_and_finishes(qtbot, error: str) -> None:
    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.plugin._workers import start_generator_worker

    exc = {"bundle": BundleError("model.safetensors: corrupt"),
           "runtime": RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
           "value": ValueError("bad input")}[error]

    def failing():
        yield "loading"
        raise exc

    seen: dict[str, object] = {"events": [], "finished": False}
    worker = start_generator_worker(
        failing, on_event=seen["events"].append, on_error=lambda e: seen.update(error=e),
        on_finished=lambda: seen.update(finished=True))
    qtbot.waitUntil(lambda: seen["finished"], timeout=30_000)
    assert seen["error"] is exc and seen["events"] == ["loading"]
    assert not worker.is_running


def test_a_bundle_that_fails_to_load_leaves_the_segment_widget_usable(
        viewer, ph2_image, qtbot, bundle_copy) -> None:
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    wait_ready(qtbot, widget.picker)
    weights = bundle_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated: safetensors cannot parse it
    widget.picker.add_folder(str(bundle_copy))
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.status.text().startswith("error:") and "my-student" in widget.status.text()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    # A good model then runs as usual.
    assert widget.select_model(STUDENT)
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.status.text().startswith("done") and "lesion consensus" in viewer.layers


# -- a failing load injected into every worker type --------------------------------------
# Each widget that starts a worker gets a load that raises a RuntimeError (torch's kind), a
# BundleError (a RuntimeError subclass: the case that froze the widgets) or an OSError; the
# error must show in the widget and leave it usable (buttons back, no worker left).

def _errors():
    from napari_lesion_diffkd.core.bundle import BundleError

    return {"runtime": RuntimeError("injected: mat1 and mat2 shapes cannot be multiplied"),
            "bundle": BundleError("injected: model.safetensors: corrupt"),
            "os": OSError("injected: [Errno 5] Input/output error")}


KINDS = ["runtime", "bundle", "os"]


def _raiser(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


@pytest.mark.parametrize("kind", KINDS)
def test_segment_widget_survives_a_failing_load(viewer, ph2_image, qtbot, monkeypatch,
                                                 kind) -> None:
    import napari_lesion_diffkd.core.registry as registry
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    exc = _errors()[kind]
    viewer.add_image(ph2_image, name="lesion", rgb=True)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    wait_ready(qtbot, widget.picker)
    monkeypatch.setattr(registry, "load_model", _raiser(exc))
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.status.text() == f"error: {exc}"
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.progress.maximum() == 1  # not left spinning
    assert "lesion consensus" not in viewer.layers


@pytest.mark.parametrize("kind", KINDS)
def test_compare_widget_survives_a_failing_load(viewer, ph2_image, qtbot, monkeypatch,
                                                 kind) -> None:
    import napari_lesion_diffkd.core.registry as registry
    from napari_lesion_diffkd.plugin.compare_widget import CompareWidget

    exc = _errors()[kind]
    viewer.add_image(ph2_image, name="lesion", rgb=True)
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget)
    wait_ready(qtbot, widget.teacher_picker, widget.student_picker)
    monkeypatch.setattr(registry, "load_model", _raiser(exc))
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.status.text() == f"error: {exc}"
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.progress.maximum() == 1


@pytest.mark.parametrize("kind", KINDS)
def test_correction_survives_a_failing_sam_load_and_a_failing_prompt(
        viewer, ph2_image, qtbot, monkeypatch, kind) -> None:
    import napari_lesion_diffkd.core.sam.correction_backend as correction_backend
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget

    exc = _errors()[kind]
    viewer.add_image(ph2_image, name="lesion", rgb=True)
    w = CorrectionWidget(viewer, autoload_sam=False)
    viewer.window.add_dock_widget(w)
    box = w.sam_models
    qtbot.waitUntil(lambda: box.worker is None, timeout=120_000)  # the listing
    monkeypatch.setattr(correction_backend, "load_correction_backend", _raiser(exc))
    box.runtime_combo.setCurrentText("torch")
    box.load(str(ph2_image.shape))  # any target: the load itself fails
    qtbot.waitUntil(lambda: box.worker is None, timeout=120_000)
    assert str(exc) in box.info.text() and str(exc) in w.status.text()
    assert w.backend is None and w.start_button.isEnabled()

    class Failing:
        name = "failing"

        def propose(self, request):
            raise exc

    w.set_backend(Failing())
    w.source_combo.setCurrentText("empty")
    proposal = w.start()
    viewer.layers["lesion prompts"].add([[100.0, 120.0]])
    w.refine()
    qtbot.waitUntil(lambda: not w.is_busy, timeout=60_000)
    assert w.status.text() == f"prompt model failed: {exc}"
    assert not proposal.data.any()  # the proposal is kept as it was
    assert w.refine_button.isEnabled() and w.accept_button.isEnabled()
    assert w.accept() is not None  # still usable


@pytest.fixture
def project_panel(viewer, tmp_path, qtbot):
    from napari_lesion_diffkd.plugin.project_widget import ProjectWidget

    panel = ProjectWidget(viewer)
    viewer.window.add_dock_widget(panel)
    panel.open_project(tmp_path / "project")
    return panel


@pytest.mark.parametrize("kind", KINDS)
def test_project_import_and_open_survive_failures(project_panel, ph2_subset, qtbot,
                                                  monkeypatch, kind) -> None:
    import napari_lesion_diffkd.core.store as store
    import napari_lesion_diffkd.plugin._queue as queue

    exc = _errors()[kind]
    panel = project_panel
    real_import = store.import_folder
    monkeypatch.setattr(store, "import_folder", _raiser(exc))
    panel.import_paths([str(ph2_subset)])
    wait_idle(qtbot, panel)
    assert panel.status.text() == f"error: {exc}"
    assert panel.import_folder_button.isEnabled()
    monkeypatch.setattr(store, "import_folder", real_import)
    panel.import_paths([str(ph2_subset)])  # usable: the next import works
    wait_idle(qtbot, panel)
    assert panel.queue_table.rowCount() > 0

    monkeypatch.setattr(queue, "load_for_viewing", _raiser(exc))
    panel.open_row(0)
    wait_idle(qtbot, panel)
    assert panel.status.text() == f"error: {exc}"
    assert panel.next_button.isEnabled() and panel.worker is None


@pytest.mark.parametrize("kind", KINDS)
def test_jobs_cancel_survives_a_failure(viewer, tmp_path, qtbot, monkeypatch, kind) -> None:
    import napari_lesion_diffkd.core.job_runner as job_runner
    from napari_lesion_diffkd.plugin._context import app_context
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget

    exc = _errors()[kind]
    widget = JobsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    app_context(viewer).set_project(tmp_path / "project", create=True)
    monkeypatch.setattr(job_runner, "cancel_job", _raiser(exc))
    worker = widget.cancel(job_id=1)
    assert worker is not None
    qtbot.waitUntil(lambda: not worker.is_running
                    and widget.status.text().startswith("cancel failed"), timeout=60_000)
    assert widget.status.text() == f"cancel failed: {exc}"
    assert widget.launch_button.isEnabled()


@pytest.mark.parametrize("kind", KINDS)
def test_model_picker_warm_up_failure_is_shown_and_the_picker_works(
        viewer, qtbot, monkeypatch, kind) -> None:
    import types

    import napari_lesion_diffkd.plugin._model_picker as model_picker
    from napari_lesion_diffkd.plugin._context import app_context

    exc = _errors()[kind]
    # As on a first start (torch not imported yet): the warm-up import runs in a worker.
    monkeypatch.setattr(model_picker, "sys", types.SimpleNamespace(modules={}))
    monkeypatch.setattr(model_picker, "_import_registry", _raiser(exc))
    picker = model_picker.ModelPicker(app_context(viewer))
    wait_ready(qtbot, picker)
    assert str(exc) in picker.info.toolTip() or str(exc) in picker.info.text()
    assert picker.combo.count() > 0 and picker.combo.isEnabled()


@pytest.mark.parametrize("kind", KINDS)
def test_sam_picker_warm_up_failure_is_shown_and_the_picker_works(
        viewer, qtbot, monkeypatch, kind) -> None:
    import types

    import napari_lesion_diffkd.plugin._sam_picker as sam_picker
    from napari_lesion_diffkd.plugin._context import app_context

    exc = _errors()[kind]
    monkeypatch.setattr(sam_picker, "sys", types.SimpleNamespace(modules={}))
    monkeypatch.setattr(sam_picker, "_import_sam_listing", _raiser(exc))
    picker = sam_picker.SamPicker(app_context(viewer))
    picker.activate()
    qtbot.waitUntil(lambda: picker.is_ready, timeout=120_000)
    assert str(exc) in picker.info.text()
    assert picker.worker is None
