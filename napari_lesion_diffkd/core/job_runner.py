"""Run project jobs in their own process: start, execute, report, cancel.

A job runs as ``python -m napari_lesion_diffkd.cli job run ID --project P`` in a new session
(:func:`start_job_process`), so the GUI stays responsive, a crash cannot take the viewer
down, the job's memory (model, tensors, CUDA context) is returned to the system when the
process exits, and a cancel can stop the whole process group.

Inside that process :func:`run_job`:

1. re-queues a failed / cancelled job (a re-run *resumes*: a training job continues from
   its checkpoint, a per-image job skips the images it finished);
2. resolves the device and claims it (one heavy job per device; waits while another live
   job holds it, or returns at once with ``wait=False``);
3. drives the job type's generator (:func:`job_types`: :mod:`core.tasks` and the
   active-learning loop's ``loop-round``) with ``run_to_completion``,
   writing progress to the job row at most every ``report_interval`` seconds (2 writes/s
   by default), and stops at the next event when SIGTERM / SIGINT arrives or the row's
   ``cancel_requested`` flag is set;
4. ends the row as ``done`` (with the result), ``cancelled`` or ``failed`` and releases the
   device. A failure's ``error`` is one line (:func:`failure_reason`; ``disk full: ...`` for
   a full disk); its traceback goes to the row's log and ``<job>/traceback.txt``, not to the
   terminal. On a full disk that final write is retried with less to write.

:func:`cancel_job` sets the flag, sends SIGTERM to the process group, waits ``grace_s``,
then SIGKILLs it; checkpoints are kept, and the job is marked ``cancelled`` even if the
process could not write that itself. A process that dies without a word (SIGKILL, OOM
killer, power cut) is found by ``JobQueue.reap_stale`` and marked failed and resumable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from napari_lesion_diffkd.core.jobs import Cancelled, JobEvent, run_to_completion
from napari_lesion_diffkd.core.store.errors import StoreError
from napari_lesion_diffkd.core.store.procs import hostname, pid_alive
from napari_lesion_diffkd.core.store.project import ProjectStore
from napari_lesion_diffkd.core.store.queue import JobQueue
from napari_lesion_diffkd.core.store.records import JobRecord
from napari_lesion_diffkd.core.store.schema import DB_NAME

PROCESS_LOG = "process.log"
_LOGGED_KINDS = ("log", "metric", "checkpoint")

#: At most one ``[progress]`` log line per this many seconds (plus the last step).
PROGRESS_LOG_S = 5.0


def job_dir(project: str | os.PathLike, job_id: int) -> Path:
    """``<project>/jobs/<id>``: the job's own folder (run outputs, exported data, logs)."""
    root = Path(project)
    root = root.parent if root.name == DB_NAME else root
    return root.resolve() / "jobs" / str(job_id)


class ProgressReporter:
    """Turns :class:`JobEvent` s into throttled job-row updates.

    Every event updates the in-memory state; the row is written when ``min_interval``
    seconds have passed since the last write (so at most ``1 / min_interval`` writes per
    second, whatever the event rate), and by :meth:`flush`. ``log`` / ``metric`` /
    ``checkpoint`` events become log lines; ``checkpoint`` events (message = the file) are
    recorded in the row's ``checkpoints`` list, one entry per file with its latest step.
    ``progress`` events become a ``[progress] step 12/40 (30%), loss 0.1234, 1.9 s/step``
    line at most every ``progress_log_s`` seconds, and for the last step.
    """

    def __init__(self, queue: JobQueue, job: JobRecord, min_interval: float = 0.5,
                 echo: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 progress_log_s: float = PROGRESS_LOG_S):
        self.queue, self.job_id, self.min_interval = queue, job.id, min_interval
        self.echo, self.clock = echo, clock
        self.progress_log_s = progress_log_s
        self._last_progress: tuple[float, int] | None = None  # (clock, step) of the last line
        self.step, self.total, self.message = job.step, job.total, job.message
        self.checkpoints = list(job.checkpoints)
        self.pending: list[str] = []
        self.last_write = -float("inf")
        self.writes = 0
        self.cancel_requested = False

    def __call__(self, event: JobEvent) -> None:
        self.step, self.total = event.step or self.step, event.total or self.total
        self.message = event.message or self.message
        if event.kind in _LOGGED_KINDS:
            self._log(f"[{event.kind}] {event.message}")
        elif event.kind == "progress" and event.step:
            self._progress_line(event)
        if event.kind == "checkpoint":
            entries = [c for c in self.checkpoints if c.get("path") != event.message]
            self.checkpoints = entries + [{"step": event.step, "path": event.message}]
        if self.clock() - self.last_write >= self.min_interval:
            self.flush()

    def _log(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.pending.append(line)
        if self.echo is not None:
            self.echo(line)

    def _progress_line(self, event: JobEvent) -> None:
        now_s, last = self.clock(), self._last_progress
        final = bool(event.total) and event.step >= event.total
        if last is None:  # the first step only starts the clock (set-up time is not a rate)
            self._last_progress = (now_s, event.step)
            if not final:
                return
        elif not final and now_s - last[0] < self.progress_log_s:
            return
        text = f"[progress] step {event.step}"
        if event.total:
            text += f"/{event.total} ({100 * event.step / event.total:.0f}%)"
        for key, value in (event.values or {}).items():
            if isinstance(value, (int, float)):
                text += f", {key} {value:.4g}"
        if last is not None and event.step > last[1]:
            text += f", {(now_s - last[0]) / (event.step - last[1]):.2g} s/step"
        self._last_progress = (now_s, event.step)
        self._log(text)

    def flush(self) -> None:
        """Write the current state and pending log lines now."""
        log = "".join(line + "\n" for line in self.pending)
        self.cancel_requested = self.queue.report(self.job_id, self.step, self.total,
                                                  self.message, log, self.checkpoints)
        self.pending.clear()
        self.last_write = self.clock()
        self.writes += 1


@contextmanager
def _stop_on_signals(stop: threading.Event, enabled: bool) -> Iterator[None]:
    """While inside: SIGTERM / SIGINT set ``stop`` (the previous handlers come back after)."""
    if not enabled:
        yield
        return

    def _handler(signum: int, frame: Any) -> None:
        stop.set()  # acted on at the job's next event; cancel_job escalates to SIGKILL

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_job(project: str | os.PathLike, job_id: int, *, wait: bool = True,
            poll_s: float = 1.0, handle_signals: bool = False, report_interval: float = 0.5,
            echo: Callable[[str], Any] | None = None, resume: bool = True) -> JobRecord:
    """Execute job ``job_id`` of ``project`` in *this* process (see module docstring).

    Args:
        wait: wait while the device is held by another job (else return it still queued).
        poll_s: seconds between claim attempts while waiting.
        handle_signals: turn SIGTERM / SIGINT into a clean stop (the CLI sets this; leave
            it off when embedding, e.g. in tests or a notebook).
        report_interval: minimum seconds between progress writes.
        echo: called with each log line (the CLI prints them into the process log).
        resume: run a failed or cancelled job again (it continues from its checkpoint).
            With False such a job is returned as it is: a process started for a fresh job
            that was cancelled before the process got going must not undo the cancel.

    Returns:
        The job row at the end (``done`` / ``failed`` / ``cancelled``, or ``queued`` when
        it could not start).

    Raises:
        JobStateError: the job is done, or already running in a live process.
        InvalidInputError: no such job.
    """
    stop = threading.Event()
    with _stop_on_signals(stop, handle_signals), ProjectStore(project) as store:
        if not resume:
            job = store.jobs.get(job_id)
            if job.status in ("failed", "cancelled"):
                return job
        return _run_claimed(store, job_id, stop, wait, poll_s, report_interval, echo)


def resume_plan(job: JobRecord, project: str | os.PathLike | None = None) -> str:
    """What running a failed / cancelled job again will do, in words: ``from checkpoint at
    step N``, ``skipping finished images`` (per-image jobs) or ``from the start`` (no
    checkpoint was saved: a training job restarts at step 0)."""
    from napari_lesion_diffkd.core.store.queue import PER_IMAGE_TYPES

    if job.type in PER_IMAGE_TYPES:
        return "continuing: finished images are skipped"
    saved = [c for c in job.checkpoints
             if isinstance(c, dict) and c.get("path") and Path(str(c["path"])).is_file()]
    if saved:
        return f"from checkpoint at step {max(int(c.get('step') or 0) for c in saved)}"
    folder = job_dir(project, job.id) if project is not None else None
    if folder is not None and any(p.is_file() for p in (
            folder / "run" / "checkpoint.pt", *folder.glob("*/run/checkpoint.pt"))):
        return "from its last checkpoint"
    return "from the start (no checkpoint was saved)"


def job_types() -> dict[str, Callable[[Any], Any]]:
    """Every job type a project can run: job type -> function(TaskContext) returning the
    job's generator. The runner sits above the job layer (:mod:`core.tasks`) and the
    active-learning loop, so it is the one place that knows them all."""
    from napari_lesion_diffkd.core.active_learning.loop import run_loop_round
    from napari_lesion_diffkd.core.tasks import TASKS

    return {**TASKS, "loop-round": run_loop_round}


def submit_job(store: ProjectStore, job_type: str, config: dict[str, Any],
               heavy: bool = True) -> JobRecord:
    """Queue a job of a known type (the store itself checks only the name's form).

    Raises:
        InvalidInputError: unknown type, or a config that is not a JSON object.
    """
    from napari_lesion_diffkd.core.store.errors import InvalidInputError

    known = job_types()
    if job_type not in known:
        raise InvalidInputError(f"unknown job type {job_type!r}; one of {sorted(known)}")
    return store.jobs.submit(job_type, config, heavy=heavy)


def _run_claimed(store: ProjectStore, job_id: int, stop: threading.Event, wait: bool,
                 poll_s: float, report_interval: float,
                 echo: Callable[[str], Any] | None) -> JobRecord:
    from napari_lesion_diffkd.core.tasks import TaskContext, resolve_job_device

    say = echo or (lambda line: None)
    queue = store.jobs
    job = queue.requeue(job_id)
    task = job_types().get(job.type)
    if task is None:
        return queue.mark_ended(job_id, "failed", f"unknown job type {job.type!r}")
    try:
        device = resolve_job_device(job.config)
    except (ValueError, RuntimeError) as exc:
        return queue.mark_ended(job_id, "failed", f"device: {exc}")
    announced = False
    while True:
        claim = queue.claim(job_id, device)
        if claim.claimed:
            break
        if claim.status != "queued" or stop.is_set() or not wait:
            return queue.get(job_id)
        if not announced:
            say(f"job {job_id} waits for {device} (held by job {claim.holder})")
            announced = True
        time.sleep(poll_s)
    job = queue.get(job_id)
    say(f"job {job_id} ({job.type}) started on {device}, attempt {job.attempts}")
    reporter = ProgressReporter(queue, job, report_interval, echo=echo)
    work_dir = job_dir(store.root, job_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = TaskContext(store=store, job=job, work_dir=work_dir, device=device)
    try:
        result = run_to_completion(
            task(ctx), on_event=reporter,
            should_stop=lambda: stop.is_set() or reporter.cancel_requested)
    except (Cancelled, KeyboardInterrupt):
        _flush_quietly(reporter)
        return queue.finish(job_id, "cancelled", log=_line("cancelled"))
    except Exception as exc:  # noqa: BLE001 - any failure of the job must end up in its row
        return _end_failed(queue, reporter, work_dir, job_id, exc, say)
    try:
        reporter.flush()
        return queue.finish(job_id, "done", result=result, log=_line("done"))
    except StoreError as exc:  # e.g. the disk filled up after the work was done
        return _end_failed(queue, reporter, work_dir, job_id, exc, say)


#: Longest ``error`` text a failed job gets (the traceback goes to its log).
REASON_CHARS = 400
TRACEBACK_FILE = "traceback.txt"


def failure_reason(exc: BaseException) -> str:
    """One line saying why a job failed: ``disk full: ...`` for ENOSPC / SQLite's "disk is
    full" (also when wrapped, e.g. by torch), else ``<ExceptionType>: <first line>``; at
    most :data:`REASON_CHARS` characters."""
    from napari_lesion_diffkd.core.store.dberrors import is_disk_full
    from napari_lesion_diffkd.core.store.errors import StoreError

    text = _first_line(exc) or type(exc).__name__
    if is_disk_full(exc):
        cause: BaseException | None = exc
        while cause is not None and not _first_line(cause).startswith("disk full:"):
            cause = cause.__cause__ or cause.__context__  # the clearest message we made
        reason = _first_line(cause) if cause is not None else f"disk full: {text}"
    elif isinstance(exc, StoreError) or text.startswith(type(exc).__name__):
        reason = text
    else:
        reason = f"{type(exc).__name__}: {text}"
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 3] + "..."


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, white space collapsed (an ``OSError``'s
    own text without the ``[Errno N]`` prefix)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(str(text).split("\n", 1)[0].split())


def _flush_quietly(reporter: ProgressReporter) -> None:
    """Write pending progress unless the store refuses (the job's end matters more)."""
    try:
        reporter.flush()
    except StoreError:
        pass


def _end_failed(queue: JobQueue, reporter: ProgressReporter, work_dir: Path, job_id: int,
                exc: BaseException, say: Callable[[str], Any]) -> JobRecord:
    """Mark the job failed with a one-line reason (:func:`failure_reason`); the traceback
    goes to the row's log and ``<job>/traceback.txt``, not to the terminal.

    On a full disk the full write may not fit: it is retried with the log left out, then
    with the reason alone, so that the cause is kept whenever the database can take a few
    bytes. If even that fails, the store error is raised (the CLI prints it, exit 2) and
    ``reap_stale`` later marks the job failed without its cause.
    """
    reason = failure_reason(exc)
    trace = "".join(traceback.format_exception(exc))
    say(f"job {job_id} failed: {reason}")
    try:
        (work_dir / TRACEBACK_FILE).write_text(trace)
    except OSError:
        pass  # the disk may be full; the row's log has it when there is room
    _flush_quietly(reporter)
    attempts = (_line(f"failed: {reason}\n{trace}"), _line(f"failed: {reason}"), "")
    last: StoreError | None = None
    for i, log in enumerate(attempts):
        try:
            return queue.finish(job_id, "failed", error=reason, log=log)
        except StoreError as write_exc:  # e.g. disk full: try again with less to write
            last = write_exc
            time.sleep(0.2 * (i + 1))
    assert last is not None
    raise last


def _line(text: str) -> str:
    return f"{time.strftime('%H:%M:%S')} [status] {text}\n"


def start_job_process(project: str | os.PathLike, job_id: int, *, wait: bool = True,
                      poll_s: float = 1.0,
                      env: dict[str, str] | None = None,
                      resume: bool = True) -> subprocess.Popen:
    """Start ``lesion-diffkd job run`` for one job in a new process session.

    Args:
        project: the project folder.
        job_id: a queued, failed or cancelled job (the latter two resume).
        wait: let the process wait for the device (else it exits leaving the job queued).
        poll_s: seconds between its device checks while waiting.
        env: extra environment variables for the process (e.g. ``OMP_NUM_THREADS``).
        resume: False for a freshly submitted job: if it is cancelled before the process
            starts, the process leaves it cancelled (see :func:`run_job`).

    Returns:
        The :class:`subprocess.Popen`; its output is appended to
        ``<project>/jobs/<id>/process.log``. Poll it (or ``wait()``) so the process is
        reaped; progress is in the job row.
    """
    import napari_lesion_diffkd

    folder = job_dir(project, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "napari_lesion_diffkd.cli", "job", "run", str(job_id),
           "--project", str(folder.parents[1]), "--poll", str(poll_s)]
    if not wait:
        cmd.append("--no-wait")
    if not resume:
        cmd.append("--no-resume")
    package_root = str(Path(napari_lesion_diffkd.__file__).resolve().parents[1])
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, child_env.get("PYTHONPATH", "")) if p)
    with (folder / PROCESS_LOG).open("ab") as log:
        # start_new_session: the job leads its own process group, so a cancel can signal
        # it and every process it starts, and the terminal's Ctrl-C does not reach it.
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=child_env, close_fds=True)


def _signal_job(pid: int, sig: int) -> None:
    """Signal the job's process group when it leads one, else the process alone (a job
    started from a shell shares the shell's group, which must not be hit)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_dead(pid: int, token: str | None, seconds: float,
               process: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + seconds
    # Our own child must be reaped (poll) or it lingers as a zombie; /proc shows zombies
    # as dead, but systems without /proc do not.
    while (process.poll() is None) if process is not None else pid_alive(pid, token):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def cancel_job(project: str | os.PathLike, job_id: int, grace_s: float = 10.0,
               process: subprocess.Popen | None = None) -> JobRecord:
    """Cancel a job: a queued one at once; a running one by flag + SIGTERM to its process
    group, then SIGKILL after ``grace_s`` seconds. Checkpoints are kept.

    Args:
        process: the job's :class:`~subprocess.Popen` when this process started it
            (:func:`start_job_process`), so that it is reaped while waiting.

    Returns:
        The row: ``cancelled``, or unchanged when the job had already ended.
    """
    with ProjectStore(project) as store:
        job = store.jobs.request_cancel(job_id)
        if job.status != "running" or job.host != hostname() or job.pid is None:
            return job  # ended, or runs on another host: the flag alone will stop it
        if process is not None and process.pid != job.pid:
            process = None  # not this job's process (e.g. a stale handle)
        if pid_alive(job.pid, job.pid_token):
            _signal_job(job.pid, signal.SIGTERM)
            if not _wait_dead(job.pid, job.pid_token, grace_s, process):
                _signal_job(job.pid, signal.SIGKILL)
                _wait_dead(job.pid, job.pid_token, 5.0, process)
        job = store.jobs.get(job_id)
        if job.status == "running":  # the process died before it could say so
            job = store.jobs.mark_ended(job_id, "cancelled", "cancelled (process terminated)")
        return job


__all__ = ["ProgressReporter", "cancel_job", "failure_reason", "job_dir", "job_types", "run_job",
           "start_job_process", "submit_job"]
