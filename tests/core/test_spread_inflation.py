"""Spread inflation of one-step samples and its calibration against a teacher
(``sampling_common.inflate_spread``, ``OneStepSampler(spread_inflation=...)``,
``core/distillation/spread_calibration.py``), on real PH2 images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_lesion_diffkd.core.diffusion.samplers import build_sampler, sampler_from_config
from napari_lesion_diffkd.core.diffusion.sampling_common import inflate_spread
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.networks.fast_student import FastStudentNet

SMALL = {"encoder": {"base_channels": 4, "channel_mults": [1, 2]}, "head_channels": 8}


def test_inflation_scales_deviations_keeps_the_mean_and_clamps() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 5, 1, 6, 6) * 0.4 - 0.2  # small values: nothing reaches the clamp at 2x
    out = inflate_spread(x, 2.0)
    mean = x.mean(1, keepdim=True)
    torch.testing.assert_close(out - mean, 2.0 * (x - mean))
    torch.testing.assert_close(out.mean(1), x.mean(1))
    assert inflate_spread(x, 1.0) is x
    single = x[:, :1]
    assert inflate_spread(single, 3.0) is single  # K = 1: nothing to inflate
    wide = inflate_spread(torch.tensor([-0.9, 0.9]).reshape(1, 2, 1, 1, 1), 3.0)
    assert wide.flatten().tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="> 0"):
        inflate_spread(x, 0.0)


def _tiny_student(seed: int = 0) -> FastStudentNet:
    torch.manual_seed(seed)
    net = FastStudentNet(image_channels=3, head_stride=2, **SMALL).eval()
    # A trained head makes the output depend on the noise (it starts at zero).
    torch.nn.init.normal_(net.head_out.weight, std=0.3)
    return net


def test_one_step_sampler_applies_the_factor_and_round_trips(ph2_pairs) -> None:
    from napari_lesion_diffkd.core.data.datasets import read_image_file
    from napari_lesion_diffkd.core.data.preprocess import prepare_image

    schedule = NoiseSchedule("linear", 50)
    net = _tiny_student()
    image = prepare_image(read_image_file(ph2_pairs[0][0]), 32, 3)[None]
    plain = build_sampler("one-step", schedule, "x0")
    inflated = build_sampler("one-step", schedule, "x0", spread_inflation=2.5)
    seeds = [0, 1, 2, 3]
    a = run_to_completion(plain.sample(net, image, 4, seeds=seeds))
    b = run_to_completion(inflated.sample(net, image, 4, seeds=seeds))
    torch.testing.assert_close(b, inflate_spread(a, 2.5))
    assert ((b > 0) != (a > 0)).any()  # the hard masks change, not only the soft values
    # K = 1 (the app's first mask) is the plain sample.
    torch.testing.assert_close(run_to_completion(inflated.sample(net, image, 1, seeds=[0])),
                               a[:, :1])
    assert inflated.to_config()["spread_inflation"] == 2.5
    assert "spread_inflation" not in plain.to_config()  # old bundles' configs are unchanged
    again = sampler_from_config(schedule, inflated.to_config())
    assert again.spread_inflation == 2.5
    with pytest.raises(ValueError, match="spread_inflation"):
        build_sampler("one-step", schedule, "x0", spread_inflation=-1)


def _save_student(folder: Path, net: FastStudentNet, factor: float | None) -> Path:
    from napari_lesion_diffkd.core.bundle import save_bundle

    sampler = {"name": "one-step", "num_samples": 4}
    if factor is not None:
        sampler["spread_inflation"] = factor
    config = {"name": folder.name, "modality": "dermoscopy", "role": "student",
              "objective": "trajectory", "prediction_target": "x0",
              "input": {"size": 32, "channels": 3}, "sampler": sampler,
              "provenance": {"note": "test"}}
    return save_bundle(folder, net, NoiseSchedule("linear", 50), config)


def test_calibration_recovers_a_known_factor_on_real_images(tmp_path: Path, ph2_pairs) -> None:
    """The 'teacher' is the student itself with its spread inflated 3x: the same noises then
    give identical hard masks at factor 3 (correlation 1), and the fit must find it."""
    from napari_lesion_diffkd.core.data.datasets import load_tensors, scan_pairs
    from napari_lesion_diffkd.core.distillation.spread_calibration import (
        calibrate_spread_inflation,
        write_calibrated_bundle,
    )
    from napari_lesion_diffkd.core.registry import load_model

    net = _tiny_student()
    student = load_model(_save_student(tmp_path / "student", net, None))
    teacher = load_model(_save_student(tmp_path / "teacher", net, 3.0))
    folder = Path(ph2_pairs[0][0]).parents[1]
    records = scan_pairs(folder)[:4]
    images, _ = load_tensors(records, 32, 3)
    gen = calibrate_spread_inflation(teacher, student, images, num_samples=4,
                                     grid=(1.5, 3.0, 4.0), image_ids=[r.id for r in records])
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert [e.step for e in events] == [1, 2, 3, 4] and events[-1].total == 4
    assert sorted(result.correlation) == [1.0, 1.5, 3.0, 4.0]  # 1 is always a candidate
    assert result.factor == 3.0
    assert result.correlation[3.0] == pytest.approx(1.0)
    assert result.correlation[1.0] < 1.0 and result.majority_dice[3.0] == pytest.approx(1.0)
    assert result.num_defined == 4

    # The teacher at factor 1 is matched at factor 1.
    same = run_to_completion(calibrate_spread_inflation(student, student, images[:2],
                                                        num_samples=4, grid=(1.0, 2.0)))
    assert same.factor == 1.0 and same.correlation[1.0] == pytest.approx(1.0)

    out = write_calibrated_bundle(student, result, tmp_path / "calibrated", teacher.name,
                                  command="test")
    config = json.loads((out / "config.json").read_text())
    assert config["sampler"] == {"name": "one-step", "num_samples": 4, "spread_inflation": 3.0}
    record = config["provenance"]["spread_calibration"]
    assert record["factor"] == 3.0 and record["teacher"] == "teacher"
    assert record["image_ids"] == [r.id for r in records]
    assert config["provenance"]["note"] == "test"
    assert (out / "model.safetensors").read_bytes() == \
        (tmp_path / "student" / "model.safetensors").read_bytes()
    # The new bundle samples with the factor.
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler

    assert build_bundle_sampler(load_model(out), None, None).spread_inflation == 3.0
    with pytest.raises(ValueError, match="new folder"):
        write_calibrated_bundle(student, result, tmp_path / "student", teacher.name)


def test_calibration_refuses_unusable_inputs(tmp_path: Path) -> None:
    from napari_lesion_diffkd.core.distillation.spread_calibration import (
        calibrate_spread_inflation,
    )
    from napari_lesion_diffkd.core.registry import load_model

    student = load_model(_save_student(tmp_path / "student", _tiny_student(), None))
    images = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match=">= 2"):
        next(calibrate_spread_inflation(student, student, images, num_samples=1))
    with pytest.raises(ValueError, match="finite and > 0"):
        next(calibrate_spread_inflation(student, student, images, grid=(0.0, 2.0)))
    with pytest.raises(ValueError, match=r"\(N, C, S, S\)"):
        next(calibrate_spread_inflation(student, student, images[0]))
    ddim = dict(student.config, sampler={"name": "ddim", "num_samples": 4})
    other = type(student)(network=student.network, schedule=student.schedule, config=ddim)
    with pytest.raises(ValueError, match="one-step students"):
        next(calibrate_spread_inflation(student, other, images))


def test_calibration_can_be_closed_between_events(tmp_path: Path) -> None:
    """Closing the job generator mid-image stops it cleanly (no result, no error)."""
    from napari_lesion_diffkd.core.distillation.spread_calibration import (
        calibrate_spread_inflation,
    )
    from napari_lesion_diffkd.core.registry import load_model

    student = load_model(_save_student(tmp_path / "student", _tiny_student(), None))
    gen = calibrate_spread_inflation(student, student, torch.zeros(3, 3, 32, 32), num_samples=2)
    event = next(gen)
    assert event.step == 1 and event.total == 3
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)
