"""Tests of the DermoSegDiff-style teacher (``core/networks/dermosegdiff.py``)."""

from __future__ import annotations

import json

import pytest
import torch

from napari_lesion_diffkd.core.diffusion.samplers import build_sampler
from napari_lesion_diffkd.core.diffusion.sampling_common import prepare_condition
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.networks.dermosegdiff import (
    DERMOSEGDIFF_PRESETS,
    PUBLISHED_PARAMS_M,
    DermoSegDiffUNet,
    build_dermosegdiff,
)
from napari_lesion_diffkd.core.networks.registry import NETWORKS, build_network, network_config

# A tiny three-level network (downsampling factor 4): fast on CPU.
TINY = {
    "base_channels_mask": 8,
    "base_channels_image": 8,
    "mask_stage_mults": [1, 2, 2],
    "image_stage_mults": [1, 2, 4],
    "attention_heads": 2,
    "attention_dim_head": 8,
    "resnet_groups": 4,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny(**overrides: object) -> DermoSegDiffUNet:
    torch.manual_seed(0)
    return DermoSegDiffUNet(**{**TINY, **overrides})


def _inputs(b: int, h: int, w: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(b, 1, h, w, generator=gen)
    image = torch.randn(b, 3, h, w, generator=gen)
    t = torch.randint(0, 250, (b,), generator=gen).float()
    return x_t, t, image


@pytest.mark.parametrize("preset", sorted(PUBLISHED_PARAMS_M))
def test_published_parameter_counts_within_3_percent(preset: str) -> None:
    with torch.device("meta"):  # no allocation: the DermoSegDiff presets have 158M / 321M
        net = build_dermosegdiff(preset)
    millions = _count(net) / 1e6
    published = PUBLISHED_PARAMS_M[preset]
    assert abs(millions - published) / published < 0.03, (preset, millions, published)


def test_cpu_small_preset_size_and_forward() -> None:
    with torch.device("meta"):
        assert 3e6 <= _count(build_dermosegdiff("cpu-small")) <= 8e6
    torch.manual_seed(0)
    net = build_dermosegdiff("cpu-small").eval()
    x_t, t, image = _inputs(1, 32, 32)  # six levels: multiples of 32
    with torch.no_grad():
        out = net(x_t, t, image)
    assert out.shape == (1, 1, 32, 32) and bool(torch.isfinite(out).all())


def test_presets_and_overrides() -> None:
    assert {"efkd-isic2018", "efkd-ham10000", "cpu-small"} <= set(DERMOSEGDIFF_PRESETS)
    with torch.device("meta"):
        net = build_dermosegdiff("efkd-ham10000", output_channels=2)
    assert net.config["mask_stage_mults"] == [2, 2, 2, 2, 2, 2]
    assert net.config["output_channels"] == 2 and net.downsampling_factor == 32
    assert DERMOSEGDIFF_PRESETS["efkd-ham10000"].get("output_channels") is None  # not mutated
    with pytest.raises(ValueError, match="unknown preset"):
        build_dermosegdiff("nope")


@pytest.mark.parametrize("size", [(32, 32), (48, 48), (32, 48)])
def test_tiny_forward_shapes(size: tuple[int, int]) -> None:
    net = _tiny()
    x_t, t, image = _inputs(2, *size)
    out = net(x_t, t, image)
    assert out.shape == (2, 1, *size) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    two = _tiny(output_channels=2)(x_t, t.long(), image)  # long timesteps work too
    assert two.shape == (2, 2, *size)


def test_rejects_bad_sizes_and_feature_conditions() -> None:
    net = _tiny()
    x_t, t, image = _inputs(1, 30, 32)
    with pytest.raises(ValueError, match="multiples of 4"):
        net(x_t, t, image)
    with pytest.raises(TypeError):
        net(*_inputs(1, 32, 32)[:2], (image,))  # type: ignore[arg-type]


def test_gradients_reach_both_streams_and_time_embeddings() -> None:
    net = _tiny()
    x_t, t, image = _inputs(2, 32, 32)
    net(x_t, t, image).pow(2).mean().backward()
    modules = {
        "mask stem": net.stem_mask,
        "image stem": net.stem_image,
        "mask level 0": net.encoder[0].mask_in,
        "image level 0": net.encoder[0].image_in,
        "gate": net.encoder[0].gate,
        "image down": net.down_image[0],
        "mask time": net.time_mask,
        "image time": net.time_image,
        "bottleneck attention": net.bottleneck.full_attn,
        "decoder": net.decoder[-1],
    }
    for name, module in modules.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_output_depends_on_image_noisy_mask_and_timestep() -> None:
    net = _tiny().eval()
    x_t, t, image = _inputs(1, 32, 32)
    with torch.no_grad():
        base = net(x_t, t, image)
        other_image = net(x_t, t, image.flip(-1))
        other_mask = net(x_t.flip(-1), t, image)
        other_t = net(x_t, t + 100, image)
    for changed in (other_image, other_mask, other_t):
        assert float((changed - base).abs().max()) > 1e-4


def test_image_stream_is_not_a_cached_condition_and_ddim_samples() -> None:
    net = _tiny().eval()
    assert not hasattr(net, "encode_condition")  # image stream depends on x_t and t
    image = torch.randn(2, 3, 32, 32)
    cond = prepare_condition(net, image, 3)  # samplers then repeat the raw image
    assert isinstance(cond, torch.Tensor) and cond.shape == (6, 3, 32, 32)
    sampler = build_sampler("ddim", NoiseSchedule("linear", 250), "epsilon", num_steps=2)
    with torch.no_grad():
        out = run_to_completion(sampler.sample(net, image, 2, seeds=[0, 1]))
    assert out.shape == (2, 2, 1, 32, 32) and bool(torch.isfinite(out).all())


def test_config_round_trip_through_registry() -> None:
    assert NETWORKS["DermoSegDiffUNet"] is DermoSegDiffUNet
    net = _tiny(gate_activation="sigmoid").eval()
    config = network_config(net)
    config = json.loads(json.dumps(config))  # JSON-safe, as stored in bundles
    assert config["_class_name"] == "DermoSegDiffUNet"
    rebuilt = build_network(config).eval()
    assert isinstance(rebuilt, DermoSegDiffUNet) and rebuilt.config == net.config
    rebuilt.load_state_dict(net.state_dict())
    x_t, t, image = _inputs(1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x_t, t, image), net(x_t, t, image))
