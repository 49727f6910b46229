"""Tests of the fast student network (``core/networks/fast_student.py``)."""

from __future__ import annotations

import pytest
import torch

from napari_lesion_diffkd.core.diffusion.samplers import build_sampler
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.networks.fast_student import FastStudentNet
from napari_lesion_diffkd.core.networks.registry import build_network, network_config

SMALL = {"encoder": {"base_channels": 4, "channel_mults": [1, 2, 4]}, "head_channels": 8}


def test_shapes_and_condition_reuse(one_torch_thread) -> None:
    torch.manual_seed(0)
    net = FastStudentNet(image_channels=1, head_stride=4, **SMALL).eval()
    image = torch.rand(2, 1, 32, 32) * 2 - 1
    x_t = torch.randn(2, 1, 32, 32)
    t = torch.full((2,), 49.0)
    with torch.no_grad():
        direct = net(x_t, t, image)
        cond = net.encode_condition(image)
        reused = net(x_t, t, cond)
    assert direct.shape == (2, 1, 32, 32) and direct.dtype == torch.float32
    torch.testing.assert_close(direct, reused)
    assert net.level == 1  # stride 4 = stem stride 2 x one halving
    assert cond[0].shape == (2, net.encoder.widths[1], 8, 8)
    # The head starts at zero: the first output is the encoder's own mask estimate.
    torch.testing.assert_close(direct, cond[1])


def test_noise_changes_the_output_once_the_head_is_trained(one_torch_thread) -> None:
    torch.manual_seed(0)
    net = FastStudentNet(image_channels=3, head_stride=2, **SMALL)
    torch.nn.init.normal_(net.head_out.weight, std=0.1)
    schedule = NoiseSchedule("linear", 50)
    sampler = build_sampler("one-step", schedule, "x0")
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = run_to_completion(sampler.sample(net, image, 4, seeds=[0, 1, 2, 3]))
        b = run_to_completion(sampler.sample(net, image, 4, seeds=[0, 1, 2, 3]))
    assert a.shape == (1, 4, 1, 32, 32)
    torch.testing.assert_close(a, b)  # same seeds, same samples
    assert (a[0, 0] - a[0, 1]).abs().max() > 1e-3  # different noises, different samples


def test_config_round_trip_and_errors() -> None:
    net = FastStudentNet(image_channels=1, **SMALL)
    again = build_network(network_config(net))
    assert network_config(again) == network_config(net)
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in net.parameters())
    with pytest.raises(ValueError, match="head_stride 8"):
        FastStudentNet(image_channels=1, head_stride=8, encoder={"channel_mults": [1, 2]})
