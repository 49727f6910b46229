"""The Jobs panel says what Resume will do (issue 14, item 5), and closing napari with
running jobs asks whether to keep them (no job is killed silently). Job rows are made in a
real project store; job processes are stand-ins (nothing is started, nothing is left)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


class FakeProcess:
    """What the panel uses of a job's Popen."""

    def __init__(self, alive: bool) -> None:
        self.alive, self.pid = alive, 999_999

    def poll(self):
        return None if self.alive else 0


class _SwallowClose:
    """An event filter that counts and swallows Close events (made lazily: Qt needed)."""

    def __new__(cls, parent):
        from qtpy.QtCore import QEvent, QObject

        class Filter(QObject):
            seen = 0

            def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
                if event.type() == QEvent.Close:
                    self.seen += 1
                    event.ignore()
                    return True
                return False

        return Filter(parent)


@pytest.fixture
def panel(viewer, tmp_path, monkeypatch):
    from napari_lesion_diffkd.core import job_runner
    from napari_lesion_diffkd.plugin._context import app_context
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget

    started = []

    def fake_start(project, job_id, **kwargs):
        started.append(job_id)
        return FakeProcess(alive=False)

    monkeypatch.setattr(job_runner, "start_job_process", fake_start)
    context = app_context(viewer)
    context.set_project(tmp_path / "project")
    widget = JobsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.window.show()  # docked and shown: the panel watches the window from now on
    widget.started = started
    yield widget
    widget.timer.stop()


def _ended_job(store, checkpoint=None, step=0):
    """A train job that ran in this process and was cancelled, with or without a recorded
    checkpoint."""
    job = store.jobs.submit("train", {"train_config": {}})
    assert store.jobs.claim(job.id, "cpu").claimed
    checkpoints = [{"step": step, "path": str(checkpoint)}] if checkpoint else []
    store.jobs.report(job.id, step, 40, "training", checkpoints=checkpoints)
    store.jobs.finish(job.id, "cancelled")
    return job


def test_resume_says_from_checkpoint_n_or_from_the_start(panel, tmp_path) -> None:
    store = panel.context.store
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"x")
    with_ckpt = _ended_job(store, ckpt, step=20)
    without = _ended_job(store)
    panel.poll()

    panel.select_job(without.id)
    assert panel.resume_button.isEnabled() and panel.resume_button.text() == "Restart job"
    assert "from the start" in panel.resume_button.toolTip()
    panel.resume()
    assert panel.status.text() == (f"job {without.id} restarted from the start "
                                   "(no checkpoint was saved)")

    panel.select_job(with_ckpt.id)
    assert panel.resume_button.text() == "Resume job"
    assert "step 20" in panel.resume_button.toolTip()
    panel.resume()
    assert panel.status.text() == f"job {with_ckpt.id} resumed from checkpoint at step 20"
    assert panel.started == [without.id, with_ckpt.id]


def test_closing_napari_with_running_jobs_asks(panel, monkeypatch, viewer) -> None:
    from napari_lesion_diffkd.core import job_runner
    from napari_lesion_diffkd.plugin import jobs_widget

    job = panel.context.store.jobs.submit("train", {"train_config": {}})
    panel.processes[job.id] = process = FakeProcess(alive=True)
    panel.poll()
    asked, cancelled = [], []
    monkeypatch.setattr(job_runner, "cancel_job",
                        lambda project, jid, grace_s, process: cancelled.append(jid))

    # "Cancel": napari stays open, the job runs on.
    monkeypatch.setattr(jobs_widget, "ask_keep_jobs",
                        lambda parent, jobs: asked.append(jobs) or "cancel")
    window = panel.window()  # napari's main window, as a user's click on its X closes it
    assert window is not panel
    # Qt runs the filter installed last first: the panel's, then this one, which keeps the
    # window for napari's own teardown where the panel lets the close through.
    keep_window = _SwallowClose(window)
    window.removeEventFilter(panel._close_watch)
    window.installEventFilter(keep_window)
    window.installEventFilter(panel._close_watch)
    assert window.close() is False
    assert asked == [[f"{job.id} (train)"]] and cancelled == []

    # "Stop jobs": each running job is cancelled (checkpoints kept), napari closes.
    monkeypatch.setattr(jobs_widget, "ask_keep_jobs",
                        lambda parent, jobs: asked.append(jobs) or "stop")
    window.close()
    assert len(asked) == 2 and cancelled == [job.id]
    assert keep_window.seen == 1  # the panel did not refuse this close
    window.removeEventFilter(keep_window)
    process.alive = False


def test_close_from_code_keeps_jobs_and_says_so(panel, monkeypatch, viewer) -> None:
    """viewer.close() (scripts, tests) asks nothing: the default keeps the jobs, with a
    notice naming them."""
    from napari_lesion_diffkd.plugin import jobs_widget

    job = panel.context.store.jobs.submit("train", {"train_config": {}})
    panel.processes[job.id] = FakeProcess(alive=True)
    panel.poll()

    def no_question(parent, jobs):
        raise AssertionError("asked on a close from code")

    monkeypatch.setattr(jobs_widget, "ask_keep_jobs", no_question)
    from qtpy.QtGui import QCloseEvent

    # Window.close() closes the canvas (QtViewer) before the main window: the panel's
    # filter sees that close (the viewer's own teardown at the end then closes for real).
    from napari.qt import QtViewer

    canvas = panel.window().findChild(QtViewer)
    assert canvas is not None and canvas is panel._watched_canvas()
    assert panel._close_watch.eventFilter(canvas, QCloseEvent()) is False
    assert panel._programmatic_close
    assert panel.on_window_close() is False
    assert f"job(s) {job.id} (train) keep running" in panel.status.text()
