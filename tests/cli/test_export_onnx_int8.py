"""``lesion-diffkd export-onnx --precision``: the int8 pair of a SAM next to the float32 one
(``core/onnx/sam_quant.py``), the float32 parity check still on the float32 pair, and one
clear error (exit 2) for a non-SAM model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_lesion_diffkd.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "cache"))


def test_sam_int8_export_with_check(tmp_path: Path, capsys) -> None:
    out = tmp_path / "export" / "sam.onnx"
    assert main(["export-onnx", "--model", "lesion-sam-tiny", "--out", str(out),
                 "--precision", "int8", "--check"]) == 0
    (line,) = [json.loads(t) for t in capsys.readouterr().out.splitlines() if t.startswith("{")]
    names = [Path(f).name for f in line["files"]]
    assert names == ["sam.encoder.onnx", "sam.decoder.onnx", "sam.encoder.int8.onnx",
                     "sam.decoder.int8.onnx"]
    assert line["kind"] == ["sam-encoder", "sam-decoder", "sam-encoder", "sam-decoder"]
    assert line["bytes"][2] < line["bytes"][0]  # int8 weights
    assert line["max_abs_diff"] < 1e-3  # the float32 pair against torch


def test_precision_on_a_non_sam_exits_2(tmp_path: Path, capsys) -> None:
    code = main(["export-onnx", "--model", "dermoscopy-student", "--out",
                 str(tmp_path / "s.onnx"), "--precision", "int8"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "applies to SAMs only" in err
    assert not (tmp_path / "s.onnx").exists()
