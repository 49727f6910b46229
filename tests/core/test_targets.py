"""Tests of the prediction targets and their conversions (``core/diffusion/targets.py``)."""

from __future__ import annotations

import itertools

import pytest
import torch

from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.diffusion.targets import (
    TARGETS,
    convert,
    to_x0_and_eps,
    training_target,
)

SCHEDULES = {
    "linear250": NoiseSchedule(),
    "cosine1000": NoiseSchedule("cosine", 1000),
}


def _batch(schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 x0 in [-1, 1], noise, and timesteps covering 0, T - 1 and points between."""
    big_t = schedule.num_timesteps
    t = torch.tensor(sorted({0, 1, 2, big_t // 3, big_t // 2, big_t - 2, big_t - 1}))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(len(t), 1, 4, 4, dtype=torch.float64, generator=g) * 2 - 1
    noise = torch.randn(len(t), 1, 4, 4, dtype=torch.float64, generator=g)
    return x0, noise, t


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("source,destination", list(itertools.product(TARGETS, TARGETS)))
def test_conversions_exact(schedule_name: str, source: str, destination: str) -> None:
    schedule = SCHEDULES[schedule_name]
    x0, noise, t = _batch(schedule)
    x_t = schedule.add_noise(x0, noise, t)
    value = training_target(source, x0, noise, t, schedule)
    expected = training_target(destination, x0, noise, t, schedule)
    got = convert(value, source, destination, x_t, t, schedule)
    assert got.dtype == torch.float64
    # x0 from eps divides by sqrt(abar_{T-1}) (~5e-5 for cosine T = 1000): allow that growth.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("target", TARGETS)
def test_round_trip_through_every_target(schedule_name: str, target: str) -> None:
    schedule = SCHEDULES[schedule_name]
    x0, noise, t = _batch(schedule)
    x_t = schedule.add_noise(x0, noise, t)
    value = training_target(target, x0, noise, t, schedule)
    for other in TARGETS:
        there = convert(value, target, other, x_t, t, schedule)
        back = convert(there, other, target, x_t, t, schedule)
        torch.testing.assert_close(back, value, rtol=0, atol=1e-10)


def test_v_definition() -> None:
    schedule = NoiseSchedule()
    x0, noise, t = _batch(schedule)
    abar = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = training_target("v", x0, noise, t, schedule)
    torch.testing.assert_close(v, abar.sqrt() * noise - (1 - abar).sqrt() * x0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("clip_x0", [False, True])
def test_to_x0_and_eps_consistent_with_x_t(target: str, clip_x0: bool) -> None:
    schedule = NoiseSchedule()
    x0, noise, t = _batch(schedule)
    x_t = schedule.add_noise(x0, noise, t)
    # An arbitrary (wrong) model output, so that clipping has something to clip.
    g = torch.Generator().manual_seed(1)
    output = 3 * torch.randn(x_t.shape, dtype=torch.float64, generator=g)
    x0_hat, eps_hat = to_x0_and_eps(target, output, x_t, t, schedule, clip_x0=clip_x0)
    abar = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    rebuilt = abar.sqrt() * x0_hat + (1 - abar).sqrt() * eps_hat
    torch.testing.assert_close(rebuilt, x_t, rtol=0, atol=1e-9)
    if clip_x0:
        assert float(x0_hat.abs().max()) <= 1.0
    else:
        exact_x0, exact_eps = to_x0_and_eps(
            target, training_target(target, x0, noise, t, schedule), x_t, t, schedule, False
        )
        torch.testing.assert_close(exact_x0, x0, rtol=0, atol=1e-10)
        torch.testing.assert_close(exact_eps, noise, rtol=0, atol=1e-10)


def test_unknown_target_raises() -> None:
    schedule = NoiseSchedule("linear", 10)
    x = torch.zeros(1, 1, 2, 2)
    t = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError):
        training_target("score", x, x, t, schedule)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_x0_and_eps("score", x, x, t, schedule)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        convert(x, "epsilon", "score", x, t, schedule)  # type: ignore[arg-type]
