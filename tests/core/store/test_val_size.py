"""A fine-tuned model records and shows how many validation images its Dice comes from
(issue 14, item 8): the registered metrics hold ``n_val``, the bundle gets a model card
with the size and a warning below 10 images, and the job log says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_lesion_diffkd.core.job_runner import run_job
from napari_lesion_diffkd.core.store import ProjectStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).parents[2] / "fixtures"


def test_train_job_records_validation_size_and_warns_in_the_card(project: ProjectStore
                                                                 ) -> None:
    job = project.jobs.submit("train", {
        "train_config": str(FIXTURES / "tiny_train.yaml"), "device": "cpu", "threads": 1,
        "overrides": {"max_steps": 2, "val_every": 2, "checkpoint_every": 2}})
    done = run_job(project.root, job.id)
    assert done.status == "done", done.log
    model = project.find_model(done.result["model"])
    n_val = done.result["n_val"]
    assert 1 <= n_val < 10 and model.metrics["n_val"] == n_val
    card = (model.path / "README.md").read_text()
    assert f"| validation images | {n_val} |" in card
    assert "**Warning:** the validation Dice comes from only" in card
    assert "validation Dice is from only" in done.log
    # The job log also shows per-step progress (at most one line per 5 s, and the end).
    assert "[progress] step 2/2 (100%)" in done.log

