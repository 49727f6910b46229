"""The transfer-set image generator (seed 002 §3.2) and its PSNR/MSE (Table 16), on real PH2
images with a micro UNet."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.diffusion.image_generator import (
    ImageGeneratorConfig,
    ImageUNet,
    load_generator,
    sample_images,
    save_generator,
    to_generator_images,
    train_image_generator,
)
from napari_lesion_diffkd.core.diffusion.image_generator_metrics import (
    mse_255,
    nearest_mse,
    nearest_real_summary,
    psnr_from_mse,
)
from napari_lesion_diffkd.core.distillation.ts_kd.data import load_pair_items
from napari_lesion_diffkd.core.jobs import run_to_completion

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO = {"resolution": 32, "base_channels": 8, "channel_mults": [1, 2], "batch_size": 8,
         "steps": 40, "lr": 2e-3, "sample_steps": 4, "amp_bf16": False}


@pytest.fixture(scope="module")
def real32(ph2_subset: Path) -> torch.Tensor:
    items = load_pair_items(scan_pairs(ph2_subset), 64)
    return torch.cat([to_generator_images(it.image[None], 32) for it in items])


@pytest.fixture(scope="module")
def trained(real32: torch.Tensor):
    losses = []
    config = ImageGeneratorConfig.from_dict(MICRO)
    net, summary = run_to_completion(
        train_image_generator(real32, config),
        on_event=lambda e: losses.append(e.values["loss"]) if e.kind == "progress" else None)
    return net, config, summary, losses


def test_real_images_become_square_uint8_at_the_generator_resolution(real32) -> None:
    assert real32.shape == (12, 3, 32, 32) and real32.dtype == torch.uint8
    assert real32.float().std() > 10  # real content, not a blank


def test_training_lowers_the_denoising_loss(trained) -> None:
    _, _, summary, losses = trained
    assert summary["steps"] == 40 and len(losses) == 40
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]


def test_samples_have_the_right_shape_range_and_seeding(trained) -> None:
    net, config, _, _ = trained
    a = run_to_completion(sample_images(net, config, 3, seed=5, batch_size=2))
    assert a.shape == (3, 3, 32, 32) and a.dtype == torch.uint8
    assert int(a.min()) >= 0 and int(a.max()) <= 255 and a.float().std() > 1
    # Image i depends on seed + i only, not on the batch it was drawn in.
    b = run_to_completion(sample_images(net, config, 2, seed=6, batch_size=2))
    torch.testing.assert_close(a[1:], b, rtol=0, atol=1)
    assert not torch.equal(a[0], a[1])


def test_generator_round_trips_through_safetensors(trained, tmp_path: Path) -> None:
    net, config, _, _ = trained
    save_generator(tmp_path / "gen", net, config)
    loaded, cfg = load_generator(tmp_path / "gen")
    assert cfg == config
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 700])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), net(x, t))


def test_unet_output_shape_and_bad_input() -> None:
    net = ImageUNet(8, (1, 2, 2))
    assert net(torch.randn(2, 3, 16, 16), torch.tensor([0, 9])).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="uint8"):
        next(train_image_generator(torch.zeros(2, 3, 16, 16), ImageGeneratorConfig()))
    with pytest.raises(ValueError, match="not divisible"):
        ImageGeneratorConfig(resolution=30, channel_mults=(1, 2, 4))


def test_mse_and_psnr_on_hand_cases() -> None:
    zeros = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    tens = torch.full((1, 3, 4, 4), 10, dtype=torch.uint8)
    assert float(mse_255(zeros, tens)[0]) == 100.0
    # 10 log10(255^2 / 100) = 28.1308 dB
    assert float(psnr_from_mse(100.0)) == pytest.approx(28.130803608679106)
    assert math.isinf(float(psnr_from_mse(0.0)))
    # The seed's PH2 pair (27.8803 dB, MSE 105.9977) obeys the same formula to 0.003 dB (a
    # mean of per-image PSNRs sits slightly above the PSNR of the mean MSE).
    assert float(psnr_from_mse(105.9977)) == pytest.approx(27.8803, abs=5e-3)
    # One pixel off by 255 in a 2x2 gray image: MSE 255^2 / 4, PSNR 10 log10(4) = 6.02 dB.
    a = torch.zeros(1, 1, 2, 2)
    b = a.clone()
    b[0, 0, 0, 0] = 255
    assert float(psnr_from_mse(mse_255(a, b))[0]) == pytest.approx(10 * math.log10(4))


def test_nearest_real_image_is_found() -> None:
    real = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (0, 100, 200)])
    gen = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (190, 5, 100)])
    mse, index = nearest_mse(gen, real, chunk=2)
    assert index.tolist() == [2, 0, 1]
    assert mse.tolist() == pytest.approx([100.0, 25.0, 0.0])
    summary = nearest_real_summary(gen[:2], real)
    assert summary["n"] == 2 and summary["mse_mean"] == pytest.approx(62.5)
    assert summary["psnr_of_mean_mse"] == pytest.approx(10 * math.log10(255**2 / 62.5))
    assert summary["psnr_mean"] == pytest.approx(
        (10 * math.log10(255**2 / 100) + 10 * math.log10(255**2 / 25)) / 2)
