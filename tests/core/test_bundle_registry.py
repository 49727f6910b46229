"""Model bundles (safetensors + JSON, no pickle) and the registry's name/path resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_lesion_diffkd.core.bundle import BundleError, load_bundle, save_bundle
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.networks.cond_unet import CondDiffusionUNet
from napari_lesion_diffkd.core.registry import (
    UnknownModelError,
    list_models,
    resolve_device,
    resolve_model,
)

TINY = dict(base_channels=8, channel_mults=(1, 2), image_base_channels=8,
            image_channel_mults=(1, 2), time_dim=16, stem_stride=2, image_blocks_per_level=1)


def _save(folder: Path) -> CondDiffusionUNet:
    torch.manual_seed(0)
    net = CondDiffusionUNet(**TINY)
    config = {"name": "t", "modality": "ct", "role": "teacher", "prediction_target": "x0",
              "input": {"size": 32, "channels": 3},
              "sampler": {"name": "ddim", "num_steps": 2, "num_samples": 2}}
    save_bundle(folder, net, NoiseSchedule("cosine", 40), config)
    return net


def test_round_trip_restores_network_schedule_and_config(tmp_path: Path) -> None:
    net = _save(tmp_path / "b")
    bundle = load_bundle(tmp_path / "b")
    assert bundle.schedule.kind == "cosine" and bundle.schedule.num_timesteps == 40
    assert bundle.config["network"]["_class_name"] == "CondDiffusionUNet"
    assert bundle.config["package_version"]
    x, t, img = torch.randn(2, 1, 32, 32), torch.tensor([3.0, 30.0]), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # fp16 storage: outputs agree to fp16 precision of the weights.
        torch.testing.assert_close(bundle.network(x, t, img), net.eval()(x, t, img),
                                   atol=5e-3, rtol=5e-3)
    assert not bundle.network.training


def test_weights_are_not_pickles(tmp_path: Path) -> None:
    _save(tmp_path / "b")
    head = (tmp_path / "b" / "model.safetensors").read_bytes()[:8]
    assert head[:2] != b"\x80\x04" and int.from_bytes(head, "little") < 10**6  # header length


@pytest.mark.parametrize("damage", ["no_weights", "truncated", "bad_json", "wrong_shape"])
def test_damaged_bundles_give_a_clear_error(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "b"
    _save(folder)
    weights, config = folder / "model.safetensors", folder / "config.json"
    if damage == "no_weights":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "bad_json":
        config.write_text("{not json")
    else:
        cfg = json.loads(config.read_text())
        cfg["network"]["base_channels"] = 16
        config.write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match=str(folder.name)):
        load_bundle(folder)


def test_registry_resolves_names_paths_and_reports_unknown(tmp_path: Path, monkeypatch) -> None:
    _save(tmp_path / "my-model")
    monkeypatch.setenv("NAPARI_LESION_DIFFKD_MODELS", str(tmp_path))
    assert resolve_model("my-model") == tmp_path / "my-model"
    assert resolve_model(tmp_path / "my-model") == tmp_path / "my-model"
    names = {row["name"] for row in list_models()}
    assert {"my-model", "dermoscopy-teacher"} <= names
    with pytest.raises(UnknownModelError, match="known: .*my-model"):
        resolve_model("nope")


def test_unavailable_device_is_an_error() -> None:
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_one_cache_root_holds_models_sam_and_onnx(monkeypatch, tmp_path) -> None:
    """$LESION_DIFFKD_CACHE moves every cache; the older models-only variable still wins
    for the models folder."""
    from napari_lesion_diffkd.core import registry
    from napari_lesion_diffkd.core.onnx.cache import onnx_cache_dir
    from napari_lesion_diffkd.core.sam.loading import sam_cache_dir

    monkeypatch.delenv("NAPARI_LESION_DIFFKD_CACHE", raising=False)
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "c"))
    assert registry.model_dirs()[-2] == tmp_path / "c" / "models"
    assert sam_cache_dir() == tmp_path / "c" / "sam"
    assert onnx_cache_dir() == tmp_path / "c" / "onnx"
    monkeypatch.setenv("NAPARI_LESION_DIFFKD_CACHE", str(tmp_path / "legacy"))
    assert registry.model_dirs()[-2] == tmp_path / "legacy"
    assert sam_cache_dir() == tmp_path / "c" / "sam"
