"""Jobs in their own process: cancel stops the process group and keeps the checkpoint;
SIGKILL mid-training leaves a consistent, resumable job; re-runs resume and finish; a second
heavy job waits for the device."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from napari_lesion_diffkd.core.job_runner import (
    PROCESS_LOG,
    cancel_job,
    job_dir,
    run_job,
    start_job_process,
)
from napari_lesion_diffkd.core.store import ProjectStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = Path(__file__).parents[2] / "fixtures" / "tiny_train.yaml"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_config(minutes: float) -> dict:
    """The tiny PH2 model, stopped by a time budget (so a kill always lands mid-run) with
    a checkpoint every 3 steps and one validation at the end."""
    return {"train_config": str(TINY), "device": "cpu", "threads": 1,
            "overrides": {"max_steps": 100_000, "max_minutes": minutes,
                          "checkpoint_every": 3, "val_every": 100_000}}


def wait_for_checkpoint(store: ProjectStore, job_id: int, proc, after: int = 0) -> int:
    """Poll the job row until it lists a checkpoint newer than step ``after``; its step."""
    deadline = time.monotonic() + 90
    while True:
        checkpoints = store.jobs.get(job_id).checkpoints
        if checkpoints and checkpoints[-1]["step"] > after:
            return int(checkpoints[-1]["step"])
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (job_dir(store.root, job_id) / PROCESS_LOG).read_text()
            pytest.fail(f"job process ended or hung before a checkpoint:\n{log}")
        time.sleep(0.05)


def test_cancel_then_sigkill_mid_training_then_resume_to_the_end(
        project: ProjectStore) -> None:
    # 2.4 s of training in all, summed over the attempts (the budget is checkpointed).
    job = project.jobs.submit("train", train_config(minutes=0.04))

    # 1. Cancel: SIGTERM to the process group; the job ends itself, the checkpoint stays.
    proc = start_job_process(project.root, job.id, env=ONE_THREAD)
    wait_for_checkpoint(project, job.id, proc)
    row = cancel_job(project.root, job.id, grace_s=30, process=proc)
    assert proc.wait(timeout=30) == 3  # the job process wrote "cancelled" itself
    assert row.status == "cancelled" and row.resumable and "[status] cancelled" in row.log
    checkpoint = Path(row.checkpoints[-1]["path"])
    cancelled_at = int(torch.load(checkpoint, weights_only=True)["step"])
    assert cancelled_at >= 3

    # 2. Re-run (it resumes), then SIGKILL mid-training: no chance to write anything.
    proc = start_job_process(project.root, job.id, env=ONE_THREAD)
    wait_for_checkpoint(project, job.id, proc, after=cancelled_at)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    with ProjectStore(project.root) as store:  # what a GUI sees after the crash
        assert store.check().ok
        assert store.jobs.get(job.id).status == "running"  # nobody has noticed yet
        assert store.jobs.reap_stale() == [job.id]
        row = store.jobs.get(job.id)
        assert row.status == "failed" and row.resumable and "killed" in row.error
        assert store.conn.execute("SELECT COUNT(*) FROM device_claims").fetchone()[0] == 0
        killed_at = int(torch.load(checkpoint, weights_only=True)["step"])
        assert killed_at > cancelled_at and not store.models()

    # 3. Re-run to the end (here in-process).
    final = run_job(project.root, job.id)
    assert final.status == "done", final.log
    assert final.attempts == 3 and final.progress == 1.0
    assert final.log.count("resumed at step") == 2
    assert final.result["steps"] > killed_at
    (model,) = project.models()
    assert model.tag == "tiny-dermoscopy@v1" and (model.path / "model.safetensors").is_file()
    assert model.job_id == job.id and project.check().ok


def test_a_second_heavy_job_waits_for_the_device(project: ProjectStore) -> None:
    """A predict job started while a training job holds the CPU waits (and says so) until
    the training ends, then runs. The training is held open by a long budget and cancelled
    only once the second job has announced its wait, so no timing decides the outcome."""
    trainer = project.jobs.submit("train", train_config(minutes=5))
    first = start_job_process(project.root, trainer.id, poll_s=0.1, env=ONE_THREAD)
    wait_for_checkpoint(project, trainer.id, first)  # it holds the CPU now
    names = [image.name for image in project.images()[:2]]
    predict = project.jobs.submit("predict", {
        "model": "dermoscopy-student", "num_samples": 2, "device": "cpu", "threads": 1,
        "images": names, "reuse": False})
    second = start_job_process(project.root, predict.id, poll_s=0.1, env=ONE_THREAD)
    log = job_dir(project.root, predict.id) / PROCESS_LOG
    deadline = time.monotonic() + 90
    while not (log.is_file() and "waits for cpu" in log.read_text()):
        if second.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the second job did not wait for the CPU:\n"
                        + (log.read_text() if log.is_file() else "(no log)"))
        time.sleep(0.05)
    assert project.jobs.get(predict.id).status == "queued"
    cancel_job(project.root, trainer.id, grace_s=30, process=first)
    assert first.wait(timeout=30) == 3
    assert second.wait(timeout=120) == 0
    a, b = project.jobs.get(trainer.id), project.jobs.get(predict.id)
    assert (a.status, b.status) == ("cancelled", "done")
    assert b.started_at >= a.finished_at  # never both on the CPU at once
    assert f"held by job {trainer.id}" in log.read_text()
    assert len(project.predictions()) == 2


def test_a_job_cancelled_before_its_process_starts_stays_cancelled(
        project: ProjectStore) -> None:
    """The GUI submits, then starts a process with resume=False; a Cancel in between wins.
    An explicit resume (the default of ``job run``) still runs it."""
    names = [image.name for image in project.images()[:1]]
    config = {"model": "dermoscopy-student", "num_samples": 2, "device": "cpu",
              "threads": 1, "images": names, "reuse": False}
    job = project.jobs.submit("predict", config)
    cancel_job(project.root, job.id, grace_s=0.1)
    assert project.jobs.get(job.id).status == "cancelled"
    proc = start_job_process(project.root, job.id, poll_s=0.1, env=ONE_THREAD, resume=False)
    proc.wait(timeout=120)
    assert project.jobs.get(job.id).status == "cancelled"
    assert not project.predictions()
    assert run_job(project.root, job.id).status == "done"  # resuming on purpose runs it
    assert len(project.predictions()) == 1
