"""``lesion-diffkd distill``: the fast student (trajectory distillation) and seed 000's KD/EFKD,
from the tiny teacher trained in the session fixture on real PH2 pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_lesion_diffkd.cli import main

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path,
                 ph2_subset: Path) -> Path:
    out = tmp_path_factory.mktemp("students") / "tiny-student"
    code = main(["distill", "--teacher", str(tiny_bundle), "--student-config",
                 str(FIXTURES / "tiny_student.yaml"), "--data", str(ph2_subset),
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    return out


def test_trajectory_student_learns_the_teachers_masks(tiny_student: Path, tiny_bundle: Path,
                                                       ph2_subset: Path) -> None:
    from napari_lesion_diffkd.core.data.datasets import group_split, load_tensors, scan_pairs
    from napari_lesion_diffkd.core.training.kd.trajectory import (
        CACHE_NAME,
        trajectory_noise,
        trajectory_seed,
    )
    from napari_lesion_diffkd.core.registry import load_model

    config = json.loads((tiny_student / "config.json").read_text())
    assert config["provenance"]["train_config"]["teacher"] == str(tiny_bundle)
    assert config["sampler"]["name"] == "one-step"
    log = [json.loads(x) for x in (tiny_student / "train_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses[-1] < losses[0]

    # The cache holds the teacher's masks for exactly the documented seeds.
    cache = torch.load(tiny_student / CACHE_NAME, weights_only=True)
    teacher = load_model(tiny_bundle)
    train, _ = group_split(scan_pairs(ph2_subset), 0.2, 0)
    images, _ = load_tensors(train, 32, 3)
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler

    sampler = build_bundle_sampler(teacher, None, None)
    seeds = [trajectory_seed(0, 1, m, 3) for m in range(3)]
    with torch.no_grad():
        direct = run_to_completion(sampler.sample(teacher.network, images[1:2], 3, seeds=seeds))
    cached = cache["targets"][1].float() / 127.5 - 1
    torch.testing.assert_close(cached, direct[0].clamp(-1, 1), rtol=0, atol=1 / 127.5)
    # The student sees the same noise at its single step.
    noise = trajectory_noise(seeds, (1, 32, 32))
    from napari_lesion_diffkd.core.diffusion.sampling_common import draw_noise, make_generators

    torch.testing.assert_close(noise[2:3], draw_noise(make_generators(seeds[2:3]), (1, 1, 32, 32),
                                                      torch.device("cpu")))


def test_resume_reuses_the_cached_teacher_targets(tiny_student: Path, tiny_bundle: Path,
                                                  ph2_subset: Path, tmp_path: Path,
                                                  capsys) -> None:
    import shutil

    out = tmp_path / "again"
    shutil.copytree(tiny_student, out)
    config = yaml.safe_load((FIXTURES / "tiny_student.yaml").read_text())
    config["max_steps"] = 33
    (tmp_path / "longer.yaml").write_text(yaml.safe_dump(config))
    code = main(["distill", "--teacher", str(tiny_bundle), "--student-config",
                 str(tmp_path / "longer.yaml"), "--data", str(ph2_subset), "--out", str(out),
                 "--device", "cpu", "--resume"])
    assert code == 0
    err = capsys.readouterr().err
    assert "teacher targets reused" in err and "resumed at step 30" in err


def test_seed_student_with_efkd_and_general_kd(tiny_bundle: Path, ph2_subset: Path,
                                              tmp_path: Path) -> None:
    config = yaml.safe_load((FIXTURES / "tiny_train.yaml").read_text())
    config.update(name="tiny-lite", role="student", prediction_target="epsilon",
                  boundary_loss_weight=0.25, max_steps=4, val_every=4, checkpoint_every=4)
    for method in ("general", "efkd"):
        config["kd_method"] = method
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(config))
        code = main(["distill", "--teacher", str(tiny_bundle), "--student-config", str(path),
                     "--data", str(ph2_subset), "--out", str(tmp_path / method),
                     "--device", "cpu"])
        assert code == 0
        saved = json.loads((tmp_path / method / "config.json").read_text())
        assert saved["provenance"]["train_config"]["kd_method"] == method


def test_kd_term_is_zero_when_the_student_copies_the_teacher(tiny_bundle: Path) -> None:
    from napari_lesion_diffkd.core.training.kd.objectives import Distillation
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.training.config import TrainConfig

    teacher = load_model(tiny_bundle)
    config = TrainConfig.from_dict({**yaml.safe_load((FIXTURES / "tiny_train.yaml").read_text()),
                                    "teacher": str(tiny_bundle), "kd_method": "efkd"})
    distill = Distillation(config, teacher.schedule, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(2, 1, 32, 32, generator=gen) > 0.5).float() * 2 - 1
    images = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    t = torch.tensor([3.0, 40.0])
    x_t = teacher.schedule.add_noise(masks, torch.randn(2, 1, 32, 32, generator=gen), t.long())
    with torch.no_grad():
        same = teacher.network(x_t, t, images)
    zero = distill.kd_term(same, "x0", x_t, t, images, masks)
    assert float(zero) == pytest.approx(0.0, abs=1e-6)
    assert float(distill.kd_term(same + 0.1, "x0", x_t, t, images, masks)) > 0


def test_distill_rejects_unknown_teachers_and_mismatched_sizes(tiny_bundle: Path,
                                                              ph2_subset: Path, tmp_path: Path,
                                                              capsys) -> None:
    code = main(["distill", "--teacher", "no-such-teacher", "--student-config",
                 str(FIXTURES / "tiny_student.yaml"), "--data", str(ph2_subset),
                 "--out", str(tmp_path / "a"), "--device", "cpu"])
    assert code == 2 and "no-such-teacher" in capsys.readouterr().err
    config = yaml.safe_load((FIXTURES / "tiny_student.yaml").read_text())
    config["input_size"] = 64
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(config))
    code = main(["distill", "--teacher", str(tiny_bundle), "--student-config",
                 str(tmp_path / "big.yaml"), "--data", str(ph2_subset),
                 "--out", str(tmp_path / "b"), "--device", "cpu"])
    assert code == 2 and "must match" in capsys.readouterr().err


def test_teacher_target_cache_follows_the_teachers_weights(tiny_bundle: Path,
                                                           tmp_path: Path) -> None:
    from napari_lesion_diffkd.core.training.kd.trajectory import compute_teacher_targets
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import load_model

    teacher = load_model(tiny_bundle)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def logs() -> list[str]:
        seen: list[str] = []
        run_to_completion(compute_teacher_targets(teacher, images, 2, 0, cache_dir=tmp_path),
                          on_event=lambda e: seen.append(e.message))
        return seen

    assert not any("reused" in m for m in logs())
    assert any("reused" in m for m in logs())
    with torch.no_grad():  # a retrained teacher under the same name must not reuse the cache
        next(teacher.network.parameters()).add_(0.01)
    assert not any("reused" in m for m in logs())


def test_kd_method_needs_the_diffusion_objective(tiny_bundle: Path) -> None:
    from napari_lesion_diffkd.core.training.kd.objectives import Distillation
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.training.config import TrainConfig

    teacher = load_model(tiny_bundle)
    config = TrainConfig.from_dict({**yaml.safe_load((FIXTURES / "tiny_train.yaml").read_text()),
                                    "teacher": str(tiny_bundle), "kd_method": "general",
                                    "objective": "segmentation"})
    with pytest.raises(ValueError, match="needs objective 'diffusion'"):
        Distillation(config, teacher.schedule, torch.device("cpu"))


# -- --unlabeled --------------------------------------------------------------------------------
@pytest.fixture()
def unlabelled_folder(tmp_path: Path, data_root: Path, ph2_subset: Path) -> Path:
    """A flat folder: 5 PH2 images outside ph2_subset, plus a link to one of the subset's
    validation images (which must be left out)."""
    from napari_lesion_diffkd.core.data.datasets import group_split, scan_pairs

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    subset_ids = {p.stem for p in (ph2_subset / "images").iterdir()}
    others = [r for r in scan_pairs(data_root / "ph2_dermoscopy") if r.id not in subset_ids][:5]
    for r in others:
        (folder / r.image_path.name).symlink_to(r.image_path)
    _, val = group_split(scan_pairs(ph2_subset), 0.2, 0)
    (folder / ("copy_" + val[0].image_path.name)).symlink_to(val[0].image_path)
    return folder


def test_unlabelled_images_get_teacher_targets_only(tiny_bundle: Path, ph2_subset: Path,
                                                    unlabelled_folder: Path, tmp_path: Path,
                                                    capsys) -> None:
    from napari_lesion_diffkd.core.training.kd.trajectory import CACHE_NAME

    config = yaml.safe_load((FIXTURES / "tiny_student.yaml").read_text())
    config.update(max_steps=6, val_every=6, checkpoint_every=6, trajectory_gt_weight=0.5)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "semi"
    code = main(["distill", "--teacher", str(tiny_bundle), "--student-config",
                 str(tmp_path / "s.yaml"), "--data", str(ph2_subset), "--unlabeled",
                 str(unlabelled_folder), "--out", str(out), "--device", "cpu"])
    assert code == 0
    assert "adding 5 unlabelled images (1 left out" in capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    split = saved["provenance"]["split"]
    assert split["n_unlabelled"] == 5
    assert saved["provenance"]["unlabelled_data"] == [str(unlabelled_folder.resolve())]
    cache = torch.load(out / CACHE_NAME, weights_only=True)
    assert cache["targets"].shape[0] == split["n_train"] + 5  # teacher masks for all of them


def test_unlabelled_images_are_refused_without_a_label_free_target(
        tiny_bundle: Path, ph2_subset: Path, unlabelled_folder: Path, tmp_path: Path,
        capsys) -> None:
    config = yaml.safe_load((FIXTURES / "tiny_train.yaml").read_text())
    config.update(role="student", prediction_target="epsilon", kd_method="efkd", max_steps=2)
    (tmp_path / "efkd.yaml").write_text(yaml.safe_dump(config))
    code = main(["distill", "--teacher", str(tiny_bundle), "--student-config",
                 str(tmp_path / "efkd.yaml"), "--data", str(ph2_subset), "--unlabeled",
                 str(unlabelled_folder), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2
    assert "need the 'trajectory' objective" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_a_corrupt_unlabelled_image_is_named(tiny_bundle: Path, ph2_subset: Path,
                                            unlabelled_folder: Path, tmp_path: Path,
                                            capsys) -> None:
    (unlabelled_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["distill", "--teacher", str(tiny_bundle), "--student-config",
                 str(FIXTURES / "tiny_student.yaml"), "--data", str(ph2_subset), "--unlabeled",
                 str(unlabelled_folder), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2
    assert "broken.png: not a readable image" in capsys.readouterr().err
    code = main(["distill", "--teacher", str(tiny_bundle), "--student-config",
                 str(FIXTURES / "tiny_student.yaml"), "--data", str(ph2_subset), "--unlabeled",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2
    assert "--unlabeled" in capsys.readouterr().err


def test_spread_term_trains_on_sample_sets(tiny_bundle: Path, ph2_subset: Path,
                                           tmp_path: Path) -> None:
    """With the spread (CRPS) term on, batches hold G noises per image and training runs to
    the end; the setting is kept in the bundle's config."""
    config = yaml.safe_load((FIXTURES / "tiny_student.yaml").read_text())
    config.update(max_steps=4, val_every=4, checkpoint_every=4, trajectory_noises=3,
                  trajectory_spread_weight=2.0, trajectory_spread_samples=3)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "spread"
    code = main(["distill", "--teacher", str(tiny_bundle), "--student-config",
                 str(tmp_path / "s.yaml"), "--data", str(ph2_subset), "--out", str(out),
                 "--device", "cpu"])
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    train_config = saved["provenance"]["train_config"]
    assert train_config["trajectory_spread_weight"] == 2.0
    assert train_config["trajectory_spread_samples"] == 3
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert losses and all(np.isfinite(losses))


def test_start_bundle_by_registered_name_or_a_clear_error(tiny_bundle: Path, ph2_subset: Path,
                                                           tmp_path: Path, capsys) -> None:
    """``init_bundle`` takes a registered name like a folder; an unknown one is one line."""
    config = yaml.safe_load((FIXTURES / "tiny_student.yaml").read_text())
    config.update(max_steps=2, val_every=2, checkpoint_every=2, init_bundle="no-such-model")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    code = main(["distill", "--teacher", str(tiny_bundle), "--student-config",
                 str(tmp_path / "s.yaml"), "--data", str(ph2_subset), "--out",
                 str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-model" in err and "Traceback" not in err


def test_calibrate_spread_fits_on_training_images_and_writes_a_copy(
        tiny_student: Path, tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    """``calibrate-spread`` uses only the student's training images, picks a factor from the
    grid, and writes a new bundle with the same weights; bad input is one error line."""
    out = tmp_path / "calibrated"
    code = main(["calibrate-spread", "--student", str(tiny_student), "--teacher",
                 str(tiny_bundle), "--out", str(out), "--images", "3", "--k", "3",
                 "--grid", "1", "2", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((out / "config.json").read_text())
    record = saved["provenance"]["spread_calibration"]
    assert printed["factor"] == saved["sampler"]["spread_inflation"] == record["factor"]
    assert record["factor"] in (1.0, 2.0) and len(record["candidates"]) == 2
    val_ids = set(saved["provenance"]["split"]["val_ids"])
    assert len(record["image_ids"]) == 3 and not val_ids & set(record["image_ids"])
    assert (out / "model.safetensors").read_bytes() == \
        (tiny_student / "model.safetensors").read_bytes()
    source = json.loads((tiny_student / "config.json").read_text())
    assert "spread_inflation" not in source["sampler"]  # the student itself is unchanged

    # Registered, its model card states the factor and every candidate's score.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "register_model", Path(__file__).parents[2] / "scripts" / "register_model.py")
    register = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(register)
    assert register.main([str(out), "--models-dir", str(tmp_path / "models")]) == 0
    capsys.readouterr()
    card = (tmp_path / "models" / saved["name"] / "README.md").read_text()
    assert f"`sampler.spread_inflation` = {record['factor']:g}" in card
    assert f"1: {record['candidates'][0]['variance_correlation']:.3f}" in card

    for args, message in ((["--student", str(tmp_path / "none")], "none"),
                          (["--student", str(tiny_bundle)], "one-step"),
                          (["--student", str(tiny_student), "--out", str(tiny_student)],
                           "new folder")):
        argv = ["calibrate-spread", "--teacher", str(tiny_bundle), "--out",
                str(tmp_path / "x"), "--images", "1", "--k", "2", *args]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
