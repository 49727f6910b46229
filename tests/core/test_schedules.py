"""Tests of the noise schedules (``core/diffusion/schedules.py``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule, make_betas

KINDS = ("linear", "cosine", "scaled_linear")
LENGTHS = (10, 250, 1000)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_timesteps", LENGTHS)
def test_betas_valid_and_abar_decreasing(kind: str, num_timesteps: int) -> None:
    schedule = NoiseSchedule(kind, num_timesteps)
    betas = schedule.betas
    assert betas.shape == (num_timesteps,) and betas.dtype == torch.float64
    assert bool(((betas > 0) & (betas < 1)).all())
    abar = schedule.alphas_cumprod
    assert bool((abar[1:] < abar[:-1]).all()), "abar must decrease strictly"
    assert 0 < float(abar[-1]) < float(abar[0]) < 1
    # abar is the running product of (1 - beta).
    torch.testing.assert_close(abar, torch.cumprod(1 - betas, 0), rtol=1e-12, atol=0)


def test_linear_default_is_seed_000() -> None:
    schedule = NoiseSchedule()  # seed 000 §IV-A: T = 250, 0.0004 -> 0.08
    assert schedule.kind == "linear" and schedule.num_timesteps == 250
    assert float(schedule.betas[0]) == pytest.approx(4e-4, rel=1e-12)
    assert float(schedule.betas[-1]) == pytest.approx(0.08, rel=1e-12)
    diffs = schedule.betas.diff()
    torch.testing.assert_close(diffs, torch.full_like(diffs, (0.08 - 4e-4) / 249))


def test_linear_custom_range() -> None:
    schedule = NoiseSchedule("linear", 1000, beta_start=1e-4, beta_end=0.02)
    assert float(schedule.betas[0]) == pytest.approx(1e-4)
    assert float(schedule.betas[-1]) == pytest.approx(0.02)


@pytest.mark.parametrize("num_timesteps", LENGTHS)
def test_cosine_abar_formula(num_timesteps: int) -> None:
    schedule = NoiseSchedule("cosine", num_timesteps)
    s = 0.008

    def f(u: float) -> float:
        return math.cos((u / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2

    # Timestep t (0-based) is the end of step t + 1 of the continuous formula.
    for t in (0, num_timesteps // 4, num_timesteps // 2, (3 * num_timesteps) // 4):
        expected = f(t + 1) / f(0)
        assert float(schedule.alphas_cumprod[t]) == pytest.approx(expected, rel=1e-9)
    assert float(schedule.betas.max()) <= 0.999  # clipped as in Nichol & Dhariwal


@pytest.mark.parametrize("num_timesteps", LENGTHS)
def test_scaled_linear_endpoints(num_timesteps: int) -> None:
    schedule = NoiseSchedule("scaled_linear", num_timesteps)
    assert float(schedule.betas[0]) == pytest.approx(0.00085, rel=1e-12)
    assert float(schedule.betas[-1]) == pytest.approx(0.012, rel=1e-12)
    # Linear in sqrt space.
    roots = schedule.betas.sqrt()
    steps = roots.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, float(steps[0])))


def test_alpha_bar_gather_and_minus_one() -> None:
    schedule = NoiseSchedule("linear", 10)
    like = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    values = schedule.alpha_bar(torch.tensor([-1, 0, 9]), like)
    assert values.shape == (3, 1, 1, 1) and values.dtype == torch.float64
    assert float(values[0]) == 1.0
    assert float(values[1]) == float(schedule.alphas_cumprod[0])
    assert float(values[2]) == float(schedule.alphas_cumprod[9])
    # float timesteps (as the samplers pass them) gather the same values
    values_f = schedule.alpha_bar(torch.tensor([-1.0, 0.0, 9.0]), like)
    torch.testing.assert_close(values, values_f)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", (0, 60, 249))
def test_forward_noising_statistics(kind: str, t: int) -> None:
    schedule = NoiseSchedule(kind, 250)
    m = 20000  # noises per pixel
    values = torch.tensor([-1.0, -0.3, 0.5, 1.0], dtype=torch.float64)
    x0 = values.view(1, 4, 1, 1).expand(m, 4, 1, 1)
    noise = torch.randn(m, 4, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(t))
    x_t = schedule.add_noise(x0, noise, torch.full((m,), t))
    abar = float(schedule.alphas_cumprod[t])
    sigma = math.sqrt(1 - abar)
    mean = x_t.mean(dim=0).flatten()
    std = x_t.std(dim=0).flatten()
    # 5 standard errors: mean error sigma/sqrt(m), std error ~ sigma/sqrt(2m) for a normal.
    expected_mean = math.sqrt(abar) * x0[0].flatten()
    assert torch.allclose(mean, expected_mean, atol=5 * sigma / math.sqrt(m))
    assert torch.allclose(std, torch.full_like(std, sigma), atol=5 * sigma / math.sqrt(2 * m))


def test_add_noise_preserves_dtype_and_shape() -> None:
    schedule = NoiseSchedule()
    x0 = torch.ones(2, 1, 3, 3)
    out = schedule.add_noise(x0, torch.zeros_like(x0), torch.tensor([0, 249]))
    assert out.shape == x0.shape and out.dtype == torch.float32
    abar = schedule.alphas_cumprod[[0, 249]].float().sqrt()
    torch.testing.assert_close(out[:, 0, 0, 0], abar)


@pytest.mark.parametrize(
    "schedule",
    [
        NoiseSchedule(),
        NoiseSchedule("cosine", 1000),
        NoiseSchedule("scaled_linear", 10, beta_start=1e-3, beta_end=2e-2),
    ],
    ids=["linear", "cosine", "scaled"],
)
def test_config_round_trip(schedule: NoiseSchedule) -> None:
    config = schedule.to_config()
    assert config["_class_name"] == "NoiseSchedule"
    again = NoiseSchedule.from_config(json.loads(json.dumps(config)))
    assert again.to_config() == config
    torch.testing.assert_close(again.betas, schedule.betas, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "quadratic"},
        {"num_timesteps": 0},
        {"num_timesteps": -5},
        {"beta_start": 0.1, "beta_end": 0.01},
        {"beta_start": 0.0},
        {"beta_end": 1.0},
        {"kind": "scaled_linear", "beta_end": 1.5},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        NoiseSchedule(**kwargs)


def test_make_betas_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        make_betas("sigmoid", 10)  # type: ignore[arg-type]
