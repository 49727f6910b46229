"""The job types, run in-process through ``lesion-diffkd job`` and ``run_job``: predict /
pseudo-label / score with the shipped student on real PH2 images; train from the project's
human labels, fine-tune from a project model, distil from a project teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core.job_runner import job_dir, run_job
from napari_lesion_diffkd.core.store import ProjectStore
from tests.core.store.conftest import UNLABELLED

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).parents[2] / "fixtures"
STUDENT = {"model": "dermoscopy-student", "num_samples": 3, "device": "cpu", "threads": 1}


def _submit(project: ProjectStore, job_type: str, config: dict, capsys) -> int:
    assert main(["job", "submit", job_type, "--config", json.dumps(config),
                 "--project", str(project.root)]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])["id"]


def test_pseudo_label_and_score_jobs_through_the_cli(project: ProjectStore, capsys) -> None:
    humans_before = project.label_versions(kind="human")
    job_id = _submit(project, "pseudo-label", STUDENT, capsys)
    assert main(["job", "run", str(job_id), "--project", str(project.root)]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["status"] == "done"
    assert out["result"]["pseudo_labels"] == out["result"]["predicted"] == UNLABELLED
    for image in project.unlabelled_images():
        label = project.current_label(image)
        assert label.kind == "pseudo" and label.author == f"job:{job_id}"
        assert label.model_name == "dermoscopy-student"
        assert label.model_version.startswith("sha256:")
        prediction = project.predictions(image)[0]
        consensus = project.read_prediction(prediction, "consensus")
        np.testing.assert_array_equal(project.read_label(label), consensus)
        samples = project.read_prediction(prediction, "samples")
        assert samples.shape == (3, *image.shape) and samples.dtype == np.uint8
        unc = project.read_prediction(prediction, "uncertainty")
        assert unc.dtype == np.float32 and unc.shape == image.shape
        assert 0.0 < consensus.mean() < 1.0  # a real lesion, not an empty mask
    assert project.label_versions(kind="human") == humans_before  # humans untouched

    # Score every image: the two already predicted with these settings are reused.
    score_id = _submit(project, "score", {**STUDENT, "images": "all"}, capsys)
    job = run_job(project.root, score_id)
    assert job.status == "done"
    assert (job.result["reused"], job.result["predicted"]) == (UNLABELLED, 8 - UNLABELLED)
    scores = [r["score"] for r in job.result["ranking"]]
    assert len(scores) == 8 and scores == sorted(scores, reverse=True)
    assert job.result["score_key"] == "sample_disagreement"

    # list, cancel of a queued job, re-running a finished one.
    queued_id = _submit(project, "predict", STUDENT, capsys)
    assert main(["job", "cancel", str(queued_id), "--project", str(project.root)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert main(["job", "list", "--json", "--project", str(project.root)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["type"], r["status"]) for r in rows] == [
        ("pseudo-label", "done"), ("score", "done"), ("predict", "cancelled")]
    assert main(["job", "run", str(job_id), "--project", str(project.root)]) == 2
    assert "already done" in capsys.readouterr().err


def test_train_finetune_and_distill_jobs(project: ProjectStore, tiny_bundle: Path) -> None:
    quick = {"max_steps": 4, "val_every": 4, "checkpoint_every": 4}
    # Train on the project's own human labels (exported into the job folder).
    train = project.jobs.submit("train", {"train_config": str(FIXTURES / "tiny_train.yaml"),
                                          "overrides": quick, "device": "cpu", "threads": 1})
    done = run_job(project.root, train.id)
    assert done.status == "done", done.log
    assert done.result["model"] == "tiny-dermoscopy@v1" and done.result["steps"] == 4
    data = job_dir(project.root, train.id) / "data"
    assert len(list((data / "masks").iterdir())) == 8 - UNLABELLED
    v1 = project.find_model("tiny-dermoscopy")

    # Fine-tune from it: with zero steps the bundle holds exactly the starting weights.
    tune = project.jobs.submit("train", {"train_config": str(FIXTURES / "tiny_train.yaml"),
                                         "init_model": "tiny-dermoscopy@v1",
                                         "overrides": {"max_steps": 0}, "device": "cpu"})
    done = run_job(project.root, tune.id)
    assert done.status == "done" and done.result["model"] == "tiny-dermoscopy@v2", done.log
    a = load_file(v1.path / "model.safetensors")
    b = load_file(project.find_model("tiny-dermoscopy@v2").path / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

    # Distil a student from a teacher given by path (a project model works the same way).
    distill = project.jobs.submit("distill", {
        "teacher": str(tiny_bundle), "student_config": str(FIXTURES / "tiny_student.yaml"),
        "overrides": quick, "device": "cpu", "threads": 1})
    done = run_job(project.root, distill.id)
    assert done.status == "done", done.log
    assert done.result["model"] == "tiny-dermoscopy-student@v1"
    snapshot = json.loads((job_dir(project.root, distill.id) / "train_config.json").read_text())
    assert snapshot["teacher"] == str(tiny_bundle) and snapshot["objective"] == "trajectory"

    # A job that cannot work fails with the reason, and nothing else changes.
    bad = project.jobs.submit("train", {"train_config": "missing.yaml", "device": "cpu"})
    failed = run_job(project.root, bad.id)
    assert failed.status == "failed" and "missing.yaml" in failed.error
    assert len(project.models()) == 3 and project.check().ok


def test_sam_finetune_job_trains_on_the_human_labels(project: ProjectStore) -> None:
    from napari_lesion_diffkd.core.sam.loading import load_sam

    micro = {"img_size": 64, "patch_size": 16, "encoder_embed_dim": 32, "encoder_depth": 1,
             "encoder_num_heads": 2, "encoder_global_attn_indexes": [0], "window_size": 4,
             "prompt_embed_dim": 32, "mask_in_chans": 4, "decoder_mlp_dim": 64,
             "decoder_num_heads": 2, "iou_head_hidden_dim": 32}
    config = {"name": "project-sam", "tiny": micro, "batch_size": 2, "max_steps": 3,
              "warmup_steps": 1, "val_every": 3, "checkpoint_every": 3, "val_max_images": 2,
              "amp_bf16": False}
    job = project.jobs.submit("sam-finetune", {"sam_config": config, "device": "cpu",
                                               "threads": 1})
    done = run_job(project.root, job.id)
    assert done.status == "done", done.log
    assert done.result["model"] == "project-sam@v1" and done.result["steps"] == 3
    data = job_dir(project.root, job.id) / "data"
    assert len(list((data / "masks").iterdir())) == 8 - UNLABELLED
    record = project.find_model("project-sam")
    assert record.role == "promptable"
    assert load_sam(record.path).arch == "tiny"
    # A bad config fails with its reason and registers nothing.
    bad = project.jobs.submit("sam-finetune", {"sam_config": {"epochs": 3}, "device": "cpu"})
    failed = run_job(project.root, bad.id)
    assert failed.status == "failed" and "sam_config" in (failed.error or "")
    assert [m.tag for m in project.models("project-sam")] == ["project-sam@v1"]
