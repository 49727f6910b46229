"""Unit checks of the input guards: pixel limit per reader, NaN fill, strict JSON lines,
unique output names, bundle config bounds, weight checks and safe checkpoint loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.io import imread

from napari_lesion_diffkd.core.bundle import BundleError, load_bundle
from napari_lesion_diffkd.core.data.readers import ImageReadError, read_image
from tests.core.test_bundle_registry import _save
from tests.faults import bad_files

# ------------------------------------------------------------------------- pixel limit


@pytest.mark.parametrize("maker, suffix", [
    (bad_files.png_bomb, ".png"), (bad_files.tiff_bomb, ".tif"),
    (bad_files.dicom_bomb, ".dcm"), (bad_files.nifti_bomb, ".nii"),
])
def test_every_reader_refuses_a_pixel_bomb_from_its_header(maker, suffix: str,
                                                           tmp_path: Path) -> None:
    from napari_lesion_diffkd.core.data.limits import PixelLimitError

    path = maker(tmp_path / f"bomb{suffix}")
    assert path.stat().st_size < 200_000  # small on disk, huge when decoded
    with pytest.raises(PixelLimitError, match="megapixels.*LESION_DIFFKD_MAX_PIXELS"):
        read_image(path)


def test_a_huge_volume_header_is_refused_too(tmp_path: Path) -> None:
    from napari_lesion_diffkd.core.data.limits import PixelLimitError

    # 2000 x 2000 per slice is fine, 300 slices of it (1.2 G voxels) is not.
    path = bad_files.nifti_bomb(tmp_path / "vol.nii", shape=(2000, 2000, 300))
    with pytest.raises(PixelLimitError, match="million voxels"):
        read_image(path)


def test_the_limit_is_configurable_and_real_images_pass_by_default(ct_pairs, ph2_pairs,
                                                                   monkeypatch) -> None:
    image = ct_pairs[0][0]  # 256 x 256
    assert read_image(image).data.shape == (256, 256)
    monkeypatch.setenv("LESION_DIFFKD_MAX_PIXELS", str(256 * 256 - 1))
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(image)
    monkeypatch.setenv("LESION_DIFFKD_MAX_PIXELS", str(256 * 256))
    assert read_image(image).data.shape == (256, 256)
    monkeypatch.setenv("LESION_DIFFKD_MAX_PIXELS", "-5")
    with pytest.raises(ImageReadError, match="must be >= 1"):
        read_image(ph2_pairs[0][0])


# ------------------------------------------------------------------------- NaN pixels


def test_fill_nonfinite_uses_the_finite_minimum(ct_pairs) -> None:
    from napari_lesion_diffkd.core.data.finite import NonFiniteImageError, fill_nonfinite

    image = imread(ct_pairs[0][0]).astype(np.float32)
    dirty = image.copy()
    dirty[0, 0], dirty[1, 1], dirty[2, 2] = np.nan, np.inf, -np.inf
    filled, n = fill_nonfinite(dirty)
    assert n == 3 and np.isfinite(filled).all()
    assert filled[0, 0] == filled[1, 1] == filled[2, 2] == np.nanmin(dirty[np.isfinite(dirty)])
    np.testing.assert_array_equal(filled[3:], image[3:])
    assert fill_nonfinite(image)[1] == 0 and fill_nonfinite(image)[0] is image
    with pytest.raises(NonFiniteImageError):
        fill_nonfinite(np.full((4, 4), np.nan, np.float32))


def test_prepare_image_of_a_nan_image_is_finite_and_close_to_the_clean_one(ph2_pairs) -> None:
    from napari_lesion_diffkd.core.data.preprocess import prepare_image

    image = imread(ph2_pairs[0][0]).astype(np.float32)
    dirty = image.copy()
    dirty[0, :4] = np.nan
    clean_t, dirty_t = prepare_image(image, 32, 3), prepare_image(dirty, 32, 3)
    assert torch.isfinite(dirty_t).all()
    assert (clean_t - dirty_t).abs().mean() < 0.01


# --------------------------------------------------------------------- strict JSON lines


def test_json_line_turns_nonfinite_numbers_into_null() -> None:
    from napari_lesion_diffkd.core.json_lines import json_line

    line = json_line({"a": float("nan"), "b": [np.float32(np.inf), 1.5], "c": np.float64(2.0),
                      "d": {"e": -float("inf")}, "f": (1, 2)})
    assert json.loads(line) == {"a": None, "b": [None, 1.5], "c": 2.0, "d": {"e": None},
                                "f": [1, 2]}


# --------------------------------------------------------------------- output names


def test_unique_output_stems_are_deterministic_and_never_clash() -> None:
    from napari_lesion_diffkd.core.predict_files import OUTPUT_SUFFIXES, unique_output_stems

    paths = [Path("a/img.png"), Path("b/img.png"), Path("img.jpg"), Path("x_uncertainty.png"),
             Path("x.png"), Path("IMG-2.tif"), Path("case.nii.gz"), Path("other.png")]
    stems = unique_output_stems(paths)
    assert stems == ["img", "img-2", "img-3", "x_uncertainty", "x-2", "IMG-2-2", "case",
                     "other"]
    assert unique_output_stems(paths) == stems
    files = [(s + sfx).lower() for s in stems for sfx in OUTPUT_SUFFIXES]
    assert len(files) == len(set(files))


# ------------------------------------------------------------------------ config bounds


@pytest.mark.parametrize("path, value, message", [
    (("sampler", "num_samples"), 100_000, "sampler.num_samples must be in 1..256"),
    (("sampler", "num_steps"), True, "whole number"),
    (("input", "size"), 4, "input.size"),
    (("input", "channels"), 2, "input.channels must be one of"),
    (("schedule", "num_timesteps"), float("nan"), "schedule.num_timesteps"),
    (("network", "channel_mults"), [1, 100_000], "network.channel_mults"),
])
def test_bundle_config_bounds(path, value, message: str) -> None:
    from napari_lesion_diffkd.core.config_bounds import ConfigBoundsError, check_bundle_config

    config = {"input": {"size": 32, "channels": 3},
              "sampler": {"name": "ddim", "num_steps": 2, "num_samples": 2},
              "schedule": {"kind": "cosine", "num_timesteps": 40},
              "network": {"_class_name": "CondDiffusionUNet", "channel_mults": [1, 2]}}
    check_bundle_config(config)
    config[path[0]][path[1]] = value
    with pytest.raises(ConfigBoundsError, match=message):
        check_bundle_config(config)


def test_every_shipped_bundle_is_within_the_bounds() -> None:
    from napari_lesion_diffkd.core.bundle import read_config
    from napari_lesion_diffkd.core.config_bounds import check_bundle_config

    models = Path(__file__).parents[2] / "models"
    bundles = [p for p in models.iterdir() if (p / "config.json").is_file()]
    assert len(bundles) >= 9
    for folder in bundles:
        check_bundle_config(read_config(folder))


# ------------------------------------------------------------------------- weights


@pytest.mark.parametrize("damage, message", [
    ("nan", "'.*' holds 1 NaN"), ("inf", "holds 0 NaN and 1 infinite"),
    ("int8", "torch.int8, expected a floating-point"), ("shape", "has shape"),
])
def test_load_bundle_names_the_bad_tensor(damage: str, message: str, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    _save(folder)

    def change(state):
        name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
        t = state[name].clone()
        if damage == "nan":
            t.view(-1)[0] = float("nan")
        elif damage == "inf":
            t.view(-1)[0] = float("inf")
        elif damage == "int8":
            t = t.to(torch.int8)
        else:
            t = t.reshape(-1)[1:].clone()
        state[name] = t
        return state

    bad_files.rewrite_weights(folder, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(folder)


def test_a_sam_bundle_with_nan_weights_is_refused(tmp_path: Path) -> None:
    models = Path(__file__).parents[2] / "models"
    folder = Path(shutil.copytree(models / "lesion-sam-tiny", tmp_path / "sam"))

    def change(state):
        name = sorted(k for k, v in state.items() if v.is_floating_point())[-1]
        state[name] = torch.full_like(state[name], float("nan"))
        return state

    bad_files.rewrite_weights(folder, change)
    from napari_lesion_diffkd.core.sam.sam_bundle import load_sam_bundle

    with pytest.raises(BundleError, match="NaN"):
        load_sam_bundle(folder)


# -------------------------------------------------------------------- checkpoints


def test_load_checkpoint_refuses_a_hostile_pickle_without_running_it(tmp_path: Path) -> None:
    from napari_lesion_diffkd.core.checkpoint_load import CheckpointLoadError, load_checkpoint

    marker = tmp_path / "pwned"
    path = bad_files.hostile_checkpoint(tmp_path / "c.pt", marker)
    with pytest.raises(CheckpointLoadError, match="refused.*Unsupported global") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
    assert not marker.exists()
    torch.save({"step": 3}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt", required=("step",)) == {"step": 3}
    with pytest.raises(CheckpointLoadError, match="missing \\['model'\\]"):
        load_checkpoint(tmp_path / "ok.pt", required=("model",))


def test_every_shipped_recipe_is_within_the_training_bounds() -> None:
    from napari_lesion_diffkd.core.config_bounds import check_train_config
    from napari_lesion_diffkd.core.config_files import read_mapping

    root = Path(__file__).parents[2]
    recipes = sorted((root / "configs").rglob("*.yaml")) + sorted(
        (root / "tests" / "fixtures").glob("*.yaml"))
    assert len(recipes) >= 15
    for path in recipes:
        check_train_config(read_mapping(path))


def test_a_sam_ssl_student_with_int8_weights_is_refused(ph2_subset: Path, tmp_path: Path
                                                        ) -> None:
    import yaml

    from napari_lesion_diffkd.cli import main
    from napari_lesion_diffkd.core.distillation.sam_ssl.bundle import load_student
    from tests.faults.test_input_faults import SAM_SSL_TINY

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SAM_SSL_TINY))
    out = tmp_path / "student"
    assert main(["distill", "--method", "sam-ssl", "--teacher", "lesion-sam-tiny",
                 "--student-config", str(tmp_path / "s.yaml"), "--data", str(ph2_subset),
                 "--out", str(out), "--device", "cpu", "--threads", "1"]) == 0
    folder = next(p.parent for p in out.rglob("config.json")
                  if json.loads(p.read_text()).get("kind") == "sam-ssl-student")
    load_student(folder)  # intact: loads

    def change(state):
        name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
        state[name] = state[name].to(torch.int8)
        return state

    bad_files.rewrite_weights(folder, change)
    with pytest.raises(BundleError, match="torch.int8"):
        load_student(folder)
