"""A job that fails on a full disk or on a refused checkpoint keeps its cause in the row,
in one line, and leaves no partial checkpoint (findings 7, 8)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core import job_runner
from napari_lesion_diffkd.core.checkpoint_save import save_checkpoint
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.store import ProjectStore


class NotAllowed:
    """A class ``torch.load(weights_only=True)`` refuses to unpickle."""


def _use_task(monkeypatch: pytest.MonkeyPatch, task) -> None:
    monkeypatch.setattr(job_runner, "job_types", lambda: {"fake": task})


def _fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, fsync (every atomic write) fails with ENOSPC, as on a full disk."""

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


def test_full_disk_mid_job_keeps_the_cause_and_no_partial_checkpoint(
        project: ProjectStore, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    state = {"model": torch.arange(1000.0), "step": torch.tensor(1)}

    def task(ctx) -> Iterator[JobEvent]:
        path = ctx.work_dir / "run" / "checkpoint.pt"
        save_checkpoint(state, path)
        yield JobEvent("checkpoint", step=1, message=str(path))
        # The disk fills up: the next checkpoint fails, and so would a long row update
        # (SQLite's real "database or disk is full", from a page limit on this connection).
        _fill_the_disk(monkeypatch)
        pages = ctx.store.conn.execute("PRAGMA page_count").fetchone()[0]
        ctx.store.conn.execute(f"PRAGMA max_page_count = {pages}")
        save_checkpoint({**state, "step": torch.tensor(2), "pad": torch.zeros(50_000)}, path)
        yield JobEvent("log", message="not reached")
        return {}

    _use_task(monkeypatch, task)
    job = project.jobs.submit("fake", {"device": "cpu"})
    code = main(["job", "run", str(job.id), "--project", str(project.root)])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith(f"error: job {job.id}: disk full:")
    assert err.count("\n") == 1 and "Traceback" not in out + err
    monkeypatch.undo()
    row = project.jobs.get(job.id)
    assert row.status == "failed" and row.resumable
    assert row.error.startswith("disk full: saving the checkpoint") and "\n" not in row.error
    run = project.root / "jobs" / str(job.id) / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]  # no partial temp
    kept = torch.load(run / "checkpoint.pt", weights_only=True)
    assert int(kept["step"]) == 1 and torch.equal(kept["model"], state["model"])
    assert "Traceback" in (run.parent / job_runner.TRACEBACK_FILE).read_text()


def test_the_row_keeps_the_cause_when_the_first_final_write_does_not_fit(
        project: ProjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def task(ctx) -> Iterator[JobEvent]:
        yield JobEvent("log", message="working")
        pages = ctx.store.conn.execute("PRAGMA page_count").fetchone()[0]
        ctx.store.conn.execute(f"PRAGMA max_page_count = {pages}")
        raise OSError(errno.ENOSPC, "No space left on device: " + "x" * 20_000)

    _use_task(monkeypatch, task)
    job = project.jobs.submit("fake", {"device": "cpu"})
    row = job_runner.run_job(project.root, job.id, report_interval=0)
    assert row.status == "failed" and row.error.startswith("disk full: ")
    assert len(row.error) <= job_runner.REASON_CHARS
    assert "Traceback" not in row.log  # the full write did not fit; the short one did


def test_resume_from_a_refused_pickle_fails_the_job_in_one_line(
        project: ProjectStore, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from napari_lesion_diffkd.core.checkpoint_load import load_checkpoint

    def task(ctx) -> Iterator[JobEvent]:
        path = ctx.work_dir / "run" / "checkpoint.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": NotAllowed()}, path)  # a foreign / malicious checkpoint
        yield JobEvent("log", message=f"resuming from {path}")
        load_checkpoint(path, "cpu")
        return {}

    _use_task(monkeypatch, task)
    job = project.jobs.submit("fake", {"device": "cpu"})
    code = main(["job", "run", str(job.id), "--project", str(project.root)])
    out, err = capsys.readouterr()
    row = project.jobs.get(job.id)
    assert code == 1 and row.status == "failed" and "\n" not in row.error
    assert row.error.startswith("CheckpointLoadError:")
    assert "Traceback" not in out + err and "Traceback" in row.log


def test_disk_full_in_a_label_save_leaves_no_file_and_no_row(project: ProjectStore) -> None:
    image = project.images()[0]
    before = {p for p in (project.root / "labels").rglob("*") if p.is_file()}
    versions = len(project.label_versions())
    pages = project.conn.execute("PRAGMA page_count").fetchone()[0]
    project.conn.execute(f"PRAGMA max_page_count = {pages}")
    labels = np.ones(image.shape, np.uint8)
    from napari_lesion_diffkd.core.store.errors import DiskFullError

    with pytest.raises(DiskFullError, match="^disk full:"):
        for i in range(200):  # until the page limit bites
            project.save_label(image, labels, note="x" * 3000 + str(i))
    after = {p for p in (project.root / "labels").rglob("*") if p.is_file()}
    assert len(after - before) == len(project.label_versions()) - versions  # no orphan
