"""train_promptable and ``lesion-diffkd sam-finetune`` on real PH2 pairs, micro model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.sam import training
from napari_lesion_diffkd.core.sam.loading import load_sam
from napari_lesion_diffkd.core.sam.training import SamTrainConfig, train_promptable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO = {"img_size": 64, "patch_size": 16, "encoder_embed_dim": 32, "encoder_depth": 1,
         "encoder_num_heads": 2, "encoder_global_attn_indexes": [0], "window_size": 4,
         "prompt_embed_dim": 32, "mask_in_chans": 4, "decoder_mlp_dim": 64,
         "decoder_num_heads": 2, "iou_head_hidden_dim": 32}


def _config(**over) -> dict:
    base = {"name": "micro-sam", "tiny": MICRO, "batch_size": 4, "max_steps": 4,
            "warmup_steps": 2, "val_every": 2, "checkpoint_every": 2, "val_max_images": 2,
            "amp_bf16": False}
    base.update(over)
    return base


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, ph2_subset: Path) -> tuple[Path, dict]:
    """``lesion-diffkd sam-finetune`` with a micro config: 4 steps on 12 PH2 pairs."""
    import contextlib
    import io

    from napari_lesion_diffkd.cli import main

    tmp = tmp_path_factory.mktemp("sam_cli")
    cfg = tmp / "micro.yaml"
    cfg.write_text(yaml.safe_dump(_config()))
    out = tmp / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["sam-finetune", "--config", str(cfg), "--data", str(ph2_subset),
                     "--out", str(out), "--device", "cpu", "--max-minutes", "5"])
    assert code == 0
    return out, json.loads(stdout.getvalue().strip().splitlines()[-1])


def test_cli_writes_a_loadable_bundle_and_evaluation(cli_run) -> None:
    out, summary = cli_run
    assert summary["steps"] == 4 and summary["trainable"] == summary["num_parameters"]
    for name in ("config.json", "model.safetensors", "eval.json", "checkpoint.pt",
                 "train_log.jsonl"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["name"] == "micro-sam" and cfg["sam"]["tiny_config"]["img_size"] == 64
    assert cfg["provenance"]["train_config"]["max_steps"] == 4
    # The command line is recorded when there is one (under plain `pytest` argv is bare).
    assert "command" in cfg["provenance"] and cfg["provenance"]["val_ids"]
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["all"]["n"] == len(cfg["provenance"]["val_ids"]) > 0
    assert 0 <= evaluation["all"]["box_dice"] <= 1
    loaded = load_sam(out)
    assert loaded.img_size == 64 and tuple(loaded.model.prompt_encoder.mask_input_size) == (16, 16)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("val_score" in e for e in log)


def test_stop_between_yields_then_resume(tmp_path, ph2_subset) -> None:
    records = scan_pairs(ph2_subset)
    config = SamTrainConfig.from_dict(_config(max_steps=5))
    gen = train_promptable(config, records, tmp_path, device="cpu")
    kinds = []
    for event in gen:
        kinds.append(event.kind)
        if event.kind == "checkpoint":
            assert event.step == 2
            gen.close()  # what the GUI's Cancel does
            break
    assert {"log", "progress", "metric", "checkpoint"} <= set(kinds)
    assert not (tmp_path / "config.json").exists()
    events = []
    gen = train_promptable(config, records, tmp_path, device="cpu", resume=True)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert any(e.message == "resumed at step 2" for e in events)
    progress = [e.step for e in events if e.kind == "progress"]
    assert progress == [3, 4, 5] and result["steps"] == 5
    assert load_sam(tmp_path).arch == "tiny"
    with pytest.raises(FileNotFoundError):
        next(train_promptable(config, records, tmp_path / "empty", resume=True))


def test_lora_fine_tune_of_a_bundle(tmp_path, cli_run, ph2_subset) -> None:
    base, _ = cli_run
    config = SamTrainConfig.from_dict(_config(base=str(base), lora_rank=2, max_steps=2))
    gen = train_promptable(config, scan_pairs(ph2_subset), tmp_path, device="cpu")
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result = stop.value
            break
    base_model = load_sam(base).model
    adapters = 1 * 2 * 2 * (32 + 32)  # depth 1, rank 2, q and v
    decoder = sum(p.numel() for p in base_model.mask_decoder.parameters())
    prompt = sum(p.numel() for p in base_model.prompt_encoder.parameters())
    assert result["trainable"] == adapters + decoder + prompt
    assert (tmp_path / training.ADAPTERS_NAME).is_file()
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["sam"]["base"] == str(base.resolve()) and cfg["lora"] == {"rank": 2, "alpha": 2.0}
    tuned = load_sam(tmp_path).model
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # The encoder's base weights are the base bundle's: frozen, not stored again.
        torch.testing.assert_close(tuned.image_encoder.patch_embed.proj.weight,
                                   base_model.image_encoder.patch_embed.proj.weight)
        assert tuned.image_encoder(x).shape == (1, 32, 4, 4)


def test_loss_is_small_for_a_perfect_prediction_and_picks_the_best_candidate() -> None:
    config = SamTrainConfig()
    gt = torch.zeros(2, 1, 32, 32)
    gt[:, :, 8:24, 8:24] = 1
    valid = torch.ones_like(gt)
    valid[1, :, :, 28:] = 0  # padding is ignored
    good = (gt * 40 - 20)[:, :, ::4, ::4]  # (2, 1, 8, 8) logits
    bad = torch.full_like(good, -20.0)
    low = torch.cat([bad, good, bad], dim=1)
    loss, best = training._loss(low, torch.tensor([[0.0, 1.0, 0.0]] * 2), gt, valid, config)
    assert best.tolist() == [1, 1] and float(loss) < 0.1
    worse, _ = training._loss(bad, torch.tensor([[0.0]] * 2), gt, valid, config)
    assert float(worse) > 0.7


@pytest.mark.parametrize("layout", training.LAYOUTS)
def test_simulated_prompts_batch_like_the_prompt_encoder(layout, real_masks) -> None:
    rng = np.random.default_rng(0)
    gts = [m[::4, ::4] for m in real_masks[:3]]
    gts = [g[:48, :64] for g in gts if g[:48, :64].any()]
    p = training._simulate(layout, gts, 64, (16, 16), rng, (0.05, 0.1), torch.device("cpu"))
    if layout == "box":
        assert p.boxes.shape == (len(gts), 4) and p.points is None
    if layout in ("point", "points", "mask_click"):
        coords, labels = p.points
        assert coords.shape[:2] == labels.shape and coords.shape[0] == len(gts)
    if layout in ("mask", "mask_click"):
        assert p.masks.shape == (len(gts), 1, 16, 16)
    assert p.multimask == (layout == "point")


def test_config_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown SAM training config keys"):
        SamTrainConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match="layouts"):
        SamTrainConfig(prompt_weights={"scribble": 1.0})
    shipped = Path(__file__).resolve().parents[3] / "configs" / "lesion-sam-tiny.yaml"
    cfg = SamTrainConfig.from_file(shipped)
    assert cfg.name == "lesion-sam-tiny" and cfg.base is None and cfg.bce_weight == 0.2
