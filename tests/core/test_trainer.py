"""Training loop: checkpoint/resume gives the same weights as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.training.config import TrainConfig
from napari_lesion_diffkd.core.training.trainer import train

CONFIG = dict(
    name="resume-test", input_size=32,
    network={"_class_name": "CondDiffusionUNet", "base_channels": 8, "channel_mults": [1, 2],
             "image_base_channels": 8, "image_channel_mults": [1, 2], "time_dim": 16,
             "stem_stride": 2, "image_blocks_per_level": 1},
    schedule={"kind": "linear", "num_timesteps": 50}, batch_size=4, max_steps=8,
    warmup_steps=2, val_every=100, checkpoint_every=4, val_samples=1, val_steps=1,
)


def test_resume_after_a_stop_matches_an_uninterrupted_run(ph2_subset: Path, tmp_path: Path
                                                          ) -> None:
    records = scan_pairs(ph2_subset)
    full = run_to_completion(train(TrainConfig(**CONFIG), records, tmp_path / "full"))
    assert full["steps"] == 8

    # Stop right after the step-4 checkpoint (as a kill would), then resume.
    gen = train(TrainConfig(**CONFIG), records, tmp_path / "split")
    for event in gen:
        if event.kind == "checkpoint" and event.step == 4:
            break
    gen.close()
    resumed = run_to_completion(
        train(TrainConfig(**CONFIG), records, tmp_path / "split", resume=True)
    )
    assert resumed["steps"] == 8
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    wa = load_file(tmp_path / "full" / "model.safetensors")
    wb = load_file(tmp_path / "split" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_lowers_the_loss(ph2_subset: Path, tmp_path: Path) -> None:
    losses = []
    config = TrainConfig(**{**CONFIG, "max_steps": 30, "lr": 3e-3})
    run_to_completion(train(config, scan_pairs(ph2_subset), tmp_path),
                      on_event=lambda e: losses.append(e.values["loss"])
                      if e.kind == "progress" else None)
    assert losses[-1] < 0.8 * losses[0]


def test_a_time_budget_stop_still_validates_and_writes_the_bundle(ph2_subset: Path,
                                                                  tmp_path: Path) -> None:
    config = TrainConfig(**{**CONFIG, "max_steps": 1000, "val_every": 1000,
                            "max_minutes": 0.002})
    summary = run_to_completion(train(config, scan_pairs(ph2_subset), tmp_path))
    assert 0 < summary["steps"] < 1000
    assert (tmp_path / "model.safetensors").is_file()
    log = (tmp_path / "train_log.jsonl").read_text()
    assert '"val_dice"' in log  # the final validation after the stop was logged
