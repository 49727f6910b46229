"""``lesion-diffkd evaluate`` on real PH2 masks with perturbed copies as predictions."""

from __future__ import annotations

import csv
import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core.metrics import METRIC_NAMES, all_metrics


def _write(path, mask: np.ndarray) -> None:
    iio.imwrite(path, (mask.astype(np.uint8) * 255))


@pytest.fixture()
def folders(tmp_path, ph2_pairs):
    """GT: 3 real PH2 masks (+1 without prediction); PRED: perturbed copies + distractors."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    preds: dict[str, np.ndarray] = {}
    gts: dict[str, np.ndarray] = {}
    for j, (_, mask_path) in enumerate(ph2_pairs[:4]):
        shutil.copy(mask_path, gt_dir / mask_path.name)
        gt = iio.imread(mask_path) > 127
        gts[mask_path.stem] = gt
        if j == 3:
            continue  # a GT mask nobody predicted: n_missing
        if j % 2:
            pred = ndi.binary_dilation(gt, iterations=2 + j)
        else:
            pred = ndi.binary_erosion(gt, iterations=3)
        pred = np.roll(pred, (j, -2), axis=(0, 1))
        preds[mask_path.stem] = pred
        _write(pred_dir / f"{mask_path.stem}.png", pred)
        # outputs of `predict` that are not masks
        _write(pred_dir / f"{mask_path.stem}_uncertainty.png", ~pred)
        (pred_dir / f"{mask_path.stem}_samples.tif").write_bytes(b"not a mask")
    _write(pred_dir / "unrelated.png", np.zeros((5, 5), bool))  # prediction without GT
    return gt_dir, pred_dir, gts, preds


def _json_line(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, out
    return json.loads(lines[0])


def test_evaluate_writes_csv_and_summary(folders, capsys):
    gt_dir, pred_dir, gts, preds = folders
    rc = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--spacing", "0.7,0.5"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    with open(pred_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == sorted(preds)
    assert list(rows[0]) == ["id", *METRIC_NAMES]
    for row in rows:
        expected = all_metrics(preds[row["id"]], gts[row["id"]], spacing=(0.7, 0.5))
        for k in METRIC_NAMES:
            assert float(row[k]) == pytest.approx(expected[k], rel=1e-12, abs=1e-12), k
    summary = _json_line(captured.out)
    assert summary["n_images"] == 3
    assert summary["n_missing"] == 1 and summary["n_extra"] == 1 and summary["n_failed"] == 0
    dices = [float(r["dice"]) for r in rows]
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(np.mean(dices))
    assert summary["metrics"]["dice"]["median"] == pytest.approx(np.median(dices))
    hd = [float(r["hd95"]) for r in rows]
    assert summary["metrics"]["hd95"]["mean"] == pytest.approx(np.mean(hd))
    assert summary["metrics"]["hd95"]["n_inf"] == 0


def test_evaluate_reports_shape_mismatch_and_empty_prediction(folders, tmp_path, capsys):
    gt_dir, pred_dir, gts, _ = folders
    stems = sorted(gts)
    _write(pred_dir / f"{stems[0]}.png", np.ones((50, 60), bool))  # wrong size
    _write(pred_dir / f"{stems[1]}.png", np.zeros(gts[stems[1]].shape, bool))  # empty
    csv_path = tmp_path / "out" / "scores.csv"
    rc = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--csv", str(csv_path)])
    captured = capsys.readouterr()
    assert rc == 1
    assert stems[0] in captured.err and "shape mismatch" in captured.err
    summary = _json_line(captured.out)
    assert summary["n_failed"] == 1 and summary["n_images"] == 2
    assert summary["metrics"]["hd95"]["n_inf"] == 1  # the empty prediction
    with open(csv_path, newline="") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert float(rows[stems[1]]["dice"]) == 0.0 and float(rows[stems[1]]["hd95"]) == float("inf")


def test_evaluate_fails_when_nothing_matches(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    _write(tmp_path / "p" / "a.png", np.ones((4, 4), bool))
    _write(tmp_path / "g" / "b.png", np.ones((4, 4), bool))
    rc = main(["evaluate", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g")])
    captured = capsys.readouterr()
    assert rc == 1
    summary = _json_line(captured.out)
    assert summary["n_images"] == 0 and summary["n_missing"] == 1
    assert summary["metrics"]["dice"]["mean"] is None
