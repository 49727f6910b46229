"""Dock widget "Jobs": launch fine-tune / distill / pseudo-label / score / loop-round /
SAM fine-tune jobs of the open project as separate processes, and watch them.

A job is a row of the project's queue (``core.store``) run by ``lesion-diffkd job run`` in
its own process (:func:`core.job_runner.start_job_process`), so training never competes with
napari for the GIL and a crash cannot take the viewer down. A QTimer polls the store twice
a second (the runner itself writes at most twice a second): status, progress, the log tail,
and the loss / validation-Dice curve from the trainer's JSONL log. Cancel runs
:func:`core.job_runner.cancel_job` (flag, SIGTERM, then SIGKILL after a grace period) in a
worker thread, as it may wait for the process; Resume runs a failed or cancelled job again
(training continues from its checkpoint). A finished training job registers its model in
the project, and every model picker of the viewer lists it at once. A loop round (teacher
fine-tune, pseudo-labels, student distillation, scoring, queue) plots the teacher's and
then the student's curves, and registers both models. A SAM fine-tune plots its loss and
validation score (mean of box Dice and the Dice after a corrective click, see
``core.sam.training``) and registers a promptable model, which the correction panel's SAM
list (``_sam_models.SamModelBox``, refreshed by ``models_changed``) then offers.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_diffkd.plugin._job_forms import TRAINING_KINDS
from napari_lesion_diffkd.plugin._jobs_form import JobsForm

if TYPE_CHECKING:
    import napari

POLL_MS = 500  # 2 Hz: the job runner writes its row at most twice a second
COLUMNS = ("id", "job", "status", "progress", "message")


class JobsWidget(QWidget):
    """Launch form, job table, curve, log tail, Cancel.

    Public attributes used by tests and scripts: ``form`` (:class:`JobsForm`),
    ``launch_button``, ``table``, ``plot``, ``log_view``, ``cancel_button``,
    ``resume_button``, ``status``,
    ``timer``, ``processes`` (job id -> ``Popen`` of jobs started here), ``jobs`` (job id ->
    latest ``JobRecord``), ``selected_id``.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from napari_lesion_diffkd.plugin._context import app_context
        from napari_lesion_diffkd.plugin._plot import CurvePlot

        self.viewer = napari_viewer
        self.context = app_context(napari_viewer)
        self.processes: dict[int, Any] = {}
        self.jobs: dict[int, Any] = {}
        self.selected_id: int | None = None
        self._tails: dict[str, Any] = {}  # series prefix -> TrainLogTail of the selected job
        self._val_label = "val Dice"  # the selected job's validation series
        self._cancel_workers: list[Any] = []

        self.form = JobsForm(self.context)
        self.launch_button = QPushButton("Launch")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.Stretch)  # the message
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.plot = CurvePlot()
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(400)
        self.cancel_button = QPushButton("Cancel job")
        self.resume_button = QPushButton("Resume job")
        self.status = QLabel("open a project in the Annotation project panel")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(self.launch_button)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        row.addWidget(QLabel("selected job"))
        row.addStretch(1)
        row.addWidget(self.resume_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        layout.addWidget(self.plot)
        layout.addWidget(self.log_view)
        layout.addWidget(self.status)
        from napari_lesion_diffkd.plugin._panel_layout import make_scrollable, show_rows

        show_rows(self.table, 4)
        make_scrollable(self)  # fits a laptop screen with every panel open (_panel_layout)

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.launch_button.clicked.connect(lambda: self.launch())
        self.cancel_button.clicked.connect(lambda: self.cancel())
        self.resume_button.clicked.connect(lambda: self.resume())
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.context.project_changed.connect(self._on_project)
        self._on_project(self.context.project_path)
        self._programmatic_close = self._close_answered = False
        self._close_watch = _CloseWatcher(self)
        # napari's main window and its canvas, found through public Qt API once the panel is
        # docked and shown (showEvent): no private napari attributes.
        # Weak: the panel must not keep a closed viewer's canvas alive (napari's leak check).
        self._watched_window: Any = _dead_ref
        self._watched_canvas: Any = _dead_ref

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self._watch_window()

    def _watch_window(self) -> None:
        """Watch the top-level window this panel is docked in, and napari's canvas inside
        it, for Close events (see :class:`_CloseWatcher`)."""
        window = self.window()
        if window is self or window is self._watched_window():
            return
        from napari.qt import QtViewer  # napari's public Qt namespace

        canvas = window.findChild(QtViewer)
        for target in (window, canvas):
            if target is not None:
                target.installEventFilter(self._close_watch)
        self._watched_window = weakref.ref(window)
        self._watched_canvas = _dead_ref if canvas is None else weakref.ref(canvas)

    # -- public API ----------------------------------------------------------------------
    def launch(self) -> Any:
        """Submit the form's job to the project and start its process; the JobRecord."""
        from napari_lesion_diffkd.core.job_runner import start_job_process
        from napari_lesion_diffkd.plugin._job_forms import build_job

        store = self.context.store
        if store is None:
            self.status.setText("open a project first (Annotation project panel)")
            return None
        try:
            form = self.form.job_form()
            job_type, config = build_job(form)
        except Exception as exc:  # ValueError, BundleError, UnknownModelError: say why
            self.status.setText(f"cannot launch: {exc}")
            return None
        if form.kind in TRAINING_KINDS and not form.data and not _has_human_labels(store):
            # The job would only fail at its start (core.tasks.train._data_folders).
            self.status.setText("cannot launch: the project has no human labels to train on "
                                "(save a corrected label first)")
            return None
        job = store.jobs.submit(job_type, config)
        env = {"OMP_NUM_THREADS": str(config["threads"])} if config.get("threads") else None
        # resume=False: a Cancel pressed before the process starts must stick.
        self.processes[job.id] = start_job_process(store.root, job.id, env=env, resume=False)
        self.status.setText(f"job {job.id} ({self.form.kind_combo.currentText()}) started")
        self.poll()
        self.select_job(job.id)
        return job

    def poll(self) -> None:
        """Read the jobs from the store and update table, curve and log (GUI thread, ms)."""
        store = self.context.store
        if store is None:
            return
        for proc in self.processes.values():
            proc.poll()  # reap finished job processes (no zombies)
        jobs = {job.id: job for job in store.jobs.list()}
        ended = [job for jid, job in jobs.items()
                 if jid in self.jobs and self.jobs[jid].status in ("queued", "running")
                 and job.status not in ("queued", "running")]
        self.jobs = jobs
        self._fill_table()
        self._show_detail()
        for job in ended:
            self._on_ended(job)

    def select_job(self, job_id: int) -> None:
        """Show a job's curve and log (and make it the one Cancel stops)."""
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).text() == str(job_id):
                self.table.selectRow(row)
        self._select(job_id)

    def cancel(self, job_id: int | None = None) -> Any:
        """Cancel a job (default: the selected one) in a worker thread; returns the worker."""
        from napari_lesion_diffkd.core.job_runner import cancel_job
        from napari_lesion_diffkd.plugin._workers import start_function_worker

        job_id = self.selected_id if job_id is None else job_id
        if job_id is None or self.context.project_path is None:
            return None
        project, process = self.context.project_path, self.processes.get(job_id)
        queued = self.jobs.get(job_id) is not None and self.jobs[job_id].status == "queued"
        self.status.setText(f"cancelling job {job_id}...")

        def work() -> Any:
            if queued and process is not None and process.poll() is None:
                # A starting job process re-queues its job (``run_job`` resumes failed and
                # cancelled jobs), so a cancel that only flags the row would be undone:
                # stop the process first, then cancel the row.
                process.terminate()
                try:
                    process.wait(10.0)
                except Exception:  # subprocess.TimeoutExpired: cancel_job escalates
                    pass
            return cancel_job(project, job_id, grace_s=10.0, process=process)

        worker = start_function_worker(
            work,
            on_result=lambda job: self.status.setText(f"job {job.id}: {job.status}"),
            on_error=lambda exc: self.status.setText(f"cancel failed: {exc}"),
            on_finished=self.poll)
        self._cancel_workers.append(worker)
        return worker

    def resume(self, job_id: int | None = None) -> Any:
        """Run a failed or cancelled job again in a new process (default: the selected one):
        training continues from its checkpoint (or starts again when none was saved, and
        says so), per-image jobs skip finished images."""
        from napari_lesion_diffkd.core.job_runner import resume_plan, start_job_process

        job_id = self.selected_id if job_id is None else job_id
        job = self.jobs.get(job_id) if job_id is not None else None
        if job is None or job.status not in ("failed", "cancelled"):
            return None
        plan = resume_plan(job, self.context.project_path)
        threads = job.config.get("threads")
        env = {"OMP_NUM_THREADS": str(threads)} if threads else None
        # Queued now (the process re-queues too), so the table and a Cancel see it at once.
        self.context.store.jobs.requeue(job_id)
        self.processes[job_id] = start_job_process(self.context.project_path, job_id, env=env)
        verb = "restarted" if plan.startswith("from the start") else "resumed"
        self.status.setText(f"job {job_id} {verb} {plan}")
        return self.processes[job_id]

    def running_jobs(self) -> list[int]:
        """Jobs started from this panel whose process still runs."""
        return [jid for jid, proc in self.processes.items() if proc.poll() is None]

    def on_window_close(self, event: Any = None) -> bool:
        """napari's window is closing: ask whether to keep this panel's running jobs
        (:func:`ask_keep_jobs`). "Keep" (the default) leaves them running in their own
        processes; "Stop" cancels them (checkpoints are kept); "Cancel" keeps napari open.
        A close from code (``viewer.close()``) asks nothing and keeps the jobs, with a
        notice. Returns True when the close is refused."""
        running = self.running_jobs()
        if not running or self._close_answered:
            return False
        names = [f"{jid} ({self.jobs[jid].type})" if jid in self.jobs else str(jid)
                 for jid in running]
        if self._programmatic_close:
            answer = "keep"
        else:
            answer = ask_keep_jobs(self, names)
        if answer == "cancel":
            if event is not None:
                event.ignore()
            return True
        self._close_answered = True
        if answer == "stop":
            from napari_lesion_diffkd.core.job_runner import cancel_job

            for jid in running:
                try:
                    cancel_job(self.context.project_path, jid, grace_s=5.0,
                               process=self.processes.get(jid))
                except Exception as exc:  # noqa: BLE001 - a store error must not block closing
                    print(f"lesion-diffkd: could not cancel job {jid}: {exc}")
            self.status.setText(f"stopped job(s) {', '.join(map(str, running))}")
            return False
        note = (f"lesion-diffkd: job(s) {', '.join(names)} keep running after napari "
                f"closed; reopen the project {self.context.project_path} to see them")
        self.status.setText(note)
        _notify(note)
        return False

    # -- internals -----------------------------------------------------------------------
    def _on_project(self, path: Any) -> None:
        self.jobs, self.selected_id, self._tails = {}, None, {}
        self.table.setRowCount(0)
        self.plot.clear()
        self.log_view.clear()
        self.launch_button.setEnabled(path is not None)
        if path is None:
            self.timer.stop()
            return
        self.status.setText(f"project {path}")
        self.poll()
        self.timer.start()

    def _fill_table(self) -> None:
        ordered = sorted(self.jobs.values(), key=lambda j: -j.id)  # newest first
        self.table.blockSignals(True)
        self.table.setRowCount(len(ordered))
        for row, job in enumerate(ordered):
            kind = "fine-tune" if job.type == "train" and job.config.get("init_model") \
                else job.type
            values = (str(job.id), kind, job.status, f"{100 * job.progress:.0f}%",
                      job.error or job.message)
            for col, text in enumerate(values):
                item = self.table.item(row, col)
                if item is None:
                    self.table.setItem(row, col, QTableWidgetItem(text))
                elif item.text() != text:
                    item.setText(text)
            if job.id == self.selected_id:
                self.table.selectRow(row)
        self.table.blockSignals(False)

    def _on_selection(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self._select(int(self.table.item(rows[0].row(), 0).text()))

    def _select(self, job_id: int) -> None:
        from napari_lesion_diffkd.plugin._job_log import LOG_NAME, TrainLogTail, train_log_path

        if job_id == self.selected_id:
            return
        self.selected_id = job_id
        job = self.jobs.get(job_id)
        self._val_label = "val Dice"
        if job is not None and job.type == "sam-finetune":  # its own validation key
            self._val_label = "val score"
            self._tails = {"": TrainLogTail(train_log_path(self.context.project_path, job_id),
                                            val_key="val_score")}
        elif job is not None and job.type == "loop-round":  # two trainings, in sub-folders
            folder = train_log_path(self.context.project_path, job_id).parents[1]
            self._tails = {f"{part} ": TrainLogTail(folder / part / "run" / LOG_NAME)
                           for part in ("teacher", "student")}
        else:
            self._tails = {"": TrainLogTail(train_log_path(self.context.project_path, job_id))}
        self.plot.clear()
        self.log_view.clear()
        self._show_detail()

    def _show_detail(self) -> None:
        from napari_lesion_diffkd.plugin._job_log import log_tail

        job = self.jobs.get(self.selected_id) if self.selected_id is not None else None
        if job is None:
            return
        text = log_tail(job.log)
        if job.error:
            text += f"\n\nerror: {job.error}"
        if text != self.log_view.toPlainText():
            self.log_view.setPlainText(text)
            bar = self.log_view.verticalScrollBar()
            bar.setValue(bar.maximum())
        for prefix, tail in self._tails.items():
            if tail.read_new():
                self.plot.set_series(f"{prefix}loss", tail.loss)
                self.plot.set_series(f"{prefix}{self._val_label}", tail.val_dice)
        self.cancel_button.setEnabled(job.status in ("queued", "running"))
        ended = job.status in ("failed", "cancelled")
        self.resume_button.setEnabled(ended)
        if ended:
            from napari_lesion_diffkd.core.job_runner import resume_plan

            plan = resume_plan(job, self.context.project_path)
            start = plan.startswith("from the start")
            self.resume_button.setText("Restart job" if start else "Resume job")
            self.resume_button.setToolTip(f"run job {job.id} again {plan}")
        else:
            self.resume_button.setText("Resume job")
            self.resume_button.setToolTip("")

    def _on_ended(self, job: Any) -> None:
        result = (job.result or {}) if job.status == "done" else {}
        models = [result[k] for k in ("model", "teacher", "student")
                  if isinstance(result.get(k), str)]
        if job.status == "done":
            # Training and loop-round jobs register models: every picker re-reads them.
            self.context.models_changed.emit()
        where = "correction panel's SAM list" if job.type == "sam-finetune" else "model pickers"
        note = (f"; model{'s' if len(models) > 1 else ''} {', '.join(models)} ready in the "
                f"{where}" if models else "")
        if job.type == "loop-round" and "queue" in result:
            note += f"; annotation queue re-ranked ({result['queue']} images)"
        self.status.setText(f"job {job.id} ({job.type}) {job.status}{note}")
        self.context.job_finished.emit(job)


def _dead_ref() -> None:
    """A weak reference to nothing (before the panel is shown)."""
    return None


class _CloseWatcher(QObject):
    """Sees napari's main window close (and its canvas close first, which only a close from
    code does: ``Window.close()`` closes the canvas before the main window)."""

    def __init__(self, widget: JobsWidget) -> None:
        super().__init__(widget)
        self.widget = widget

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() != QEvent.Close:
            return False
        if obj is not None and obj is self.widget._watched_canvas():
            self.widget._programmatic_close = True
            return False
        try:
            return self.widget.on_window_close(event)
        except RuntimeError:  # the panel's C++ object is gone already
            return False


def ask_keep_jobs(parent: Any, jobs: list[str]) -> str:
    """Ask whether jobs keep running after napari closes: ``"keep"`` (default button),
    ``"stop"`` or ``"cancel"`` (napari stays open). Tests replace this function."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Question)
    box.setWindowTitle("Jobs are running")
    box.setText(f"{len(jobs)} job(s) still running: {', '.join(jobs)}.\n"
                "Keep them running after napari closes?")
    box.setInformativeText("They run in their own processes and finish on their own; "
                           "reopen the project to see them. Stop cancels them (their "
                           "checkpoints are kept, Resume continues later).")
    keep = box.addButton("Keep running", QMessageBox.AcceptRole)
    stop = box.addButton("Stop jobs", QMessageBox.DestructiveRole)
    cancel = box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(keep)
    box.setEscapeButton(cancel)
    box.exec_()
    clicked = box.clickedButton()
    return "stop" if clicked is stop else "cancel" if clicked is cancel else "keep"


def _notify(text: str) -> None:
    """A napari notification (and stderr) that survives the window closing."""
    import sys

    print(text, file=sys.stderr)
    try:
        from napari.utils.notifications import show_info

        show_info(text)
    except Exception:  # noqa: BLE001 - no notification manager while napari shuts down
        pass


def _has_human_labels(store: Any) -> bool:
    """Whether any image has a human or SAM-assisted label (what training jobs export)."""
    from napari_lesion_diffkd.core.store.records import HUMAN_KINDS

    return any(store.label_versions(kind=kind) for kind in HUMAN_KINDS)
