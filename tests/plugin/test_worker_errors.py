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
