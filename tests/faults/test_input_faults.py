"""Fault and abuse suite for inputs, through the CLI in-process (``cli.main([...])``).

Every bad input must give a clear ``error:`` line on stderr (no traceback) and a non-zero
exit code, and must leave no output file of its own (nor a temporary one) behind:

* per-image problems in ``predict`` / ``evaluate`` (corrupt, bombs, all-NaN): the image is
  named and skipped, the others are still processed, exit code 1 (the predict contract);
* problems with the model, its config, the arguments or a checkpoint: exit code 2, nothing
  written at all.

Inputs that can be repaired (a few NaN/Inf pixels) are segmented with a warning instead,
and same-stem inputs get distinct output names. ``BAD_INPUTS`` counts the distinct bad
inputs tried here (the parametrised cases plus the single tests).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from skimage.io import imread

from napari_lesion_diffkd.cli import main
from tests.faults import bad_files

FIXTURES = Path(__file__).parents[1] / "fixtures"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- helpers


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _strict_json_lines(out: str) -> list[dict]:
    """Every stdout line that looks like JSON, parsed strictly (NaN/Infinity refused)."""

    def refuse(token: str):
        raise AssertionError(f"non-finite number {token} in a JSON line")

    return [json.loads(line, parse_constant=refuse) for line in out.splitlines()
            if line.startswith("{")]


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line.strip() for line in err.splitlines() if line.strip().startswith("error")]


def _no_leftovers(folder: Path, stem: str | None = None) -> None:
    """No temporary file in ``folder``; no output at all for ``stem`` when given."""
    if not folder.exists():
        return
    names = [p.name for p in folder.iterdir()]
    assert not [n for n in names if n.endswith(".tmp")], names
    if stem is not None:
        assert not [n for n in names if n.startswith(stem)], names


def _predict(bundle: Path, inputs: list[Path], out: Path, capsys, *extra: str):
    return _run(["predict", "--model", str(bundle), "--input", *map(str, inputs),
                 "--output", str(out), "--samples", "2", "--device", "cpu", *extra], capsys)


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny PH2-trained bundle to damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


# ------------------------------------------------------------- per-image faults (exit 1)


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 3])
    return dst


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _bad_image(kind: str, tmp: Path, ph2_pairs, ct_pairs) -> Path:
    """One bad image file of ``kind`` (real data where the format allows)."""
    ct = imread(ct_pairs[0][0]).astype(np.float32)
    makers = {
        "truncated_png": lambda: _truncated(ct_pairs[0][0], tmp / "truncated.png"),
        "truncated_jpeg": lambda: _truncated(ph2_pairs[0][0], tmp / "truncated.jpg"),
        "zero_bytes": lambda: _write(tmp / "empty.png", b""),
        "text_as_png": lambda: _write(tmp / "notes.png", b"not an image\n"),
        "png_as_tiff": lambda: _write(tmp / "really_png.tif", ct_pairs[1][0].read_bytes()),
        "jpeg_header_only": lambda: _write(tmp / "header.jpg",
                                           ph2_pairs[1][0].read_bytes()[:600]),
        "png_bomb": lambda: bad_files.png_bomb(tmp / "bomb.png"),
        "tiff_bomb": lambda: bad_files.tiff_bomb(tmp / "bomb.tif"),
        "dicom_bomb": lambda: bad_files.dicom_bomb(tmp / "bomb.dcm"),
        "nifti_bomb": lambda: bad_files.nifti_bomb(tmp / "bomb.nii"),
        "all_nan_tiff": lambda: bad_files.nan_tiff(tmp / "allnan.tif", ct, n_nan=ct.size),
        "all_inf_nifti": lambda: bad_files.nan_nifti(tmp / "allinf.nii", ct, n_nan=ct.size,
                                                     value=np.inf),
        "volume_nifti": lambda: _volume_nifti(tmp / "volume.nii", ct),
    }
    return makers[kind]()


def _volume_nifti(path: Path, image: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.stack([image.T] * 3, axis=-1), np.eye(4)), str(path))
    return path


PER_IMAGE_FAULTS = ["truncated_png", "truncated_jpeg", "zero_bytes", "text_as_png",
                    "png_as_tiff", "jpeg_header_only", "png_bomb", "tiff_bomb", "dicom_bomb",
                    "nifti_bomb", "all_nan_tiff", "all_inf_nifti", "volume_nifti"]


@pytest.mark.parametrize("kind", PER_IMAGE_FAULTS)
def test_a_bad_image_is_named_skipped_and_fails_the_run(kind: str, tiny_bundle: Path, ph2_pairs,
                                                        ct_pairs, tmp_path: Path,
                                                        capsys) -> None:
    (tmp_path / "in").mkdir()
    bad = _bad_image(kind, tmp_path / "in", ph2_pairs, ct_pairs)
    good = ph2_pairs[2][0]
    out = tmp_path / "out"
    code, stdout, err = _predict(tiny_bundle, [bad, good], out, capsys)
    assert code == 1
    errors = _error_lines(err)
    assert len(errors) == 1 and bad.name in errors[0], err
    lines = _strict_json_lines(stdout)
    assert [Path(line["input"]).name for line in lines] == [good.name]
    assert (out / f"{good.stem}.png").is_file()
    _no_leftovers(out, bad.name.split(".")[0])
    if "bomb" in kind:
        assert "megapixels" in errors[0] and "LESION_DIFFKD_MAX_PIXELS" in errors[0]


@pytest.mark.parametrize("setting", ["1000", "lots"])
def test_the_pixel_limit_setting_applies_to_real_images(setting: str, tiny_bundle: Path,
                                                        ct_pairs, tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    """A real 256 x 256 CT slice is refused under a 1000-pixel limit; a malformed setting is
    reported as such (not as a corrupt image)."""
    monkeypatch.setenv("LESION_DIFFKD_MAX_PIXELS", setting)
    image = ct_pairs[0][0]
    code, stdout, err = _predict(tiny_bundle, [image], tmp_path / "out", capsys)
    assert code == 1 and not _strict_json_lines(stdout)
    (line,) = _error_lines(err)
    assert image.name in line and "LESION_DIFFKD_MAX_PIXELS" in line
    assert ("megapixels" in line) if setting == "1000" else ("not a whole number" in line)
    _no_leftovers(tmp_path / "out", image.stem)


# ---------------------------------------------------- repairable pixels (exit 0, warned)


def _float_rgb(path: Path) -> np.ndarray:
    return imread(path).astype(np.float32) / 255.0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_few_nonfinite_pixels_are_filled_and_warned_not_an_empty_mask(
        value: float, tiny_bundle: Path, ph2_pairs, tmp_path: Path, capsys) -> None:
    """Five NaN/Inf pixels in a float RGB TIFF of a real PH2 image: the masks match the
    clean image's (they used to be empty with exit 0), the JSON line carries a warning and
    is strict JSON."""
    import tifffile

    image = _float_rgb(ph2_pairs[4][0])
    tifffile.imwrite(tmp_path / "clean.tif", image, photometric="rgb")
    dirty = image.copy()
    dirty[0, :5, 0] = value  # top-left corner, outside the lesion
    tifffile.imwrite(tmp_path / "dirty.tif", dirty, photometric="rgb")
    code, stdout, err = _predict(tiny_bundle, [tmp_path / "clean.tif", tmp_path / "dirty.tif"],
                                 tmp_path / "out", capsys, "--seed", "1")
    assert code == 0, err
    clean_line, dirty_line = _strict_json_lines(stdout)
    assert "warnings" not in clean_line
    assert "5 of" in dirty_line["warnings"][0] and "finite minimum" in dirty_line["warnings"][0]
    assert "warning:" in err and "dirty.tif" in err
    clean = imread(tmp_path / "out" / "clean.png") > 0
    dirty_mask = imread(tmp_path / "out" / "dirty.png") > 0
    assert clean.mean() > 0.05  # the tiny PH2 model does find the lesion
    assert (clean == dirty_mask).mean() > 0.99
    assert all(np.isfinite(v) for v in dirty_line["scores"].values())


def test_nan_voxels_in_a_nifti_slice_are_filled(tiny_bundle: Path, ph2_pairs, tmp_path: Path,
                                                capsys) -> None:
    gray = _float_rgb(ph2_pairs[5][0]) @ np.array([0.299, 0.587, 0.114], np.float32)
    bad_files.nan_nifti(tmp_path / "clean.nii", gray, n_nan=0)
    bad_files.nan_nifti(tmp_path / "dirty.nii", gray, n_nan=7)
    code, stdout, err = _predict(tiny_bundle, [tmp_path / "clean.nii", tmp_path / "dirty.nii"],
                                 tmp_path / "out", capsys)
    assert code == 0, err
    clean_line, dirty_line = _strict_json_lines(stdout)
    assert dirty_line["warnings"] and "7 of" in dirty_line["warnings"][0]
    assert abs(clean_line["lesion_fraction"] - dirty_line["lesion_fraction"]) < 0.01


# ------------------------------------------------------- same stems (exit 0, no clobber)


def _stem_clash(kind: str, tmp: Path, ph2_pairs) -> list[Path]:
    a, b = ph2_pairs[0][0], ph2_pairs[1][0]
    if kind == "same_name_two_folders":
        (tmp / "a").mkdir(), (tmp / "b").mkdir()
        return [Path(shutil.copy(a, tmp / "a" / "img.jpg")),
                Path(shutil.copy(b, tmp / "b" / "img.jpg"))]
    if kind == "same_stem_two_formats":
        from PIL import Image

        (tmp / "f").mkdir()
        shutil.copy(a, tmp / "f" / "img.jpg")
        Image.open(b).save(tmp / "f" / "img.png")
        return [tmp / "f"]  # a folder input: sorted, img.jpg then img.png
    if kind == "name_of_another_output":
        (tmp / "f").mkdir()
        shutil.copy(a, tmp / "f" / "x.jpg")
        shutil.copy(b, tmp / "f" / "x_uncertainty.jpg")
        return [tmp / "f" / "x_uncertainty.jpg", tmp / "f" / "x.jpg"]
    assert kind == "case_only"
    (tmp / "a").mkdir(), (tmp / "b").mkdir()
    return [Path(shutil.copy(a, tmp / "a" / "IMG.jpg")),
            Path(shutil.copy(b, tmp / "b" / "img.jpg"))]


@pytest.mark.parametrize("kind", ["same_name_two_folders", "same_stem_two_formats",
                                  "name_of_another_output", "case_only"])
def test_inputs_with_clashing_names_get_distinct_outputs(kind: str, tiny_bundle: Path,
                                                         ph2_pairs, tmp_path: Path,
                                                         capsys) -> None:
    inputs = _stem_clash(kind, tmp_path, ph2_pairs)
    out = tmp_path / "out"
    code, stdout, err = _predict(tiny_bundle, inputs, out, capsys, "--seed", "2")
    assert code == 0, err
    lines = _strict_json_lines(stdout)
    assert len(lines) == 2
    written = [set(line["outputs"].values()) for line in lines]
    assert not written[0] & written[1]
    assert lines[0]["output_stem"] != lines[1]["output_stem"]
    assert lines[1]["output_stem"].endswith("-2")
    for line in lines:  # each input's files hold that input's own prediction
        single = tmp_path / ("single_" + line["output_stem"])
        assert _predict(tiny_bundle, [Path(line["input"])], single, capsys, "--seed", "2")[0] == 0
        mine = next(p for p in single.iterdir() if p.name.endswith("_samples.tif"))
        assert mine.read_bytes() == Path(line["outputs"]["samples"]).read_bytes()


# ----------------------------------------------------------------- broken bundles (exit 2)


def _first_float(state: dict) -> str:
    return next(k for k, v in sorted(state.items()) if v.is_floating_point() and v.numel() > 1)


def _poison(value: float):
    def change(state):
        name = _first_float(state)
        state[name] = state[name].clone()
        state[name].view(-1)[0] = value
        return state

    return change


def _retype(state):
    name = _first_float(state)
    state[name] = state[name].to(torch.int8)
    return state


def _reshape(state):
    name = _first_float(state)
    state[name] = state[name].reshape(-1)[:-1].clone()
    return state


def _drop(state):
    state.pop(_first_float(state))
    return state


def _extra(state):
    state["stowaway.weight"] = torch.zeros(3)
    return state


def _set(path: tuple[str, ...], value):
    def change(config):
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        return config

    return change


BUNDLE_FAULTS = {
    # weights
    "nan_weight": ("weights", _poison(float("nan")), "NaN"),
    "inf_weight": ("weights", _poison(float("inf")), "infinite"),
    "int8_weights": ("weights", _retype, "torch.int8"),
    "wrong_shape_tensor": ("weights", _reshape, "shape"),
    "missing_tensor": ("weights", _drop, "missing"),
    "unexpected_tensor": ("weights", _extra, "stowaway.weight"),
    "weights_file_missing": ("delete", "model.safetensors", "missing"),
    "weights_not_safetensors": ("bytes", b"\x80\x04not safetensors", "weights"),
    # config
    "config_is_a_list": ("config", lambda c: [c], "JSON object"),
    "config_is_a_number": ("config", lambda c: 7, "JSON object"),
    "config_not_json": ("bytes_config", b"{name: tiny", "unreadable config"),
    "config_missing": ("delete", "config.json", "unknown model"),
    "absurd_num_samples": ("config", _set(("sampler", "num_samples"), 100_000),
                           "sampler.num_samples"),
    "zero_num_steps": ("config", _set(("sampler", "num_steps"), 0), "sampler.num_steps"),
    "absurd_input_size": ("config", _set(("input", "size"), 100_000), "input.size"),
    "absurd_channels": ("config", _set(("input", "channels"), 7), "input.channels"),
    "fractional_size": ("config", _set(("input", "size"), 32.5), "input.size"),
    "absurd_network_width": ("config", _set(("network", "base_channels"), 10**6),
                             "network.base_channels"),
    "absurd_timesteps": ("config", _set(("schedule", "num_timesteps"), 10**9),
                         "schedule.num_timesteps"),
    "input_not_an_object": ("config", _set(("input",), [32, 3]), "input"),
    "unknown_network_class": ("config", _set(("network", "_class_name"), "Nope"), "Nope"),
}


def _damage(bundle: Path, kind: str, change) -> None:
    if kind == "weights":
        bad_files.rewrite_weights(bundle, change)
    elif kind == "config":
        bad_files.rewrite_config(bundle, change)
    elif kind == "delete":
        (bundle / change).unlink()
    elif kind == "bytes":
        (bundle / "model.safetensors").write_bytes(change)
    elif kind == "bytes_config":
        (bundle / "config.json").write_bytes(change)


@pytest.mark.parametrize("fault", sorted(BUNDLE_FAULTS))
def test_a_broken_bundle_is_one_error_line_and_exit_2(fault: str, bundle_copy: Path, ph2_pairs,
                                                      tmp_path: Path, capsys) -> None:
    kind, change, expected = BUNDLE_FAULTS[fault]
    _damage(bundle_copy, kind, change)
    out = tmp_path / "out"
    code, stdout, err = _predict(bundle_copy, [ph2_pairs[0][0]], out, capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert expected in line, line
    assert not stdout.strip()
    assert not out.exists()  # nothing written, not even the folder


@pytest.mark.parametrize("args, expected", [
    (["--samples", "100000"], "--samples"), (["--samples", "0"], "--samples"),
    (["--samples", "-3"], "--samples"), (["--steps", "5000"], "--steps"),
    (["--model", "no-such-model"], "unknown model"),
])
def test_absurd_arguments_are_one_error_line_and_exit_2(args: list[str], expected: str,
                                                        tiny_bundle: Path, ph2_pairs,
                                                        tmp_path: Path, capsys) -> None:
    argv = ["predict", "--model", str(tiny_bundle), "--input", str(ph2_pairs[0][0]),
            "--output", str(tmp_path / "out"), "--device", "cpu", *args]
    code, stdout, err = _run(argv, capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert expected in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault", ["config_is_a_list", "config_not_json", "input_not_an_object"])
def test_models_lists_a_broken_bundle_with_its_reason(fault: str, bundle_copy: Path,
                                                      monkeypatch, capsys) -> None:
    kind, change, expected = BUNDLE_FAULTS[fault]
    _damage(bundle_copy, kind, change)
    monkeypatch.setenv("NAPARI_LESION_DIFFKD_MODELS", str(bundle_copy.parent))
    code, stdout, err = _run(["models", "--json"], capsys)
    assert code == 0 and "Traceback" not in err
    rows = {r["name"]: r for r in _strict_json_lines(stdout)}
    assert rows["bundle"]["role"] == "broken" and expected.split()[0] in rows["bundle"]["reason"]
    assert rows["dermoscopy-teacher"]["role"] == "teacher"  # the good ones are still listed
    code, stdout, _ = _run(["models"], capsys)
    assert code == 0 and "broken: bundle:" in stdout


# ---------------------------------------------------------- hostile checkpoints (exit 2)


def _train_args(ph2_subset: Path, out: Path, config: Path | None = None) -> list[str]:
    return ["train", "--config", str(config or FIXTURES / "tiny_train.yaml"),
            "--data", str(ph2_subset), "--out", str(out), "--device", "cpu"]


@pytest.mark.parametrize("fault", ["hostile_pickle", "garbage_bytes", "not_a_dict",
                                   "missing_keys", "other_network"])
def test_train_resume_from_a_bad_checkpoint_is_one_line(fault: str, ph2_subset: Path,
                                                        tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    ckpt = out / "checkpoint.pt"
    marker = tmp_path / "pwned"
    if fault == "hostile_pickle":
        bad_files.hostile_checkpoint(ckpt, marker)
    elif fault == "garbage_bytes":
        ckpt.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    elif fault == "not_a_dict":
        torch.save([torch.zeros(2)], ckpt)
    elif fault == "missing_keys":
        torch.save({"model": {}}, ckpt)
    else:
        keys = ("model", "ema", "optimizer", "generator", "step", "best_dice",
                "plateau_scale", "stale", "order", "elapsed")
        torch.save({k: {"no.such.weight": torch.zeros(1)} for k in keys}, ckpt)
    code, stdout, err = _run(_train_args(ph2_subset, out) + ["--resume"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "checkpoint.pt" in line
    assert not marker.exists()  # the pickle's code never ran
    assert not (out / "model.safetensors").exists() and not stdout.strip()


def test_train_on_a_folder_holding_a_pixel_bomb_is_one_line(ph2_subset: Path, tmp_path: Path,
                                                             capsys) -> None:
    """Training reads its pairs with the same pixel limit as predict."""
    data = Path(shutil.copytree(ph2_subset, tmp_path / "data", symlinks=True))
    bad_files.png_bomb(data / "images" / "ZZZ999.png")
    bad_files.png_bomb(data / "masks" / "ZZZ999.png")
    with open(data / "metadata.csv", "a") as fh:
        fh.write("ZZZ999,ZZZ999\n")
    out = tmp_path / "run"
    code, stdout, err = _run(_train_args(data, out), capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "ZZZ999.png" in line and "megapixels" in line
    assert not (out / "model.safetensors").exists() and not stdout.strip()


def test_distill_with_a_hostile_teacher_cache_is_one_line(tiny_bundle: Path, ph2_subset: Path,
                                                          tmp_path: Path, capsys) -> None:
    """The trajectory student's teacher-target cache in OUT is read with weights_only=True:
    a planted pickle is refused with one line, its code never runs."""
    out = tmp_path / "student"
    out.mkdir()
    marker = tmp_path / "pwned"
    bad_files.hostile_checkpoint(out / "teacher_targets.pt", marker, keys=("fingerprint",))
    code, _, err = _run(["distill", "--teacher", str(tiny_bundle), "--student-config",
                         str(FIXTURES / "tiny_student.yaml"), "--data", str(ph2_subset),
                         "--out", str(out), "--device", "cpu"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "teacher_targets.pt" in line and "refused" in line
    assert not marker.exists()


def test_distill_resume_from_a_hostile_checkpoint_is_one_line(tiny_bundle: Path,
                                                              ph2_subset: Path,
                                                              tmp_path: Path, capsys) -> None:
    out = tmp_path / "student"
    out.mkdir()
    marker = tmp_path / "pwned"
    bad_files.hostile_checkpoint(out / "checkpoint.pt", marker)
    config = yaml.safe_load((FIXTURES / "tiny_student.yaml").read_text())
    config["trajectory_noises"] = 1  # fewer teacher calls before the resume is attempted
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    code, _, err = _run(["distill", "--teacher", str(tiny_bundle), "--student-config",
                         str(tmp_path / "s.yaml"), "--data", str(ph2_subset), "--out", str(out),
                         "--device", "cpu", "--resume"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "checkpoint.pt" in line and "refused" in line
    assert not marker.exists()


@pytest.mark.parametrize("key, value", [
    ("input_size", 100_000), ("image_channels", 5), ("batch_size", 0), ("max_steps", -1),
    ("sampler", {"name": "ddim", "num_steps": 2, "num_samples": 100_000}),
    ("network", {"_class_name": "CondDiffusionUNet", "base_channels": 10**6}),
])
def test_absurd_training_recipes_are_one_line_before_any_work(key: str, value, ph2_subset: Path,
                                                              tmp_path: Path, capsys) -> None:
    config = yaml.safe_load((FIXTURES / "tiny_train.yaml").read_text())
    config[key] = value
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    code, stdout, err = _run(_train_args(ph2_subset, out, tmp_path / "bad.yaml"), capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert key in line and "bad.yaml" in line
    assert not out.exists() and not stdout.strip()


def test_distill_with_an_absurd_student_recipe_is_one_line(tiny_bundle: Path, ph2_subset: Path,
                                                           tmp_path: Path, capsys) -> None:
    config = yaml.safe_load((FIXTURES / "tiny_student.yaml").read_text())
    config["trajectory_noises"] = 10**6
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    code, _, err = _run(["distill", "--teacher", str(tiny_bundle), "--student-config",
                         str(tmp_path / "s.yaml"), "--data", str(ph2_subset), "--out",
                         str(tmp_path / "out"), "--device", "cpu"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "trajectory_noises" in line and not (tmp_path / "out").exists()


SAM_SSL_TINY = {"name": "tiny-sam-ssl", "input_size": 32,
                "network": {"widths": [8, 8, 8, 8, 8], "depths": [1, 1, 1, 1, 1],
                            "expand_ratio": 2, "decoder_widths": [8, 8]},
                "batch_size": 2, "unlabelled_batch_size": 2, "max_steps": 4, "val_every": 2,
                "checkpoint_every": 2, "label_fraction": 0.08, "warmup_steps": 1}


@pytest.mark.parametrize("where", ["teacher_file", "resume_checkpoint"])
def test_sam_distill_refuses_a_hostile_checkpoint(where: str, ph2_subset: Path, tmp_path: Path,
                                                  capsys) -> None:
    """``distill --method sam-ssl``: a hostile ``--teacher x.pth`` or a planted
    ``checkpoint.pt`` under ``--resume`` is refused in one line, its code never runs."""
    marker = tmp_path / "pwned"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SAM_SSL_TINY))
    out = tmp_path / "out"
    teacher, extra = "lesion-sam-tiny", []
    if where == "teacher_file":
        teacher = str(bad_files.hostile_checkpoint(tmp_path / "sam_vit_b.pth", marker))
    else:
        out.mkdir()
        bad_files.hostile_checkpoint(out / "checkpoint.pt", marker)
        extra = ["--resume"]
    code, _, err = _run(["distill", "--method", "sam-ssl", "--teacher", teacher,
                         "--student-config", str(tmp_path / "s.yaml"), "--data", str(ph2_subset),
                         "--out", str(out), "--device", "cpu", "--threads", "1", *extra], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "refused" in line and ("sam_vit_b.pth" in line or "checkpoint.pt" in line)
    assert not marker.exists()


# ------------------------------------------------------------------- evaluate (exit 1)


@pytest.mark.parametrize("fault", ["wrong_size_mask", "truncated_mask", "zero_byte_mask",
                                   "mask_bomb"])
def test_evaluate_names_a_bad_mask_and_scores_the_rest(fault: str, ct_pairs, tmp_path: Path,
                                                       capsys) -> None:
    from PIL import Image

    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for _, mask in ct_pairs[:3]:
        shutil.copy(mask, gt / mask.name)
        shutil.copy(mask, pred / mask.name)
    victim = pred / ct_pairs[0][1].name
    if fault == "wrong_size_mask":
        Image.open(victim).resize((100, 80)).save(victim)
    elif fault == "truncated_mask":
        _truncated(ct_pairs[0][1], victim)
    elif fault == "mask_bomb":  # declares 12000 x 12000: refused before decoding
        bad_files.png_bomb(victim)
    else:
        victim.write_bytes(b"")
    code, stdout, err = _run(["evaluate", "--pred", str(pred), "--gt", str(gt)], capsys)
    assert code == 1 and "Traceback" not in err
    failed = [line for line in err.splitlines() if "failed" in line]
    assert len(failed) == 1 and victim.stem in failed[0]
    if fault == "mask_bomb":
        assert "megapixels" in failed[0]
    (summary,) = _strict_json_lines(stdout)
    assert summary["n_images"] == 2 and summary["n_failed"] == 1
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(1.0)


#: Distinct bad inputs this module tries (parametrised cases + single tests).
BAD_INPUTS = (len(PER_IMAGE_FAULTS)  # corrupt / bomb / all-NaN / volume images: 13
              + 2  # pixel-limit settings
              + 3 + 1  # NaN/Inf pixels in TIFF, NaN in NIfTI
              + 4  # clashing output names
              + len(BUNDLE_FAULTS)  # 21 broken bundles
              + 5  # absurd predict arguments, unknown model
              + 3  # broken bundles in the models listing
              + 5 + 1 + 1  # bad resume checkpoints, hostile distill cache and checkpoint
              + 2  # hostile SAM teacher file and sam-ssl resume checkpoint
              + 6 + 1  # absurd train and distill recipes
              + 1  # a pixel bomb in a training folder
              + 4)  # bad masks in evaluate


def test_the_count_of_bad_inputs_is_what_the_report_says() -> None:
    assert BAD_INPUTS == 73
