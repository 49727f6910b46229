"""No test may leave a job process running (pytest plugin, loaded by tests/conftest.py).

Two layers:

* :func:`_stop_job_processes` (autouse, every test): wraps
  :func:`core.job_runner.start_job_process` - the one function that starts
  ``python -m napari_lesion_diffkd.cli job run`` for the Jobs panel, ``job submit --start``,
  ``loop`` and the tests themselves - records each process, and in teardown, pass or fail,
  stops every one still running (SIGTERM to its process group, SIGKILL after a grace
  period) and reaps it.
* :func:`pytest_sessionfinish`: whatever escaped (a process started some other way, by a
  broader fixture, or a grandchild that outlived its parent) is found in ``/proc``, killed,
  and the run FAILS, naming each one.

Only this session's processes are touched: a job process is ours when its environment
carries this session's :data:`MARKER` value (set in :func:`pytest_configure`, inherited by
every child, grandchild and new session it starts), or it descends from the pytest process,
or its (pid, start time) was recorded by the wrapper. ``/proc/<pid>/environ`` of another
user's process is unreadable, and another pytest session of the same user has its own
marker value, so neither is ever signalled.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

MARKER = "LESION_DIFFKD_TEST_SESSION"
JOB_COMMANDS = ("napari_lesion_diffkd.cli job run", "lesion-diffkd job run")
GRACE_S = 10.0  # SIGTERM -> SIGKILL, as cancel_job's default grace period
PROC = Path("/proc")

_recorded: set[tuple[int, int]] = set()  # (pid, start time) of every process the wrapper saw


# -- /proc ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    start: int  # clock ticks after boot: (pid, start) names one process, pid reuse aside
    cmdline: str

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def proc_info(pid: int) -> ProcInfo | None:
    """The process's /proc view, or None when it is gone or unreadable."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ... starttime(22nd)"; comm may hold spaces
    fields = stat[stat.rindex(")") + 2:].split()
    return ProcInfo(pid=pid, ppid=int(fields[1]), pgid=int(fields[2]), state=fields[0],
                    start=int(fields[19]),
                    cmdline=raw.replace(b"\0", b" ").decode(errors="replace").strip())


def proc_marker(pid: int) -> str | None:
    """The process's :data:`MARKER` value (None: unset, or not ours to read)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:  # another user's process, or gone
        return None
    prefix = MARKER.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def all_processes() -> list[ProcInfo]:
    out = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = proc_info(int(entry.name))
            if info is not None:
                out.append(info)
    return out


def is_job_command(cmdline: str) -> bool:
    return any(c in cmdline for c in JOB_COMMANDS)


def descendants(root: int, processes: list[ProcInfo]) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in processes:
        children.setdefault(p.ppid, []).append(p.pid)
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def session_job_processes(marker: str | None = None) -> list[ProcInfo]:
    """Live job processes of this test session (see the module doc), never this one."""
    marker = os.environ.get(MARKER) if marker is None else marker
    processes = all_processes()
    ours = descendants(os.getpid(), processes)
    found = []
    for p in processes:
        if p.pid == os.getpid() or not p.alive or not is_job_command(p.cmdline):
            continue
        if (p.pid in ours or (p.pid, p.start) in _recorded
                or (marker and proc_marker(p.pid) == marker)):
            found.append(p)
    return found


# -- stopping ------------------------------------------------------------------------------
def _signal(info: ProcInfo, sig: int) -> None:
    """Signal the process's group when it leads one (a job process does: it starts its own
    session, and its helpers share the group), else the process alone."""
    try:
        if info.pgid == info.pid:
            os.killpg(info.pid, sig)
        else:
            os.kill(info.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _same_process_alive(info: ProcInfo) -> bool:
    now = proc_info(info.pid)
    return now is not None and now.start == info.start and now.alive


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (or a Popen already reaped it)
        pass


def kill_processes(infos: list[ProcInfo], grace_s: float = 0.0,
                   reap: bool = True) -> list[ProcInfo]:
    """SIGTERM (when ``grace_s``) then SIGKILL each process and its group; returns those
    still alive afterwards (should be none). ``reap``: also reap those that are children of
    this process (False when a ``Popen`` owns them and will reap them itself)."""
    steps = ([(signal.SIGTERM, grace_s)] if grace_s > 0 else []) + [(signal.SIGKILL, 10.0)]
    for sig, wait_s in steps:
        live = [i for i in infos if _same_process_alive(i)]
        for info in live:
            _signal(info, sig)
        deadline = time.monotonic() + wait_s
        while live and time.monotonic() < deadline:
            live = [i for i in live if _same_process_alive(i)]
            if live:
                time.sleep(0.05)
    if reap:
        for info in infos:
            _reap(info.pid)
    return [i for i in infos if _same_process_alive(i)]


def stop_popen(proc, grace_s: float = GRACE_S) -> None:
    """Stop a job ``Popen`` still running (its whole process group) and reap it; then kill
    what is left of its group (helpers of a leader that already exited)."""
    if proc.poll() is None:
        info = proc_info(proc.pid)
        if info is not None:
            kill_processes([info], grace_s=grace_s, reap=False)
        try:
            proc.wait(timeout=10)
        except Exception:  # subprocess.TimeoutExpired: the session check reports it
            pass
    marker = os.environ.get(MARKER)
    left = [p for p in all_processes()
            if p.pgid == proc.pid and p.pid != proc.pid and p.alive
            and marker and proc_marker(p.pid) == marker]
    if left:
        kill_processes(left)


# -- pytest hooks and fixture --------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    # Every session gets its own marker (a pytest run inside a test is a session of its
    # own); an xdist worker keeps its controller's so the controller's check sees its jobs.
    if not hasattr(config, "workerinput"):
        os.environ[MARKER] = uuid.uuid4().hex


@pytest.fixture(autouse=True)
def _stop_job_processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Record every job process the test starts; stop those still running in teardown."""
    from napari_lesion_diffkd.core import job_runner

    original = job_runner.start_job_process
    started: list = []

    @functools.wraps(original)
    def recording(*args, **kwargs):
        proc = original(*args, **kwargs)
        started.append(proc)
        info = proc_info(proc.pid)
        if info is not None:
            _recorded.add((info.pid, info.start))
        return proc

    monkeypatch.setattr(job_runner, "start_job_process", recording)
    # Test modules that imported the function by name at import time.
    module = getattr(request, "module", None)
    if module is not None and getattr(module, "start_job_process", None) is original:
        monkeypatch.setattr(module, "start_job_process", recording)
    yield started
    for proc in started:
        stop_popen(proc)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill the job processes this session left behind, and fail the run if there were any."""
    if hasattr(session.config, "workerinput"):
        return  # the controller checks, once, for all workers
    leaked = session_job_processes()
    if not leaked:
        return
    still = kill_processes(leaked, grace_s=2.0)
    lines = [f"job processes left behind by this test session (killed): {len(leaked)}"]
    lines += [f"  pid {p.pid} (group {p.pgid}): {p.cmdline}" for p in leaked]
    lines += [f"  could NOT kill pid {p.pid}" for p in still]
    text = "\n".join(lines)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(text, red=True, bold=True)
    else:
        print(text, file=sys.stderr)
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
