"""Tests of the samplers (``core/diffusion/{ddpm,ddim,staged,one_step,samplers}.py``).

All networks here are tiny and deterministic (weights from a fixed formula, no RNG), so the
whole file runs in seconds on a CPU.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from napari_lesion_diffkd.core.diffusion.ddim import DDIMSampler, ddim_timesteps
from napari_lesion_diffkd.core.diffusion.ddpm import DDPMSampler
from napari_lesion_diffkd.core.diffusion.one_step import OneStepSampler
from napari_lesion_diffkd.core.diffusion.sampling_common import Sampler
from napari_lesion_diffkd.core.diffusion.samplers import (
    SAMPLERS,
    build_sampler,
    sampler_from_config,
)
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.diffusion.staged import StagedSampler, staged_timesteps
from napari_lesion_diffkd.core.diffusion.targets import training_target
from napari_lesion_diffkd.core.jobs import JobEvent, run_to_completion


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- tiny networks ---------------------------------------------------------------------------------
class TinyNet(nn.Module):
    """Two 3x3 convs and a sinusoidal timestep embedding; records the timesteps it sees.

    Args:
        image_channels, mask_channels: input channels.
        heads: ``output_targets`` (None: a single-head network).
    """

    def __init__(
        self, image_channels: int = 1, mask_channels: int = 1, heads: tuple[str, ...] | None = None
    ) -> None:
        super().__init__()
        hidden = 8
        out = mask_channels * (len(heads) if heads else 1)
        self.conv1 = nn.Conv2d(mask_channels + image_channels, hidden, 3, padding=1)
        self.time = nn.Linear(4, hidden)
        self.conv2 = nn.Conv2d(hidden, out, 3, padding=1)
        with torch.no_grad():  # fixed weights, independent of torch's init code and RNG
            for i, p in enumerate(self.parameters()):
                idx = torch.arange(p.numel(), dtype=torch.float64)
                p.copy_((0.4 * torch.sin(0.7 * idx + i)).reshape(p.shape))
            self.conv2.weight.mul_(0.1)  # outputs of order 1, like a trained network's
        if heads:
            self.output_targets = tuple(heads)
        self.seen_t: list[float] = []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.float32 and t.shape == (x_t.shape[0],)
        assert x_t.dtype == torch.float32
        assert bool((t == t[0]).all())
        self.seen_t.append(float(t[0]))
        emb = torch.stack(
            [torch.sin(t / 100), torch.cos(t / 100), torch.sin(t / 7), torch.cos(t / 7)], 1
        )
        h = torch.tanh(self.conv1(torch.cat([x_t, cond], 1)) + self.time(emb)[:, :, None, None])
        return self.conv2(h)


class Oracle(nn.Module):
    """Knows x0 (given as the condition image) and returns the exact ``target`` for x_t."""

    def __init__(self, schedule: NoiseSchedule, target: str) -> None:
        super().__init__()
        self.schedule, self.target = schedule, target

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x0, xt = cond.double(), x_t.double()
        abar = self.schedule.alpha_bar(t, xt)
        eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()
        return training_target(self.target, x0, eps, t.long(), self.schedule).float()


# -- helpers ---------------------------------------------------------------------------------------
SCHEDULE = NoiseSchedule("linear", 20)

FACTORIES: dict[str, Callable[[NoiseSchedule], Sampler]] = {
    "ddpm": lambda s: DDPMSampler(s, "epsilon"),
    "ddim": lambda s: DDIMSampler(s, "epsilon", num_steps=5),
    "ddim-eta-v-trailing": lambda s: DDIMSampler(
        s, "v", num_steps=4, eta=0.7, timestep_spacing="trailing"
    ),
    "staged": lambda s: StagedSampler(s, "epsilon"),
    "one-step": lambda s: OneStepSampler(s, "x0"),
}


def _image(n: int = 2, size: int = 6, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(n, channels, size, size, generator=g)


def _run(
    sampler: Sampler, network, image, k, seeds=None, **kw
) -> tuple[torch.Tensor, list[JobEvent]]:
    events: list[JobEvent] = []
    out = run_to_completion(sampler.sample(network, image, k, seeds, **kw), events.append)
    return out, events


# -- the shared contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", FACTORIES)
def test_contract(name: str) -> None:
    sampler = FACTORIES[name](SCHEDULE)
    net = TinyNet()
    out, events = _run(sampler, net, _image(), 3, seeds=[1, 2, 3])
    assert out.shape == (2, 3, 1, 6, 6) and out.dtype == torch.float32
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    total = sampler.num_network_calls
    assert len(events) == total == len(net.seen_t)
    assert [e.step for e in events] == list(range(1, total + 1))
    assert all(e.kind == "progress" and e.total == total for e in events)
    assert net.seen_t[0] == SCHEDULE.num_timesteps - 1  # every sampler starts at pure noise
    # config round trip (through JSON), and the rebuilt sampler samples identically
    config = json.loads(json.dumps(sampler.to_config()))
    assert config["_class_name"] == type(sampler).__name__ and "schedule" not in config
    again = sampler_from_config(SCHEDULE, config)
    assert type(again) is type(sampler) and again.to_config() == sampler.to_config()
    out2, _ = _run(again, TinyNet(), _image(), 3, seeds=[1, 2, 3])
    assert torch.equal(out, out2)


@pytest.mark.parametrize("name", FACTORIES)
def test_close_midway(name: str) -> None:
    sampler = FACTORIES[name](SCHEDULE)
    net = TinyNet()
    gen = sampler.sample(net, _image(), 2, seeds=[4, 5])
    event = next(gen)
    assert event.step == 1
    # no grad mode leaks to the consumer between events
    assert torch.is_grad_enabled()
    gen.close()  # must neither raise nor continue
    assert len(net.seen_t) == 1
    with pytest.raises(StopIteration):
        next(gen)


@pytest.mark.parametrize("name", FACTORIES)
def test_reproducible(name: str) -> None:
    make = FACTORIES[name]
    image = _image()
    a, _ = _run(make(SCHEDULE), TinyNet(), image, 2, seeds=[7, 8])
    b, _ = _run(make(SCHEDULE), TinyNet(), image, 2, seeds=[7, 8])
    assert torch.equal(a, b)
    c, _ = _run(make(SCHEDULE), TinyNet(), image, 2, seeds=[9, 10])
    assert not torch.equal(a, c)
    # seeds=None draws from the global RNG: reproducible under torch.manual_seed
    torch.manual_seed(0)
    d, _ = _run(make(SCHEDULE), TinyNet(), image, 2)
    torch.manual_seed(0)
    e, _ = _run(make(SCHEDULE), TinyNet(), image, 2)
    assert torch.equal(d, e)


@pytest.mark.parametrize("name", FACTORIES)
def test_k_samples_equal_k_separate_calls(name: str) -> None:
    make = FACTORIES[name]
    image = _image(n=2)
    seeds = [3, 7, 11]
    joint, _ = _run(make(SCHEDULE), TinyNet(), image, 3, seeds=seeds)
    for k, seed in enumerate(seeds):
        alone, _ = _run(make(SCHEDULE), TinyNet(), image, 1, seeds=[seed])
        torch.testing.assert_close(joint[:, k], alone[:, 0], rtol=0, atol=1e-5)
    # the same seed twice gives the same sample twice
    twice, _ = _run(make(SCHEDULE), TinyNet(), image, 2, seeds=[5, 5])
    assert torch.equal(twice[:, 0], twice[:, 1])


@pytest.mark.parametrize("name", FACTORIES)
def test_encode_condition_called_once_and_repeated_image_major(name: str) -> None:
    class Encoded(TinyNet):
        def __init__(self) -> None:
            super().__init__()
            self.encode_calls = 0
            self.cond_seen: list = []

        def encode_condition(self, image: torch.Tensor) -> dict:
            self.encode_calls += 1
            return {"img": image * 1.0, "extra": (image[:, :1] * 2.0, [image.mean((1, 2, 3))])}

        def forward(self, x_t, t, cond):  # type: ignore[override]
            self.cond_seen.append(cond)
            return super().forward(x_t, t, cond["img"])

    net = Encoded()
    image = _image(n=2)
    k = 3
    _run(FACTORIES[name](SCHEDULE), net, image, k, seeds=[1, 2, 3])
    assert net.encode_calls == 1
    cond = net.cond_seen[0]
    assert isinstance(cond, dict) and isinstance(cond["extra"], tuple)
    assert isinstance(cond["extra"][1], list)
    expected = image.repeat_interleave(k, 0)  # row n*K + k is image n
    assert torch.equal(cond["img"], expected)
    assert torch.equal(cond["extra"][0], 2.0 * expected)
    assert cond["extra"][1][0].shape == (2 * k,)


def test_condition_without_encoder_is_the_repeated_image() -> None:
    seen = []

    def net(x_t, t, cond):
        seen.append(cond)
        return torch.zeros_like(x_t)

    image = _image(n=2)
    _run(OneStepSampler(SCHEDULE, "x0"), net, image, 2, seeds=[0, 1])
    assert torch.equal(seen[0], image.repeat_interleave(2, 0))


def test_noise_layout_is_per_sample_generator() -> None:
    """Initial noise of sample k of image n is row n of randn((N, 1, H, W), generator=g_k)."""
    seen = []

    def net(x_t, t, cond):
        seen.append(x_t.clone())
        return torch.zeros_like(x_t)

    _run(OneStepSampler(SCHEDULE, "x0"), net, _image(n=2, size=4), 2, seeds=[21, 22])
    x_t = seen[0].view(2, 2, 1, 4, 4)
    for k, seed in enumerate([21, 22]):
        noise = torch.randn((2, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(x_t[:, k], noise)


def test_multichannel_masks() -> None:
    net = TinyNet(image_channels=3, mask_channels=2)
    sampler = DDIMSampler(SCHEDULE, "epsilon", num_steps=3)
    out, _ = _run(sampler, net, _image(channels=3), 2, [1, 2], mask_channels=2)
    assert out.shape == (2, 2, 2, 6, 6)


# -- DDIM ------------------------------------------------------------------------------------------
def test_ddim_timesteps() -> None:
    assert ddim_timesteps(250, 10) == [249, 221, 194, 166, 138, 111, 83, 55, 28, 0]
    assert ddim_timesteps(1000, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert ddim_timesteps(250, 1) == ddim_timesteps(250, 1, "trailing") == [249]
    for spacing in ("uniform", "trailing"):
        assert ddim_timesteps(7, 7, spacing) == [6, 5, 4, 3, 2, 1, 0]
        for n in (2, 3, 6, 13, 99, 100):
            steps = ddim_timesteps(100, n, spacing)
            assert len(steps) == n and steps[0] == 99 and steps[-1] >= 0
            assert all(a > b for a, b in zip(steps, steps[1:]))


def _hand_ddim(steps: list[int], schedule: NoiseSchedule, eta: float, seed: int, image, net_fn):
    """DDIM written out in float64 for one sample (the reference for the sampler)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, 1, 3, 3), generator=g).double()
    ab = schedule.alphas_cumprod
    x0 = x
    for i, t in enumerate(steps):
        prev = steps[i + 1] if i + 1 < len(steps) else -1
        ab_t, ab_p = float(ab[t]), (float(ab[prev]) if prev >= 0 else 1.0)
        eps = net_fn(x, float(t), image.double())
        x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        sigma = eta * math.sqrt((1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p))
        x = math.sqrt(ab_p) * x0 + math.sqrt(1 - ab_p - sigma**2) * eps
        if sigma > 0:
            x = x + sigma * torch.randn((1, 1, 3, 3), generator=g).double()
    return x0.clamp(-1, 1)


@pytest.mark.parametrize(
    "num_steps,spacing,eta,steps",
    [(1, "uniform", 0.0, [9]), (2, "uniform", 0.0, [9, 0]), (2, "trailing", 0.0, [9, 4]),
     (3, "trailing", 0.5, [9, 6, 2])],
)
def test_ddim_matches_hand_computation(num_steps, spacing, eta, steps) -> None:
    schedule = NoiseSchedule("linear", 10)

    def net_fn(x, t, cond):
        return 0.9 * x + 0.1 * cond + 0.001 * t

    net = lambda x, t, cond: net_fn(x, t.view(-1, 1, 1, 1), cond)  # noqa: E731
    image = torch.linspace(-1, 1, 9).view(1, 1, 3, 3)
    sampler = DDIMSampler(
        schedule, "epsilon", num_steps, eta, clip_x0=False, timestep_spacing=spacing
    )
    assert sampler.timesteps == steps
    out, _ = _run(sampler, net, image, 1, seeds=[5])
    expected = _hand_ddim(steps, schedule, eta, 5, image, net_fn)
    assert int((expected.abs() < 1.0).sum()) >= 6  # mostly unclamped values: a real check
    torch.testing.assert_close(out[0, 0].double(), expected[0], rtol=0, atol=1e-5)


def test_ddim_eta0_uses_only_the_initial_noise() -> None:
    """With eta = 0 the result is a function of x_T only: redoing the updates by hand from the
    recorded x_T (clipped x0, no noise) gives the same result."""
    sampler = DDIMSampler(SCHEDULE, "epsilon", num_steps=6, eta=0.0)
    seen = []

    class Spy(TinyNet):
        def forward(self, x_t, t, cond):  # type: ignore[override]
            seen.append(x_t.clone())
            return super().forward(x_t, t, cond)

    out, _ = _run(sampler, Spy(), _image(n=1), 1, seeds=[42])
    # Rerun by hand from the recorded initial noise with eta = 0: same result.
    x = seen[0]
    net = TinyNet()
    cond = _image(n=1)
    steps = sampler.timesteps
    ab = SCHEDULE.alphas_cumprod
    for i, t in enumerate(steps):
        prev = steps[i + 1] if i + 1 < len(steps) else -1
        eps = net(x, torch.full((1,), float(t)), cond)
        a_t, s_t = math.sqrt(float(ab[t])), math.sqrt(1 - float(ab[t]))
        x0 = ((x - s_t * eps) / a_t).clamp(-1, 1)
        eps = (x - a_t * x0) / s_t
        ab_p = float(ab[prev]) if prev >= 0 else 1.0
        x = math.sqrt(ab_p) * x0 + math.sqrt(1 - ab_p) * eps
    torch.testing.assert_close(out[0, 0], x0[0], rtol=0, atol=1e-5)


# -- oracles ---------------------------------------------------------------------------------------
def _oracle_mask() -> torch.Tensor:
    """A mask-like x0 in [-1, 1]: a disc of +1 on -1 with soft values at the rim."""
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    r = ((yy - 3.5) ** 2 + (xx - 3.5) ** 2).sqrt()
    disc = torch.tanh(3.0 - r).view(1, 1, 8, 8)
    return torch.cat([disc, -0.8 * disc])  # two images


@pytest.mark.parametrize("target", ["epsilon", "v", "x0"])
def test_ddim_all_steps_with_oracle_recovers_x0(target: str) -> None:
    schedule = NoiseSchedule("linear", 50)
    x0 = _oracle_mask()
    sampler = DDIMSampler(schedule, target, num_steps=50)
    assert sampler.timesteps == list(range(49, -1, -1))
    out, _ = _run(sampler, Oracle(schedule, target), x0, 2, seeds=[1, 2])
    for k in range(2):
        torch.testing.assert_close(out[:, k], x0, rtol=0, atol=1e-4)


def test_ddpm_with_oracle_recovers_x0() -> None:
    schedule = NoiseSchedule("linear", 50)
    x0 = _oracle_mask()
    sampler = DDPMSampler(schedule, "epsilon")
    out, _ = _run(sampler, Oracle(schedule, "epsilon"), x0, 2, seeds=[1, 2])
    for k in range(2):
        torch.testing.assert_close(out[:, k], x0, rtol=0, atol=1e-4)


def test_one_step_with_oracle_recovers_x0() -> None:
    x0 = _oracle_mask()
    out, _ = _run(OneStepSampler(SCHEDULE, "x0"), Oracle(SCHEDULE, "x0"), x0, 3, seeds=[1, 2, 3])
    for k in range(3):
        assert torch.equal(out[:, k], x0)
    # eps oracle: exact up to dividing by sqrt(abar_{T-1})
    sampler = OneStepSampler(SCHEDULE, "epsilon")
    out, _ = _run(sampler, Oracle(SCHEDULE, "epsilon"), x0, 1, seeds=[1])
    torch.testing.assert_close(out[:, 0], x0, rtol=0, atol=1e-4)


# -- staged ----------------------------------------------------------------------------------------
def test_staged_timesteps_paper_defaults() -> None:
    # seed 004 §2.2: X_999 -> X_599 (x0 branch), DDIM interval 30 down to X_299, eps step to X_0.
    expected = [999, 599, 569, 539, 509, 479, 449, 419, 389, 359, 329, 299]
    assert staged_timesteps(1000) == expected
    schedule = NoiseSchedule("linear", 1000, 1e-4, 0.02)
    sampler = StagedSampler(schedule, "epsilon")
    assert sampler.num_network_calls == 12
    net = TinyNet()
    _run(sampler, net, _image(n=1), 2, seeds=[0, 1])
    assert net.seen_t == [float(t) for t in expected]


def test_staged_timesteps_scaled() -> None:
    assert staged_timesteps(250) == [249, 149, 142, 134, 127, 119, 112, 104, 97, 89, 82, 74]
    assert staged_timesteps(20) == [19, 11, 10, 9, 8, 7, 6, 5]
    assert staged_timesteps(10) == [9, 5, 4, 3, 2]
    assert staged_timesteps(1000, 700, 200, 50) == [999, 699] + list(range(649, 198, -50))
    with pytest.raises(ValueError, match="too short"):
        staged_timesteps(2)
    for bad in ({"high_threshold": 300}, {"low_threshold": 0}, {"stride": 0},
                {"high_threshold": 1000}):
        with pytest.raises(ValueError):
            staged_timesteps(1000, **bad)


class DualHead(nn.Module):
    """Heads ("epsilon", "x0") that imply different x0: the eps head -0.5, the x0 head +0.5."""

    output_targets = ("epsilon", "x0")

    def __init__(self, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.schedule = schedule
        self.seen: list[tuple[int, torch.Tensor]] = []

    def forward(self, x_t, t, cond):
        self.seen.append((int(t[0]), x_t.clone()))
        xt = x_t.double()
        abar = self.schedule.alpha_bar(t, xt)
        eps = (xt - abar.sqrt() * -0.5) / (1 - abar).sqrt()
        return torch.cat([eps.float(), torch.full_like(x_t, 0.5)], dim=1)


@pytest.mark.parametrize("branch,middle_x0", [("average", 0.0), ("x0", 0.5), ("epsilon", -0.5)])
def test_staged_dual_head_uses_the_right_heads(branch: str, middle_x0: float) -> None:
    schedule = NoiseSchedule("linear", 1000, 1e-4, 0.02)
    net = DualHead(schedule)
    sampler = StagedSampler(schedule, "epsilon", middle_branch=branch)
    out, _ = _run(sampler, net, _image(n=2, size=4), 2, seeds=[3, 4])
    # Stage 3 uses the eps head: the result is its x0, -0.5 everywhere.
    torch.testing.assert_close(out, torch.full_like(out, -0.5), rtol=0, atol=1e-4)

    ab = schedule.alphas_cumprod.double()
    a = lambda t: math.sqrt(float(ab[t]))  # noqa: E731
    s = lambda t: math.sqrt(1 - float(ab[t]))  # noqa: E731
    seen = dict(net.seen)
    # Stage 1 uses the x0 head (+0.5): deterministic DDIM jump 999 -> 599.
    x999 = seen[999].double()
    x599 = a(599) * 0.5 + s(599) / s(999) * (x999 - a(999) * 0.5)
    torch.testing.assert_close(seen[599].double(), x599, rtol=0, atol=1e-4)
    # Stage 2 with a constant x0 estimate c: x_t - a_t c scales by s_prev / s_t at each step.
    x299 = a(299) * middle_x0 + s(299) / s(599) * (x599 - a(599) * middle_x0)
    torch.testing.assert_close(seen[299].double(), x299, rtol=0, atol=1e-4)


@pytest.mark.parametrize("final_head,expected", [("epsilon", -0.5), ("x0", 0.5), ("average", 0.0)])
def test_staged_final_head_picks_the_last_estimate(final_head: str, expected: float) -> None:
    schedule = NoiseSchedule("linear", 1000, 1e-4, 0.02)
    sampler = StagedSampler(schedule, "epsilon", final_head=final_head)
    assert sampler.to_config()["final_head"] == final_head
    out, _ = _run(sampler, DualHead(schedule), _image(n=1, size=4), 2, seeds=[1, 2])
    torch.testing.assert_close(out, torch.full_like(out, expected), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="final_head"):
        StagedSampler(schedule, "epsilon", final_head="mask")


def test_single_head_staged_uses_conversions() -> None:
    schedule = NoiseSchedule("linear", 100)
    x0 = _oracle_mask()
    for target in ("epsilon", "v", "x0"):
        out, _ = _run(StagedSampler(schedule, target), Oracle(schedule, target), x0, 1, seeds=[9])
        torch.testing.assert_close(out[:, 0], x0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("target,expected", [("x0", 0.5), ("epsilon", -0.5)])
def test_one_head_samplers_pick_the_head_of_their_target(target: str, expected: float) -> None:
    schedule = NoiseSchedule("linear", 1000, 1e-4, 0.02)
    for sampler in (DDIMSampler(schedule, target, num_steps=4), OneStepSampler(schedule, target)):
        out, _ = _run(sampler, DualHead(schedule), _image(n=1, size=4), 1, seeds=[0])
        torch.testing.assert_close(out, torch.full_like(out, expected), rtol=0, atol=1e-3)


# -- registry and errors ---------------------------------------------------------------------------
def test_registry_and_build() -> None:
    assert set(SAMPLERS) == {"ddpm", "ddim", "staged", "one-step"}
    for name, cls in SAMPLERS.items():
        assert cls.name == name
    sampler = build_sampler("ddim", SCHEDULE, "v", num_steps=3, eta=0.2)
    assert isinstance(sampler, DDIMSampler) and sampler.to_config() == {
        "_class_name": "DDIMSampler",
        "prediction_target": "v",
        "num_steps": 3,
        "eta": 0.2,
        "clip_x0": True,
        "timestep_spacing": "uniform",
    }
    with pytest.raises(ValueError, match="ddpm, ddim, staged, one-step"):
        build_sampler("euler", SCHEDULE)
    with pytest.raises(ValueError, match="unknown sampler class"):
        sampler_from_config(SCHEDULE, {"_class_name": "Nope"})


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("ddim", {"num_steps": 0}),
        ("ddim", {"num_steps": 21}),
        ("ddim", {"eta": -0.1}),
        ("ddim", {"timestep_spacing": "leading"}),
        ("staged", {"middle_branch": "both"}),
        ("staged", {"low_threshold": 700}),
        ("ddpm", {"prediction_target": "score"}),
    ],
)
def test_bad_options_raise(name: str, kwargs: dict) -> None:
    target = kwargs.pop("prediction_target", "epsilon")
    with pytest.raises(ValueError):
        build_sampler(name, SCHEDULE, target, **kwargs)


def test_bad_sample_arguments_raise_at_call_time() -> None:
    sampler = OneStepSampler(SCHEDULE, "x0")
    net = TinyNet()
    with pytest.raises(ValueError, match="one seed per sample"):
        sampler.sample(net, _image(), 2, seeds=[1])
    with pytest.raises(ValueError, match="N, C, H, W"):
        sampler.sample(net, _image()[0], 1)
    with pytest.raises(ValueError):
        sampler.sample(net, _image(), 0)
    bad_net = lambda x, t, c: torch.zeros(x.shape[0], 2, *x.shape[2:])  # noqa: E731
    with pytest.raises(ValueError, match="network output has shape"):
        run_to_completion(sampler.sample(bad_net, _image(), 1, seeds=[0]))


# -- numeric regression ----------------------------------------------------------------------------
# out[0, :, 0, 2, 2] and out[0, 0, 0, 0, :2] for a fixed TinyNet, image and seeds [101, 202];
# computed once with this implementation (a guard against unintended changes).
REGRESSION: dict[str, list[float]] = {
    "ddpm": [0.746907, -0.321836, -0.948031, 1.0],
    "ddim": [0.274702, 0.538051, -0.296659, 0.362878],
    "ddim-eta-v-trailing": [0.324418, 0.427729, -0.674766, 0.454236],
    "staged": [0.279496, 0.538457, -0.296183, 0.361731],
    "one-step": [-0.987909, 0.362305, -0.542948, -0.470029],
}


@pytest.mark.parametrize("name", FACTORIES)
def test_numeric_regression(name: str) -> None:
    out, _ = _run(FACTORIES[name](SCHEDULE), TinyNet(), _image(n=1, size=5), 2, seeds=[101, 202])
    got = [*out[0, :, 0, 2, 2].tolist(), *out[0, 0, 0, 0, :2].tolist()]
    assert got == pytest.approx(REGRESSION[name], abs=1e-5)
