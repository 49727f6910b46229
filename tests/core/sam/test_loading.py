"""Loading SAM weights: bundles, checkpoint files (safely), the cache, offline downloads."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from napari_lesion_diffkd.core.bundle import BundleError
from napari_lesion_diffkd.core.sam import loading
from napari_lesion_diffkd.core.sam.architectures import (
    TinySamConfig,
    build_official_sam,
    build_tiny_sam,
)
from napari_lesion_diffkd.core.sam.lora import apply_lora
from napari_lesion_diffkd.core.sam.sam_bundle import load_sam_bundle, save_sam_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _NotATensor:
    """Something ``weights_only`` loading must refuse to rebuild."""


def _decode(sam, embedding: torch.Tensor, box: list[float]) -> torch.Tensor:
    sparse, dense = sam.prompt_encoder(points=None, boxes=torch.tensor([box]), masks=None)
    low, _ = sam.mask_decoder(image_embeddings=embedding,
                              image_pe=sam.prompt_encoder.get_dense_pe(),
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                              multimask_output=False)
    return low


def test_tiny_default_size_and_config_round_trip() -> None:
    cfg = TinySamConfig()
    sam = build_tiny_sam(cfg)
    assert 2.5e6 < sum(p.numel() for p in sam.parameters()) < 3.5e6
    assert sam.image_encoder.img_size == 256
    assert tuple(sam.prompt_encoder.mask_input_size) == (64, 64)
    assert TinySamConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TinySamConfig.from_dict({"width": 3})
    with pytest.raises(ValueError):
        TinySamConfig(img_size=250)


def test_tiny_bundle_round_trip_is_fp16_exact(tmp_path, tiny_sam) -> None:
    folder = save_sam_bundle(tmp_path / "lesion-sam-tiny", tiny_sam,
                             {"name": "lesion-sam-tiny", "provenance": {"data": "x"}},
                             "tiny", TinySamConfig())
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["kind"] == "sam" and cfg["sam"]["arch"] == "tiny"
    assert cfg["low_res_size"] == [64, 64] and cfg["package_version"]
    loaded = loading.load_sam(folder)
    assert loaded.arch == "tiny" and loaded.name == "lesion-sam-tiny"
    for k, v in tiny_sam.state_dict().items():
        expected = v.half().float() if v.is_floating_point() else v
        torch.testing.assert_close(loaded.model.state_dict()[k], expected, rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_registered_bundle_name_is_found(tmp_path, monkeypatch, tiny_sam) -> None:
    save_sam_bundle(tmp_path / "my-sam", tiny_sam, {"name": "my-sam"}, "tiny", TinySamConfig())
    monkeypatch.setenv("NAPARI_LESION_DIFFKD_MODELS", str(tmp_path))
    assert loading.load_sam("my-sam").name == "my-sam"
    with pytest.raises(LookupError, match="not a SAM bundle"):
        loading.load_sam("no-such-model-anywhere")


def test_partial_lora_bundle_rebuilds_from_its_base(tmp_path, tiny_sam) -> None:
    base = save_sam_bundle(tmp_path / "base", tiny_sam, {"name": "base"}, "tiny", TinySamConfig())
    model = load_sam_bundle(base).model
    apply_lora(model, rank=2)
    for p in model.mask_decoder.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or name.startswith("mask_decoder"):
                p.add_(0.05 * torch.randn_like(p))
    folder = save_sam_bundle(tmp_path / "ft", model, {"name": "ft"}, "tiny", base=str(base))
    from safetensors.torch import load_file

    stored = load_file(str(folder / "model.safetensors"))
    assert stored and all("lora_" in k or k.startswith("mask_decoder") for k in stored)
    again = loading.load_sam(folder).model
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(again.image_encoder(x), model.image_encoder(x),
                                   rtol=2e-2, atol=2e-2)


def test_official_vit_b_loads_a_state_dict_we_saved_and_decodes(tmp_path) -> None:
    from safetensors.torch import save_file

    source = build_official_sam("vit_b")
    assert 90e6 < sum(p.numel() for p in source.parameters()) < 95e6
    path = tmp_path / "my_vit_b.safetensors"
    save_file({k: v.half().contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = loading.load_sam(path)
    assert loaded.arch == "vit_b" and loaded.path == path
    sam = loaded.model
    w = "image_encoder.blocks.11.attn.qkv.weight"
    torch.testing.assert_close(sam.state_dict()[w], source.state_dict()[w].half().float())
    torch.manual_seed(0)
    emb = torch.randn(1, 256, 64, 64)
    with torch.no_grad():
        low = _decode(sam, emb, [100.0, 120.0, 600.0, 500.0])
        ref = _decode(source.half().float(), emb, [100.0, 120.0, 600.0, 500.0])
    assert low.shape == (1, 1, 256, 256) and torch.isfinite(low).all()
    torch.testing.assert_close(low, ref)


def test_pth_files_load_with_weights_only_and_unwrap_a_model_key(tmp_path, tiny_sam) -> None:
    state = tiny_sam.state_dict()
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pth")
    read = loading.read_state_dict(tmp_path / "wrapped.pth")
    assert set(read) == set(state)
    with pytest.raises(loading.SamCheckpointError, match="not an official SAM"):
        loading.infer_arch(read)  # tiny models travel as bundles, not bare files


def test_a_pickle_with_objects_is_refused(tmp_path) -> None:
    torch.save({"model": _NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(loading.SamCheckpointError, match="weights_only"):
        loading.read_state_dict(tmp_path / "evil.pth")
    torch.save({"a": 1}, tmp_path / "numbers.pth")
    with pytest.raises(loading.SamCheckpointError, match="state dict"):
        loading.read_state_dict(tmp_path / "numbers.pth")


def test_mismatching_weights_name_what_is_wrong(tmp_path, tiny_sam) -> None:
    state = dict(tiny_sam.state_dict())
    state.pop("mask_decoder.iou_token.weight")
    with pytest.raises(loading.SamCheckpointError, match="1 missing"):
        loading.load_state(build_tiny_sam(), state)


def test_sha256_is_checked_when_given(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert loading.sha256_file(path) == good
    loading.verify_sha256(path, good.upper())
    with pytest.raises(loading.SamCheckpointError, match="does not match"):
        loading.verify_sha256(path, "0" * 64)


def test_checkpoint_table_and_cache_folder(monkeypatch, tmp_path) -> None:
    assert loading.checkpoint_info("vit_b").filename == "sam_vit_b_01ec64.pth"
    assert loading.checkpoint_info("medsam").arch == "vit_b"
    for info in loading.OFFICIAL_CHECKPOINTS.values():
        assert info.url.startswith("https://") and info.arch in ("vit_b", "vit_l", "vit_h")
    monkeypatch.setenv(loading.CACHE_ENV_VAR, str(tmp_path))
    assert loading.sam_cache_dir() == tmp_path / "sam"
    monkeypatch.delenv(loading.CACHE_ENV_VAR)
    assert loading.cache_dir().name == "napari-lesion-diffkd"


def test_a_named_checkpoint_not_in_the_cache_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(loading.CACHE_ENV_VAR, str(tmp_path))
    with pytest.raises(loading.CheckpointUnavailableError) as info:
        loading.load_sam("sam_vit_b")
    message = str(info.value)
    assert str(tmp_path / "sam" / "sam_vit_b_01ec64.pth") in message and "https://" in message


def test_offline_download_raises_a_clear_error_and_leaves_nothing(monkeypatch, tmp_path) -> None:
    # Port 9 (discard) on localhost refuses connections: the offline case, without network.
    info = loading.OFFICIAL_CHECKPOINTS["sam_vit_b"]
    monkeypatch.setitem(loading.OFFICIAL_CHECKPOINTS, "sam_vit_b",
                        dataclasses.replace(info, url="http://127.0.0.1:9/sam_vit_b_01ec64.pth"))
    with pytest.raises(loading.CheckpointUnavailableError, match="could not download"):
        loading.download_checkpoint("sam_vit_b", tmp_path, timeout=5)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(loading.CheckpointUnavailableError, match="by hand"):
        loading.download_checkpoint("medsam_vit_b", tmp_path)


def test_not_a_bundle(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"kind": "diffusion"}))
    with pytest.raises(BundleError, match="not a SAM bundle"):
        load_sam_bundle(tmp_path)
