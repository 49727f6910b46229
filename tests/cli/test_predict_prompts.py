"""``lesion-diffkd predict`` with lesion-sam-tiny and --prompt-box / --prompt-point on real PH2
images of SAM's validation split, and the exit-2 cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core.metrics import dice
from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy
from napari_lesion_diffkd.core.predict_prompts import (
    PromptError,
    binary_entropy_bits,
    check_fits,
    is_sam_model,
    parse_box,
    parse_point,
)
from napari_lesion_diffkd.core.sam.prompts import expand_box

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# PH2 images in lesion-sam-tiny's validation split (models/lesion-sam-tiny/config.json).
VAL_IDS = ("IMD009", "IMD018")


@pytest.fixture(scope="module")
def ph2(data_root: Path) -> dict[str, tuple[Path, np.ndarray]]:
    folder = data_root / "ph2_dermoscopy"
    return {i: (folder / "images" / f"{i}.jpg",
                np.asarray(Image.open(folder / "masks" / f"{i}.png")) > 127) for i in VAL_IDS}


def _box_text(mask: np.ndarray) -> str:
    box = expand_box(mask_to_xyxy(mask), 1.05, mask.shape)  # 5% larger than the lesion
    return ",".join(f"{v:.1f}" for v in box)


def test_box_prompt_gives_the_lesion_and_the_predict_outputs(tmp_path: Path, ph2, capsys) -> None:
    for image_id, (path, gt) in ph2.items():
        code = main(["predict", "--model", "lesion-sam-tiny", "--input", str(path),
                     "--output", str(tmp_path), "--prompt-box", _box_text(gt),
                     "--device", "cpu"])
        assert code == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["model"] == "lesion-sam-tiny" and line["samples"] == 1
        mask = np.asarray(Image.open(tmp_path / f"{image_id}.png"))
        unc = np.asarray(Image.open(tmp_path / f"{image_id}_uncertainty.png"))
        assert mask.shape == unc.shape == gt.shape and mask.dtype == unc.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert dice(mask > 127, gt) > 0.85, image_id
        # Uncertainty (entropy of SAM's logits) is high somewhere (its boundary) and low
        # on most of the image.
        assert unc.max() > 100 and np.median(unc) < 20
        assert not (tmp_path / f"{image_id}_samples.tif").exists()


def test_points_refine_and_frames_are_xy(tmp_path: Path, ph2, capsys) -> None:
    path, gt = ph2["IMD009"]
    ys, xs = np.nonzero(gt)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    assert gt[cy, cx]
    code = main(["predict", "--model", "lesion-sam-tiny", "--input", str(path), "--output",
                 str(tmp_path), "--prompt-box", _box_text(gt), "--prompt-point",
                 f"{cx},{cy},1", "--prompt-point", "5,5,0", "--device", "cpu"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["prompts"]["points"] == [[cx, cy, 1], [5.0, 5.0, 0]]
    mask = np.asarray(Image.open(tmp_path / "IMD009.png")) > 127
    assert mask[cy, cx] and not mask[5, 5] and dice(mask, gt) > 0.85


@pytest.mark.parametrize("extra,needle", [
    (["--prompt-box", "1,2,3"], "x0,y0,x1,y1"),
    (["--prompt-box", "50,50,10,80"], "x0 < x1"),
    (["--prompt-box", "a,b,c,d"], "not all numbers"),
    (["--prompt-box", "10,10,900,100"], "outside the image"),
    (["--prompt-box=-5,10,100,100"], "outside the image"),  # "=": argparse and "-"
    (["--prompt-point", "10,10"], "x,y,label"),
    (["--prompt-point", "10,10,3"], "label must be 1"),
    (["--prompt-point", "10,5000,1"], "outside the image"),
    ([], "is a promptable SAM"),
])
def test_bad_prompts_exit_2(tmp_path: Path, ph2, capsys, extra, needle) -> None:
    path, _ = ph2["IMD009"]
    code = main(["predict", "--model", "lesion-sam-tiny", "--input", str(path), "--output",
                 str(tmp_path), "--device", "cpu", *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "IMD009.png").exists()


def test_prompts_with_a_non_sam_model_exit_2(tmp_path: Path, ph2, capsys) -> None:
    path, _ = ph2["IMD009"]
    code = main(["predict", "--model", "dermoscopy-unet", "--input", str(path), "--output",
                 str(tmp_path), "--prompt-point", "10,10,1", "--device", "cpu"])
    assert code == 2 and "need a SAM model" in capsys.readouterr().err


def test_parsers_and_helpers() -> None:
    np.testing.assert_array_equal(parse_box(" 1, 2,30.5,40 "), [1, 2, 30.5, 40])
    assert parse_point("3.5,4,0") == (3.5, 4.0, 0)
    with pytest.raises(PromptError, match="finite"):
        parse_box("0,0,nan,5")
    check_fits(np.array([0, 0, 512, 384]), [(511.5, 383.0, 1)], (384, 512))  # edges allowed
    with pytest.raises(PromptError):
        check_fits(None, [(512.0, 0.0, 1)], (384, 512))
    assert is_sam_model("lesion-sam-tiny") and is_sam_model("sam_vit_b")
    assert not is_sam_model("dermoscopy-unet") and not is_sam_model("no-such-model")
    ent = binary_entropy_bits(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(ent, [0.0, 1.0, 0.0], atol=1e-6)


def test_a_prompt_without_model_uses_the_default_sam(tmp_path: Path, ph2, capsys,
                                                     monkeypatch) -> None:
    from napari_lesion_diffkd.core.sam.correction_backend import default_sam

    monkeypatch.delenv("LESION_DIFFKD_SAM", raising=False)
    path, gt = ph2["IMD009"]
    code = main(["predict", "--input", str(path), "--output", str(tmp_path),
                 "--prompt-box", _box_text(gt), "--device", "cpu"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # medsam-lite where its wheel is installed (make test installs it), else lesion-sam-tiny
    assert line["model"] == default_sam() == "medsam-lite"
    assert dice(np.asarray(Image.open(tmp_path / "IMD009.png")) > 127, gt) > 0.85


def test_no_model_and_no_prompt_is_one_error_line(tmp_path: Path, ph2, capsys) -> None:
    path, _ = ph2["IMD009"]
    code = main(["predict", "--input", str(path), "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--model is required" in err
