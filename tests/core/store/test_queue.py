"""The job queue without running jobs: device claims, stale processes, state rules, the
throttled progress reporter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_lesion_diffkd.core.job_runner import ProgressReporter, submit_job
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.store import InvalidInputError, JobStateError, ProjectStore
from napari_lesion_diffkd.core.store.procs import pid_alive, pid_token


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_heavy_job_per_device(tmp_path: Path) -> None:
    with ProjectStore.create(tmp_path / "p") as store:
        q = store.jobs
        a, b, c = (q.submit("predict", {"model": "m"}) for _ in range(3))
        light = q.submit("score", {"model": "m"}, heavy=False)
        assert q.claim(a.id, "cpu").claimed
        refused = q.claim(b.id, "cpu")
        assert not refused.claimed and refused.holder == a.id and refused.status == "queued"
        assert q.claim(c.id, "cuda:0").claimed  # another device is free
        assert q.claim(light.id, "cpu").claimed  # a light job needs no claim
        assert q.get(b.id).status == "queued"
        assert not q.claim(a.id, "cpu").claimed  # already running
        with pytest.raises(JobStateError, match="running"):
            q.requeue(a.id)
        q.finish(a.id, "done", result={"ok": 1})
        assert q.claim(b.id, "cpu").claimed  # released when a finished
        with pytest.raises(JobStateError, match="already done"):
            q.requeue(a.id)
        with pytest.raises(InvalidInputError, match="unknown job type"):
            submit_job(store, "paint", {})
        with pytest.raises(InvalidInputError, match="bad job type name"):
            q.submit("../train", {})  # the store checks the name's form only


def test_a_dead_process_is_found_and_its_device_freed(tmp_path: Path) -> None:
    with ProjectStore.create(tmp_path / "p") as store:
        q = store.jobs
        train = q.submit("train", {"train_config": "x.yaml"})
        score = q.submit("score", {"model": "m"})
        waiting = q.submit("predict", {"model": "m"})
        dead = _dead_pid()
        assert not pid_alive(dead) and pid_alive(os.getpid(), pid_token(os.getpid()))
        assert not pid_alive(os.getpid(), "1")  # same pid, other start time: pid reused
        assert q.claim(train.id, "cpu", pid=dead).claimed
        assert q.claim(score.id, "cuda:0", pid=dead).claimed
        # The next claim reaps both: the device is free again.
        assert q.claim(waiting.id, "cpu").claimed
        t, s = q.get(train.id), q.get(score.id)
        assert t.status == s.status == "failed" and "without reporting" in t.error
        assert not t.resumable  # no checkpoint recorded
        assert s.resumable  # per-image jobs always continue
        assert q.requeue(s.id).status == "queued"  # a re-run resumes it


def test_cancel_rules(tmp_path: Path) -> None:
    with ProjectStore.create(tmp_path / "p") as store:
        q = store.jobs
        queued = q.submit("predict", {"model": "m"})
        assert q.request_cancel(queued.id).status == "cancelled"
        running = q.submit("predict", {"model": "m"})
        q.claim(running.id, "cpu")
        job = q.request_cancel(running.id)
        assert job.status == "running" and job.cancel_requested
        assert q.report(running.id, 1, 2, "working")  # the runner learns it here
        ended = q.finish(running.id, "cancelled")
        assert ended.status == "cancelled" and ended.resumable
        assert q.requeue(running.id).cancel_requested is False


def test_progress_writes_are_throttled(tmp_path: Path) -> None:
    with ProjectStore.create(tmp_path / "p") as store:
        q = store.jobs
        job = q.submit("train", {})
        q.claim(job.id, "cpu")
        now = [0.0]
        reporter = ProgressReporter(q, q.get(job.id), min_interval=0.5, clock=lambda: now[0])
        for step in range(1, 301):  # 300 events over 3 s
            now[0] = step * 0.01
            kind = "checkpoint" if step % 100 == 0 else "progress"
            reporter(JobEvent(kind, step=step, total=300, message="/run/ckpt.pt"
                              if kind == "checkpoint" else "training"))
        reporter.flush()
        assert reporter.writes <= 3 / 0.5 + 2
        row = q.get(job.id)
        assert (row.step, row.total, row.progress) == (300, 300, 1.0)
        assert row.checkpoints == [{"step": 300, "path": "/run/ckpt.pt"}]
        assert row.log.count("[checkpoint]") == 3
