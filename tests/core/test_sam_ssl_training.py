"""``train_sam_ssl`` on 12 real PH2 pairs with a tiny student and the registered
lesion-sam-tiny: exact resume, the baseline's identical labelled stream, budget, bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs
from napari_lesion_diffkd.core.distillation.sam_ssl import (
    SamSslConfig,
    load_student,
    predict_student,
    train_sam_ssl,
)
from napari_lesion_diffkd.core.distillation.sam_ssl.trainer import CHECKPOINT_NAME, LOG_NAME
from napari_lesion_diffkd.core.jobs import run_to_completion

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"input_size": 32, "network": {"widths": [8, 8, 8, 8, 8], "depths": [1, 1, 1, 1, 1],
                                      "expand_ratio": 2, "decoder_widths": [8, 8]},
        "batch_size": 2, "unlabelled_batch_size": 2, "max_steps": 6, "val_every": 2,
        "checkpoint_every": 3, "label_fraction": 0.25, "warmup_steps": 2,
        "rampup_fraction": 0.5, "val_pseudo_max": 3}


@pytest.fixture(scope="module")
def teacher():
    from napari_lesion_diffkd.core.sam.loading import load_sam

    return load_sam("lesion-sam-tiny")


@pytest.fixture(scope="module")
def records(ph2_subset: Path):
    return scan_pairs(ph2_subset)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / CHECKPOINT_NAME, weights_only=True)["model"]


def test_resume_equals_uninterrupted(tmp_path: Path, records, teacher) -> None:
    config = SamSslConfig(**TINY)
    full = run_to_completion(train_sam_ssl(config, records, tmp_path / "a", teacher=teacher))
    gen = train_sam_ssl(config, records, tmp_path / "b", teacher=teacher)
    for event in gen:  # stop right after the step-3 checkpoint, as a killed job would
        if event.kind == "checkpoint" and event.step == 3:
            gen.close()
            break
    assert torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)["step"] == 3
    resumed = run_to_completion(train_sam_ssl(config, records, tmp_path / "b", teacher=teacher,
                                              resume=True))
    a, b = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["val"] == full["val"] and resumed["pseudo"] == full["pseudo"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / LOG_NAME).read_text().splitlines()]
    log_a = [json.loads(x)["step"] for x in (tmp_path / "a" / LOG_NAME).read_text().splitlines()]
    assert steps == log_a  # the resumed log has no duplicated or missing entries
    assert full["n_labelled"] == 2 and full["n_unlabelled"] == 7 and full["n_val"] == 3
    assert full["pseudo"]["n"] == 7 and 0 <= full["pseudo"]["pseudo_dice"] <= 1


def test_baseline_sees_the_same_labelled_stream_and_the_bundle_predicts(
        tmp_path: Path, records, teacher, monkeypatch) -> None:
    """Supervised-only draws the same labelled batches as SSL; only SAM's guidance differs."""
    from napari_lesion_diffkd.core.distillation.sam_ssl import trainer as trainer_mod

    seen: dict[str, list[torch.Tensor]] = {"ssl": [], "sup": []}
    original = trainer_mod.augment_pair
    arm = {"name": "ssl"}

    def spy(images, maps, binary, gen, **kw):
        out = original(images, maps, binary, gen, **kw)
        if binary == [True]:  # the labelled batch
            seen[arm["name"]].append(out[0].clone())
        return out

    monkeypatch.setattr(trainer_mod, "augment_pair", spy)
    config = SamSslConfig(**{**TINY, "max_steps": 3})
    ssl = run_to_completion(train_sam_ssl(config, records, tmp_path / "ssl", teacher=teacher))
    arm["name"] = "sup"
    sup_config = SamSslConfig(**{**TINY, "max_steps": 3, "supervised_only": True})
    sup = run_to_completion(train_sam_ssl(sup_config, records, tmp_path / "sup"))
    assert len(seen["ssl"]) == len(seen["sup"]) == 3
    for a, b in zip(seen["ssl"], seen["sup"]):
        assert torch.equal(a, b)
    assert sup["supervised_only"] and sup["n_unlabelled"] == 0 and sup["pseudo"] == {"n": 0}
    assert ssl["n_labelled"] == sup["n_labelled"]
    eval_ssl = json.loads((tmp_path / "ssl" / "eval.json").read_text())
    eval_sup = json.loads((tmp_path / "sup" / "eval.json").read_text())
    assert eval_ssl["labelled_ids"] == eval_sup["labelled_ids"]
    assert eval_ssl["val_ids"] == eval_sup["val_ids"]
    assert not set(eval_ssl["labelled_ids"]) & set(eval_ssl["val_ids"])

    student = load_student(tmp_path / "ssl")
    assert student.config["kind"] == "sam-ssl-student"
    assert student.config["provenance"]["train_config"]["label_fraction"] == 0.25
    image, _ = read_pair(records[0])
    pred = predict_student(student, image)
    assert pred.probability.shape == pred.mask.shape == pred.sdf.shape == image.shape[:2]
    assert pred.mask.dtype == np.bool_ and -1 <= pred.sdf.min() <= pred.sdf.max() <= 1
    with pytest.raises(Exception, match="not a sam-ssl-student"):
        load_student(Path(__file__).parents[2] / "models" / "lesion-sam-tiny")


def test_time_budget_and_argument_errors(tmp_path: Path, records, teacher) -> None:
    config = SamSslConfig(**{**TINY, "max_steps": 1000, "max_minutes": 0.0})
    result = run_to_completion(train_sam_ssl(config, records, tmp_path / "t", teacher=teacher))
    assert result["stopped_by_budget"] and result["steps"] == 0
    assert (tmp_path / "t" / "model.safetensors").is_file()
    with pytest.raises(FileNotFoundError, match="resume"):
        run_to_completion(train_sam_ssl(SamSslConfig(**TINY), records, tmp_path / "none",
                                        teacher=teacher, resume=True))
    with pytest.raises(ValueError, match="teacher"):
        run_to_completion(train_sam_ssl(SamSslConfig(**TINY), records, tmp_path / "x"))
    with pytest.raises(ValueError, match="unknown sam-ssl config keys"):
        SamSslConfig.from_dict({"lables": 0.1})
    with pytest.raises(ValueError, match="fusion"):
        SamSslConfig(fusion="average")
