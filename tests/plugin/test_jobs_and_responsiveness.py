"""The Jobs panel with a real job process, and the GUI's responsiveness: a 20 ms heartbeat
never stalls for more than 200 ms while a segmentation worker runs and the Jobs panel polls
a running training job; then Cancel stops that job."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.plugin.conftest import TEACHER, wait_idle, wait_ready

pytestmark = pytest.mark.gui

MAX_GAP_S = 0.2


def test_heartbeat_while_segmenting_and_polling_then_cancel(viewer, qtbot, tmp_path,
                                                            ph2_subset, ph2_image) -> None:
    from qtpy.QtCore import QTimer

    from napari_lesion_diffkd.core.store import import_folder
    from napari_lesion_diffkd.plugin._context import app_context
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    context = app_context(viewer)
    context.set_project(tmp_path / "project")
    import_folder(context.store, ph2_subset, modality="dermoscopy")
    viewer.add_image(ph2_image, name="lesion", rgb=True)
    seg, jobs = SegmentWidget(viewer), JobsWidget(viewer)
    viewer.window.add_dock_widget(seg)
    viewer.window.add_dock_widget(jobs)
    wait_ready(qtbot, seg.picker, jobs.form.picker)

    # A training job long enough to still run while we measure (cancelled below).
    jobs.form.kind_combo.setCurrentText("fine-tune")
    assert jobs.form.picker.select(TEACHER)
    jobs.form.steps_spin.setValue(5000)
    jobs.form.threads_spin.setValue(1)
    jobs.form.overrides_edit.setText("batch_size: 2")
    job = jobs.launch()
    assert job is not None and jobs.timer.isActive() and jobs.timer.interval() <= 500
    qtbot.waitUntil(lambda: jobs.jobs[job.id].step > 0, timeout=90_000)

    seg.select_model(TEACHER)
    seg.samples_spin.setValue(8)
    seg.run()  # first run creates the layers (one-off GL set-up is not what we measure)
    wait_idle(qtbot, seg)

    beats: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(20)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    step_before = jobs.jobs[job.id].step
    heartbeat.start()
    for seed in (1, 2):
        seg.seed_spin.setValue(seed)
        seg.run()
        wait_idle(qtbot, seg)
    qtbot.waitUntil(lambda: jobs.jobs[job.id].step > step_before, timeout=30_000)
    heartbeat.stop()
    gaps = np.diff(beats)
    print(f"heartbeat: {len(beats)} beats, longest gap {1000 * gaps.max():.0f} ms")
    assert len(beats) > 20 and gaps.max() < MAX_GAP_S, \
        f"GUI stalled {1000 * gaps.max():.0f} ms (beats: {len(beats)})"
    assert "done in" in seg.status.text()

    # The selected job shows its log; Cancel stops the process (flag, SIGTERM, SIGKILL).
    assert jobs.selected_id == job.id and "[log] loading" in jobs.log_view.toPlainText()
    assert jobs.cancel_button.isEnabled()
    worker = jobs.cancel()
    qtbot.waitUntil(lambda: jobs.jobs[job.id].status == "cancelled", timeout=30_000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)
    assert jobs.processes[job.id].poll() is not None  # the process is gone and reaped
    assert "cancelled" in jobs.status.text() and not jobs.cancel_button.isEnabled()
    # Resume runs the same job again in a new process; cancel it again at once.
    assert jobs.resume_button.isEnabled() and jobs.resume() is not None
    jobs.poll()
    assert jobs.jobs[job.id].status in ("queued", "running")
    jobs.cancel()
    qtbot.waitUntil(lambda: jobs.jobs[job.id].status == "cancelled"
                    and jobs.processes[job.id].poll() is not None, timeout=30_000)
