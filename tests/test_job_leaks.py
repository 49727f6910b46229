"""The leak guard of tests/_job_leaks.py works: pytest runs of tiny test files (in a
subprocess, with only that plugin loaded) that start fake job processes.

* started through ``core.job_runner.start_job_process`` (the Jobs panel, ``job submit
  --start``, ``loop``): the per-test fixture stops them in teardown, also when the test
  fails, and the run passes;
* started some other way (a direct ``Popen`` in a new session, an orphan whose parent
  exited): the session-end check kills them and the run FAILS naming them;
* never touched: a non-job process of the session, and a job process of another session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests._job_leaks import MARKER, kill_processes, proc_info

ROOT = Path(__file__).resolve().parents[1]
FAKE_JOB = [sys.executable, "-c", "import time; time.sleep(300)",
            "-m", "napari_lesion_diffkd.cli", "job", "run"]  # the job runner's command line

COMMON = f"""
import os, subprocess, sys
from pathlib import Path

FAKE_JOB = {FAKE_JOB!r}
OUT = Path(os.environ["LEAK_TEST_OUT"])


def note(name, pid):
    (OUT / name).write_text(str(pid))
"""

THROUGH_THE_RUNNER = COMMON + """
import pytest
from napari_lesion_diffkd.core import job_runner


def fake_start_job_process(project, job_id, **kwargs):
    return subprocess.Popen(FAKE_JOB + [str(job_id)], start_new_session=True)


job_runner.start_job_process = fake_start_job_process  # what the autouse fixture wraps


def test_passes_with_its_job_still_running():
    proc = job_runner.start_job_process("project", 1)
    note("passed", proc.pid)
    assert proc.poll() is None


@pytest.mark.xfail(strict=True, reason="a failing test must not leak its job either")
def test_fails_with_its_job_still_running():
    proc = job_runner.start_job_process("project", 2)
    note("failed", proc.pid)
    assert False, "the test fails while its job runs"
"""

ESCAPED = COMMON + """
ORPHAN = ("import subprocess, sys; print(subprocess.Popen(sys.argv[1:], "
          "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, "
          "start_new_session=True).pid)")


def test_leaks_job_processes():
    child = subprocess.Popen(FAKE_JOB + ["3"], start_new_session=True)
    note("child", child.pid)
    # its parent exits at once: the orphan is no descendant of pytest any more
    out = subprocess.run([sys.executable, "-c", ORPHAN, *FAKE_JOB, "4"],
                         capture_output=True, text=True, check=True)
    note("orphan", int(out.stdout))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                             start_new_session=True)
    note("not_a_job", other.pid)
"""


def alive(pid: int) -> bool:
    info = proc_info(pid)
    return info is not None and info.alive


def run_pytest(tmp_path: Path, name: str, source: str) -> tuple[subprocess.CompletedProcess,
                                                               dict[str, int]]:
    folder = tmp_path / name
    out = folder / "out"
    out.mkdir(parents=True)
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / f"test_{name}.py").write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEAK_TEST_OUT": str(out),
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    # Output to a file, not a pipe: a leaked process holding the pipe would block reading.
    with (folder / "output.txt").open("w+") as log:
        code = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests._job_leaks",
                               "-p", "no:cacheprovider", "-q", str(folder)], cwd=folder,
                              env=env, stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT, timeout=240).returncode
    result = subprocess.CompletedProcess([], code, (folder / "output.txt").read_text(), "")
    pids = {p.name: int(p.read_text()) for p in out.iterdir()}
    return result, pids


def test_jobs_started_through_the_runner_are_stopped_in_teardown(tmp_path) -> None:
    result, pids = run_pytest(tmp_path, "through_runner", THROUGH_THE_RUNNER)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 passed, 1 xfailed" in result.stdout
        assert "left behind" not in result.stdout
        assert sorted(pids) == ["failed", "passed"]
        assert not any(alive(pid) for pid in pids.values())
    finally:
        kill_processes([i for i in map(proc_info, pids.values()) if i is not None])


def test_escaped_job_processes_fail_the_run_and_are_killed(tmp_path) -> None:
    # A job process of another session (its own marker, and no descendant of the inner
    # pytest) runs alongside: the inner session must not touch it.
    others = subprocess.Popen(FAKE_JOB + ["9"], start_new_session=True,
                              env={**os.environ, MARKER: "another-session"})
    pids: dict[str, int] = {}
    try:
        result, pids = run_pytest(tmp_path, "escaped", ESCAPED)
        out = result.stdout + result.stderr
        assert "1 passed" in result.stdout, out
        assert result.returncode == 1, out
        assert "job processes left behind by this test session (killed): 2" in out
        for name in ("child", "orphan"):
            assert f"pid {pids[name]} " in out
            assert not alive(pids[name]), name
        assert alive(pids["not_a_job"]), "a process that is no job was killed"
        assert f"pid {others.pid} " not in out and others.poll() is None, \
            "another session's job process was touched"
    finally:
        others.kill()
        others.wait()
        kill_processes([i for i in map(proc_info, pids.values()) if i is not None])
