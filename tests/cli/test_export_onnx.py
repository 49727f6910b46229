"""``lesion-diffkd export-onnx`` and ``predict --backend onnxruntime`` on the shipped models
and real images: files, metadata, parity, identical outputs, and clear errors (exit 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.io import imread

from napari_lesion_diffkd.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "cache"))


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_export_student_with_check(tmp_path: Path, capsys) -> None:
    from napari_lesion_diffkd.core.onnx.export import read_metadata

    out = tmp_path / "export" / "student.onnx"
    assert main(["export-onnx", "--model", "dermoscopy-student", "--out", str(out),
                 "--check"]) == 0
    (line,) = _json_lines(capsys.readouterr().out)
    assert line["files"] == [str(out)] and line["kind"] == ["denoiser"]
    assert line["max_abs_diff"] < 1e-4
    meta = read_metadata(out)
    assert meta["name"] == "dermoscopy-student" and meta["sampler"]["name"] == "one-step"
    assert len(meta["weights_sha256"]) == 64


def test_export_sam_writes_encoder_and_decoder(tmp_path: Path, capsys) -> None:
    assert main(["export-onnx", "--model", "lesion-sam-tiny", "--out",
                 str(tmp_path / "sam.onnx"), "--check"]) == 0
    (line,) = _json_lines(capsys.readouterr().out)
    assert line["files"] == [str(tmp_path / "sam.encoder.onnx"),
                             str(tmp_path / "sam.decoder.onnx")]
    assert line["kind"] == ["sam-encoder", "sam-decoder"] and line["max_abs_diff"] < 1e-3
    assert all(Path(f).stat().st_size > 100_000 for f in line["files"])


@pytest.mark.parametrize("argv,message", [
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--model", "sam_vit_h"], "is not in the cache"),
])
def test_bad_model_exits_2_with_a_message(tmp_path: Path, capsys, argv, message) -> None:
    assert main(["export-onnx", *argv, "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_unwritable_output_exits_2(tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [(blocker / "sub" / "m.onnx", "cannot create the folder"),
             (tmp_path, "is a folder")]
    if os.geteuid() != 0:  # root writes anywhere: the permission case needs a normal user
        locked.chmod(0o500)
        cases.append((locked / "m.onnx", "not writable"))
    for out, message in cases:
        assert main(["export-onnx", "--model", "dermoscopy-student", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    locked.chmod(0o700)


def test_predict_backend_onnxruntime_writes_the_same_outputs(busbra_pairs, tmp_path: Path,
                                                             capsys) -> None:
    image = str(busbra_pairs[0][0])
    outs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        assert main(["predict", "--model", "ultrasound-student", "--input", image, "--output",
                     str(out), "--samples", "4", "--seed", "1", "--backend", backend]) == 0
        (line,) = _json_lines(capsys.readouterr().out)
        assert line["backend"] == backend
        outs[backend] = out
    stem = Path(image).stem
    a, b = (imread(outs[k] / f"{stem}.png") for k in ("torch", "onnxruntime"))
    assert a.shape == imread(image).shape[:2] and a.any()
    np.testing.assert_array_equal(a, b)
    sa, sb = (tifffile.imread(outs[k] / f"{stem}_samples.tif") for k in ("torch", "onnxruntime"))
    np.testing.assert_array_equal(sa, sb)
    assert list((tmp_path / "cache" / "onnx").glob("ultrasound-student-*.onnx"))


def test_predict_backend_onnxruntime_bad_model_exits_2(tmp_path: Path, busbra_pairs,
                                                       capsys) -> None:
    code = main(["predict", "--model", "nope", "--input", str(busbra_pairs[0][0]),
                 "--output", str(tmp_path / "o"), "--backend", "onnxruntime"])
    assert code == 2 and "unknown model 'nope'" in capsys.readouterr().err
