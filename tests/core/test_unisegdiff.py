"""Tests of the SegUNet and the UniSegDiff denoiser (``core/networks/{seg_unet,unisegdiff}.py``).

Networks are built small (a few thousand to tens of thousands of parameters) so the module
runs in a few seconds on one CPU thread; the default configs are only counted, not run.
"""

from __future__ import annotations

import json

import pytest
import torch

from napari_lesion_diffkd.core.diffusion.sampling_common import network_heads
from napari_lesion_diffkd.core.diffusion.samplers import build_sampler
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.networks.registry import NETWORKS, build_network, network_config
from napari_lesion_diffkd.core.networks.seg_unet import SegUNet
from napari_lesion_diffkd.core.networks.unisegdiff import (
    ConditionFeatures,
    UniSegDiffNet,
    sincos_position_2d,
)
from napari_lesion_diffkd.core.training.objectives import staged_loss

SMALL_COND = {"image_channels": 3, "base_channels": 8, "channel_mults": [1, 2, 4, 4], "stem_stride": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_net(**kwargs) -> UniSegDiffNet:
    torch.manual_seed(0)
    args = {
        "condition_network": SMALL_COND,
        "base_channels": 8,
        "channel_mults": [1, 2, 2, 2],
        "attention_heads": 2,
    }
    args.update(kwargs)
    return UniSegDiffNet(**args)


def count(module: torch.nn.Module, trainable: bool | None = None) -> int:
    return sum(
        p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable
    )


# -- SegUNet ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem_stride", [1, 2])
def test_segunet_shapes_and_features(stem_stride):
    net = SegUNet(base_channels=8, channel_mults=(1, 2, 4), stem_stride=stem_stride)
    image = torch.randn(2, 3, 32, 32)
    out = net.forward_features(image)
    assert out.logits.shape == (2, 1, 32, 32)
    assert torch.equal(net(image), out.logits)
    feats = net.features(image)
    assert len(feats) == 2 * net.levels == len(net.feature_channels) == len(net.feature_strides)
    for f, c, s in zip(feats, net.feature_channels, net.feature_strides):
        assert f.shape == (2, c, 32 // s, 32 // s)
    assert net.downsampling_factor == stem_stride * 4


def test_default_param_counts():
    seg = SegUNet()
    assert 1.8e6 < count(seg) < 2.4e6  # "~2M" CPU-friendly baseline
    net = UniSegDiffNet()
    assert count(net, trainable=False) == count(seg)  # the whole CFENet is frozen
    assert 4e6 < count(net, trainable=True) < 7e6


# -- UniSegDiffNet ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_output_targets(size):
    net = small_net().eval()
    x_t = torch.randn(2, 1, size, size)
    image = torch.randn(2, 3, size, size)
    t = torch.tensor([0.0, 999.0])
    out = net(x_t, t, image)
    assert out.shape == (2, 2, size, size)
    assert torch.isfinite(out).all()
    assert net.output_targets == ("epsilon", "x0")
    heads = network_heads(net, x_t, 500, image, "epsilon")
    assert list(heads) == ["epsilon", "x0"]
    with torch.no_grad():
        ref = net(x_t, torch.full((2,), 500.0), image)
    assert torch.equal(heads["epsilon"], ref[:, :1]) and torch.equal(heads["x0"], ref[:, 1:])
    # The two decoders are different modules: their outputs differ.
    assert not torch.allclose(ref[:, :1], ref[:, 1:])


def test_attention_levels_and_dual_decoders():
    net = small_net()
    # stride-2 stem, 4 levels -> strides 2, 4, 8, 16; DCA at 8 and 16 (levels 2, 3) per decoder.
    assert sorted(net.eps_decoder.dca) == ["2", "3"] and sorted(net.x0_decoder.dca) == ["2", "3"]
    assert net.eps_decoder is not net.x0_decoder
    only16 = small_net(attention_strides=[16])
    assert sorted(only16.x0_decoder.dca) == ["3"]
    code = sincos_position_2d(4, 4, 16, torch.device("cpu"))
    assert code.shape == (16, 16) and len({tuple(r.tolist()) for r in code}) == 16


def test_encode_condition_reuse_is_identical():
    net = small_net().eval()
    image = torch.randn(2, 3, 32, 32)
    x_t = torch.randn(2, 1, 32, 32)
    t = torch.tensor([10.0, 700.0])
    cond = net.encode_condition(image)
    assert isinstance(cond, ConditionFeatures)
    assert cond.prior.shape == (2, 1, 32, 32) and len(cond.levels) == 4
    assert not cond.prior.requires_grad and all(not f.requires_grad for f in cond.levels)
    assert (cond.prior.abs() <= 1).all()
    with torch.no_grad():
        a = net(x_t, t, image)
        b = net(x_t, t, cond)
        c = net(x_t, t, tuple(cond))  # a plain (prior, levels) pair works too
    assert torch.equal(a, b) and torch.equal(a, c)


def test_condition_frozen_through_training_step():
    net = small_net()
    assert net.condition_frozen
    assert all(not p.requires_grad for p in net.condition.parameters())
    net.train()
    assert not net.condition.training and net.eps_decoder.training
    before_cond = {k: v.clone() for k, v in net.condition.state_dict().items()}
    before_dec = net.x0_decoder.out_conv[-1].weight.detach().clone()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    masks = torch.where(torch.rand(2, 1, 32, 32, generator=gen) > 0.5, 1.0, -1.0)
    loss, _ = staged_loss(net, torch.randn(2, 3, 32, 32), masks, NoiseSchedule("cosine", 1000), gen)
    loss.backward()
    assert all(p.grad is None for p in net.condition.parameters())
    opt.step()
    for k, v in net.condition.state_dict().items():
        assert torch.equal(v, before_cond[k]), k
    assert not torch.equal(net.x0_decoder.out_conv[-1].weight, before_dec)


def test_load_condition_state_from_pretrained_segunet():
    torch.manual_seed(1)
    pretrained = SegUNet(**SMALL_COND)
    net = small_net()
    net.load_condition_state(pretrained.state_dict())
    for k, v in pretrained.state_dict().items():
        assert torch.equal(net.condition.state_dict()[k], v)
    assert all(not p.requires_grad for p in net.condition.parameters())
    # Keys with this network's "condition." prefix are accepted as well.
    other = small_net()
    prefixed = {k: v for k, v in net.state_dict().items() if k.startswith("condition.")}
    other.load_condition_state(prefixed)
    assert torch.equal(other.condition.stem.weight, pretrained.stem.weight)
    with pytest.raises(RuntimeError):
        net.load_condition_state(SegUNet(base_channels=4).state_dict())


def test_config_round_trip_through_registry():
    assert NETWORKS["UniSegDiffNet"] is UniSegDiffNet and NETWORKS["SegUNet"] is SegUNet
    net = small_net().eval()
    config = json.loads(json.dumps(network_config(net)))  # JSON-able, as in a bundle
    assert config["_class_name"] == "UniSegDiffNet"
    assert config["condition_network"] == SegUNet(**SMALL_COND).config
    state = net.state_dict()
    assert any(k.startswith("condition.") for k in state)  # frozen weights travel with it
    rebuilt = build_network(config).eval()
    rebuilt.load_state_dict(state)
    assert rebuilt.condition_frozen
    assert all(not p.requires_grad for p in rebuilt.condition.parameters())
    x_t, image, t = torch.randn(1, 1, 32, 32), torch.randn(1, 3, 32, 32), torch.tensor([300.0])
    with torch.no_grad():
        assert torch.equal(net(x_t, t, image), rebuilt(x_t, t, image))
    seg = SegUNet(**SMALL_COND)
    assert build_network(network_config(seg)).config == seg.config
    # a "_class_name" in the condition config is accepted, a wrong one refused
    UniSegDiffNet(
        condition_network={"_class_name": "SegUNet", **SMALL_COND}, channel_mults=[1, 1, 1, 1]
    )
    # the trainer's image_channels override reaches the condition network
    gray = build_network({**config, "image_channels": 1})
    assert gray.condition.image_channels == 1 == gray.config["condition_network"]["image_channels"]
    assert gray(x_t, t, torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    assert build_network(network_config(gray)).config == gray.config
    with pytest.raises(ValueError):
        UniSegDiffNet(condition_network={"_class_name": "CondDiffusionUNet"})
    with pytest.raises(ValueError):
        UniSegDiffNet(condition_network=SMALL_COND, channel_mults=[1, 2])


def test_staged_sampler_runs_on_t1000():
    net = small_net().eval()
    calls = {"encode": 0, "forward": 0}
    encode = net.encode_condition

    def counting_encode(image):
        calls["encode"] += 1
        return encode(image)

    net.encode_condition = counting_encode  # type: ignore[method-assign]
    net.register_forward_hook(lambda *_: calls.__setitem__("forward", calls["forward"] + 1))
    sampler = build_sampler("staged", NoiseSchedule("cosine", 1000), "epsilon")
    image = torch.randn(2, 3, 32, 32)
    samples = run_to_completion(sampler.sample(net, image, num_samples=3, seeds=[0, 1, 2]))
    assert samples.shape == (2, 3, 1, 32, 32)
    assert torch.isfinite(samples).all() and samples.abs().max() <= 1
    assert calls["encode"] == 1  # condition computed once for all samples and steps
    assert calls["forward"] == sampler.num_network_calls == 12
