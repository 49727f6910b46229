"""LoRA on q and v of the image encoder's fused qkv: counts, init, freezing, save/load/merge."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_lesion_diffkd.core.sam import lora

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _perturb_adapters(sam: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if "lora_" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def test_parameter_count_is_exactly_the_documented_formula(tiny_sam) -> None:
    before = sum(p.numel() for p in tiny_sam.parameters())
    blocks = lora.apply_lora(tiny_sam, rank=4, alpha=8)
    added = sum(p.numel() for p in tiny_sam.parameters()) - before
    dim = tiny_sam.image_encoder.blocks[0].attn.qkv.in_features
    assert blocks == 4 and dim == 192
    per_block = lora.added_parameters_per_block(dim, dim, dim, 4)
    assert per_block == 2 * 4 * (192 + 192) == 4 * 4 * 192
    assert added == blocks * per_block
    trainable = {n for n, p in tiny_sam.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert sum(p.numel() for n, p in tiny_sam.named_parameters() if p.requires_grad) == added
    assert lora.lora_settings(tiny_sam) == {"rank": 4, "alpha": 8.0}
    with pytest.raises(ValueError, match="already"):
        lora.apply_lora(tiny_sam)


def test_output_unchanged_at_init_and_base_keys_kept(tiny_sam) -> None:
    x = torch.randn(1, 3, 256, 256)
    keys = set(tiny_sam.state_dict())
    with torch.no_grad():
        ref = tiny_sam.image_encoder(x)
        lora.apply_lora(tiny_sam, rank=2)
        torch.testing.assert_close(tiny_sam.image_encoder(x), ref, rtol=0, atol=0)
    assert keys <= set(tiny_sam.state_dict())  # official weights still load unchanged


def test_only_q_and_v_columns_change(tiny_sam) -> None:
    base = tiny_sam.image_encoder.blocks[0].attn.qkv
    ref = nn.Linear(base.in_features, base.out_features)
    ref.load_state_dict(base.state_dict())
    lora.apply_lora(tiny_sam, rank=3)
    _perturb_adapters(tiny_sam)
    wrapped = tiny_sam.image_encoder.blocks[0].attn.qkv
    x = torch.randn(5, base.in_features)
    with torch.no_grad():
        diff = (wrapped(x) - ref(x)).abs()
    d = wrapped.dim
    assert diff[:, :d].max() > 1e-4 and diff[:, 2 * d:].max() > 1e-4
    assert diff[:, d:2 * d].max() == 0


def test_gradients_reach_only_the_adapters(tiny_sam) -> None:
    lora.apply_lora(tiny_sam, rank=2)
    _perturb_adapters(tiny_sam)
    tiny_sam.image_encoder(torch.randn(1, 3, 256, 256)).square().mean().backward()
    for name, p in tiny_sam.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name


def test_save_load_and_merge_reproduce_the_adapted_output(tmp_path, tiny_sam) -> None:
    import copy

    fresh = copy.deepcopy(tiny_sam)
    lora.apply_lora(tiny_sam, rank=4, alpha=4)
    _perturb_adapters(tiny_sam)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        adapted = tiny_sam.image_encoder(x)
    path = lora.save_lora(tmp_path / "adapters.safetensors", tiny_sam, metadata={"base": "t"})
    assert path.stat().st_size < 100_000
    meta = lora.load_lora(path, fresh)
    assert meta["base"] == "t" and lora.has_lora(fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh.image_encoder(x), adapted)
        assert lora.merge_lora(fresh) == 4 and not lora.has_lora(fresh)
        torch.testing.assert_close(fresh.image_encoder(x), adapted, rtol=1e-4, atol=1e-4)


def test_loading_refuses_incomplete_or_mismatching_files(tmp_path, tiny_sam) -> None:
    import copy

    from safetensors.torch import load_file, save_file

    other = copy.deepcopy(tiny_sam)
    lora.apply_lora(tiny_sam, rank=2)
    path = lora.save_lora(tmp_path / "a.safetensors", tiny_sam)
    tensors = load_file(str(path))
    tensors.pop(next(iter(tensors)))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    save_file(tensors, str(tmp_path / "b.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="missing"):
        lora.load_lora(tmp_path / "b.safetensors", copy.deepcopy(other))
    lora.apply_lora(other, rank=3)
    with pytest.raises(ValueError, match="adapters are"):
        lora.load_lora(path, other)


def test_tinyvit_per_head_qkv_gets_q_and_v_updates_in_its_own_layout() -> None:
    """TinyViT's qkv is [q_h | k_h | v_h] per head: the adapters must land there, k untouched,
    and merging must reproduce the adapted output."""
    from napari_lesion_diffkd.core.sam.tiny_vit import WindowAttention

    torch.manual_seed(0)
    attn = WindowAttention(dim=40, num_heads=4, window=3)
    ref = nn.Linear(40, 120)
    ref.load_state_dict(attn.qkv.state_dict())
    wrapped = lora.LoRAQKV(attn.qkv, rank=2, alpha=2.0, heads=lora._per_head_layout(attn))
    assert wrapped.heads == 4
    with torch.no_grad():
        for p in (wrapped.lora_q_a, wrapped.lora_q_b, wrapped.lora_v_a, wrapped.lora_v_b):
            p.normal_(0, 0.1)
        x = torch.randn(6, 40)
        diff = (wrapped(x) - ref(x)).view(6, 4, 3, 10)
        assert diff[:, :, 1].abs().max() == 0
        dq = (x @ (wrapped.lora_q_b @ wrapped.lora_q_a).t()).view(6, 4, 10)
        dv = (x @ (wrapped.lora_v_b @ wrapped.lora_v_a).t()).view(6, 4, 10)
        torch.testing.assert_close(diff[:, :, 0], dq)
        torch.testing.assert_close(diff[:, :, 2], dv)
        torch.testing.assert_close(wrapped.merged()(x), wrapped(x), rtol=1e-5, atol=1e-5)
