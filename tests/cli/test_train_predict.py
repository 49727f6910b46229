"""The train -> predict path through the CLI, and the ``predict`` output contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.io import imread

from napari_lesion_diffkd.cli import main


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_train_writes_a_loadable_bundle_with_provenance(tiny_bundle: Path) -> None:
    from napari_lesion_diffkd.core.registry import load_model

    config = json.loads((tiny_bundle / "config.json").read_text())
    assert config["name"] == "tiny-dermoscopy"
    assert config["provenance"]["steps"] == 12
    assert config["provenance"]["split"]["n_val"] >= 2  # group-aware 20% of 12 images
    assert 0.0 <= config["metrics"]["model_resolution_dice"] <= 1.0
    bundle = load_model(tiny_bundle)
    assert bundle.num_parameters == config["num_parameters"]
    assert (tiny_bundle / "train_log.jsonl").read_text().count("val_dice") >= 2


def test_predict_contract_on_a_real_image(tiny_bundle: Path, ph2_pairs, tmp_path: Path,
                                          capsys) -> None:
    image_path = ph2_pairs[0][0]
    out = tmp_path / "out"
    code = main(["predict", "--model", str(tiny_bundle), "--input", str(image_path),
                 "--output", str(out), "--samples", "4", "--seed", "3"])
    assert code == 0
    lines = _json_lines(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0]["input"] == str(image_path)
    assert lines[0]["samples"] == 4 and lines[0]["seconds"] > 0
    h, w = imread(image_path).shape[:2]
    consensus = imread(out / f"{image_path.stem}.png")
    uncertainty = imread(out / f"{image_path.stem}_uncertainty.png")
    samples = tifffile.imread(out / f"{image_path.stem}_samples.tif")
    assert consensus.shape == (h, w) and consensus.dtype == np.uint8
    assert set(np.unique(consensus)) <= {0, 255}
    assert uncertainty.shape == (h, w) and uncertainty.dtype == np.uint8
    assert samples.shape == (4, h, w) and samples.dtype == np.uint8
    assert set(np.unique(samples)) <= {0, 255}
    # Pixels where the samples split are more uncertain than pixels where they all agree
    # (the map is the entropy of the mean soft probability, so agreement is not exactly 0).
    agree = (samples == 0).all(0) | (samples == 255).all(0)
    assert (~agree).any() and agree.any()
    assert uncertainty[~agree].astype(float).mean() > uncertainty[agree].astype(float).mean()


def test_predict_is_reproducible_with_a_seed(tiny_bundle: Path, ph2_pairs, tmp_path: Path
                                             ) -> None:
    image_path = str(ph2_pairs[1][0])
    stem = ph2_pairs[1][0].stem
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert main(["predict", "--model", str(tiny_bundle), "--input", image_path,
                     "--output", str(tmp_path / name), "--samples", "3",
                     "--seed", str(seed)]) == 0
    a, b, c = (tifffile.imread(tmp_path / n / f"{stem}_samples.tif") for n in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_predict_folder_skips_bad_inputs_and_fails_the_exit_code(
    tiny_bundle: Path, ph2_pairs, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for image, _ in ph2_pairs[:2]:
        (folder / image.name).write_bytes(image.read_bytes())
    good = ph2_pairs[2][0].read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 3])
    code = main(["predict", "--model", str(tiny_bundle), "--input", str(folder),
                 "--output", str(tmp_path / "out"), "--samples", "1"])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.jpg" in captured.err
    lines = _json_lines(captured.out)
    assert sorted(Path(line["input"]).name for line in lines) == sorted(
        p.name for p, _ in ph2_pairs[:2]
    )
    # K = 1: consensus and uncertainty only.
    stem = ph2_pairs[0][0].stem
    assert (tmp_path / "out" / f"{stem}.png").is_file()
    assert not (tmp_path / "out" / f"{stem}_samples.tif").exists()
    assert not (tmp_path / "out" / "broken.png").exists()


def test_predict_unknown_model_is_a_clear_error(tmp_path: Path, ph2_pairs, capsys) -> None:
    code = main(["predict", "--model", "no-such-model", "--input", str(ph2_pairs[0][0]),
                 "--output", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "dermoscopy-teacher" in err


def test_models_lists_registered_bundles(tiny_bundle: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("NAPARI_LESION_DIFFKD_MODELS", str(tiny_bundle.parent))
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in _json_lines(capsys.readouterr().out)}
    assert rows["tiny-dermoscopy"]["params"] > 0
    assert rows["tiny-dermoscopy"]["input_size"] == 32
    assert rows["dermoscopy-teacher"]["modality"] == "dermoscopy"
    assert rows["dermoscopy-teacher"]["val_dice"] > 0.8
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "modality", "role", "params", "input_size", "val_dice"]


@pytest.mark.slow
def test_predict_with_the_default_teacher(ph2_pairs, tmp_path: Path, capsys) -> None:
    """The issue's acceptance command, with the shipped dermoscopy-teacher."""
    image_path, mask_path = ph2_pairs[3]
    code = main(["predict", "--model", "dermoscopy-teacher", "--input", str(image_path),
                 "--output", str(tmp_path), "--samples", "4"])
    assert code == 0
    consensus = imread(tmp_path / f"{image_path.stem}.png") > 0
    gt = imread(mask_path) > 0
    dice = 2 * (consensus & gt).sum() / (consensus.sum() + gt.sum())
    assert dice > 0.8, dice
    assert tifffile.imread(tmp_path / f"{image_path.stem}_samples.tif").shape[0] == 4
