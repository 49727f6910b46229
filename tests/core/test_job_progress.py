"""Jobs resume and show progress (issue 14, item 5): short or slow training checkpoints
by time as well as by steps (and at the end), the job log gets per-step progress lines at
a bounded rate, and a re-run says what it will do (from checkpoint N, or from the start).

Time is a fake clock here: nothing depends on how fast this machine is."""

from __future__ import annotations

import types
from pathlib import Path

from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.jobs import JobEvent, run_to_completion
from napari_lesion_diffkd.core.training import trainer as trainer_module
from napari_lesion_diffkd.core.training.config import TrainConfig
from tests.core.test_trainer import CONFIG


class FakeClock:
    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 1000.0, step_s

    def monotonic(self) -> float:
        self.now += self.step_s
        return self.now


def test_slow_short_job_checkpoints_every_two_minutes_and_at_the_end(
        ph2_subset: Path, tmp_path: Path, monkeypatch) -> None:
    """40 steps with checkpoint_every 250 used to checkpoint only at step 40. At (fake)
    ~20 s per step the job now checkpoints at least every 120 s, and at the end."""
    clock = FakeClock(10.0)
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    config = TrainConfig(**{**CONFIG, "max_steps": 40, "checkpoint_every": 250,
                            "batch_size": 2, "input_size": 16})
    assert config.checkpoint_seconds == 120.0  # the default
    at: list[tuple[int, float]] = []
    run_to_completion(trainer_module.train(config, scan_pairs(ph2_subset), tmp_path),
                      on_event=lambda e: at.append((e.step, clock.now))
                      if e.kind == "checkpoint" else None)
    steps = [s for s, _ in at]
    assert steps[-1] == 40 and len(steps) >= 5, steps
    assert steps[0] < 10
    gaps = [b - a for (_, a), (_, b) in zip(at, at[1:])]
    assert max(gaps) <= 120.0 + 40.0, gaps  # two minutes plus at most one (fake) step
    assert (tmp_path / trainer_module.CHECKPOINT_NAME).is_file()


def test_checkpoint_seconds_none_keeps_the_step_cadence(ph2_subset: Path, tmp_path: Path
                                                        ) -> None:
    config = TrainConfig(**{**CONFIG, "max_steps": 6, "checkpoint_every": 4,
                            "checkpoint_seconds": None})
    steps = []
    run_to_completion(trainer_module.train(config, scan_pairs(ph2_subset), tmp_path),
                      on_event=lambda e: steps.append(e.step) if e.kind == "checkpoint"
                      else None)
    assert steps == [4, 6]  # every 4 steps, and the end


class _Queue:
    def __init__(self) -> None:
        self.logs: list[str] = []

    def report(self, job_id, step, total, message, log, checkpoints) -> bool:
        self.logs.append(log)
        return False


def test_job_log_gets_progress_lines_at_a_bounded_rate() -> None:
    """1000 progress events over 100 (fake) seconds: one line per 5 s plus the last step,
    each with step/total, percent, loss and seconds per step."""
    from napari_lesion_diffkd.core.job_runner import ProgressReporter

    clock = types.SimpleNamespace(t=0.0)
    job = types.SimpleNamespace(id=1, step=0, total=0, message="", checkpoints=[])
    queue = _Queue()
    reporter = ProgressReporter(queue, job, min_interval=0.5, clock=lambda: clock.t)
    for step in range(1, 1001):
        clock.t = step * 0.1
        reporter(JobEvent("progress", step=step, total=1000, message="training",
                          values={"loss": 1.0 / step}))
    reporter.flush()
    lines = [line for chunk in queue.logs for line in chunk.splitlines() if "[progress]" in line]
    assert 15 <= len(lines) <= 21, lines
    assert "step 1000/1000 (100%)" in lines[-1]
    assert "loss" in lines[0] and "s/step" in lines[0] and "0.1 s/step" in lines[1]


def _job(tmp_path: Path, job_type: str = "train", checkpoints=None):
    return types.SimpleNamespace(id=3, type=job_type, checkpoints=checkpoints or [])


def test_resume_plan_says_what_a_rerun_will_do(tmp_path: Path) -> None:
    from napari_lesion_diffkd.core.job_runner import job_dir, resume_plan

    assert resume_plan(_job(tmp_path), tmp_path).startswith("from the start")
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"x")
    recorded = [{"step": 12, "path": str(ckpt)}, {"step": 20, "path": str(ckpt)}]
    assert resume_plan(_job(tmp_path, checkpoints=recorded), tmp_path) == \
        "from checkpoint at step 20"
    gone = [{"step": 12, "path": str(tmp_path / "deleted.pt")}]
    assert resume_plan(_job(tmp_path, checkpoints=gone), tmp_path).startswith("from the start")
    run = job_dir(tmp_path, 3) / "run"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"x")  # saved but not yet recorded in the row
    assert resume_plan(_job(tmp_path), tmp_path) == "from its last checkpoint"
    assert "skipped" in resume_plan(_job(tmp_path, "pseudo-label"), tmp_path)
