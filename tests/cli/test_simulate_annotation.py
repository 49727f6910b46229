"""``lesion-diffkd simulate-annotation`` on real PH2 pairs: a folder given on the command
line, the files it writes, and bad input (one ``error:`` line, exit 2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from napari_lesion_diffkd.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def three_pairs(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A folder of its own (not a shipped split) with the first 3 PH2 pairs."""
    src = data_root / "ph2_dermoscopy"
    dst = tmp_path_factory.mktemp("my_derm_folder")
    (dst / "images").mkdir()
    (dst / "masks").mkdir()
    for image in sorted((src / "images").iterdir())[:3]:
        (dst / "images" / image.name).symlink_to(image)
        (dst / "masks" / f"{image.stem}.png").symlink_to(src / "masks" / f"{image.stem}.png")
    return dst


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_a_folder_from_the_command_line(three_pairs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sim"
    code = main(["simulate-annotation", "--data", str(three_pairs), "--split", "all",
                 "--workflows", "sam-first,model-first,uncertainty-guided",
                 "--target", "0.85,0.90", "--max-prompts", "3", "--sam", "lesion-sam-tiny",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["sam-first", "model-first", "uncertainty-guided"]
    for s in summary.values():
        assert {"noc@85", "noc@90", "failed@90", "no_prompt", "images"} <= set(s)
        assert s["images"] == 3 and 0 <= s["noc@85"] <= s["noc@90"] <= 3
        assert 0 <= s["failed@90"] <= 1 and 0 <= s["no_prompt"] <= 1
    assert summary["sam-first"]["noc@85"] >= 1  # the box is a prompt
    with (out / "images.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9
    assert {r["id"] for r in rows} == {p.stem for p in (three_pairs / "images").iterdir()}
    assert {"dataset", "workflow", "noc@85", "noc@90", "prompts", "seconds",
            "dice_trace"} <= set(rows[0])
    triage = json.loads((out / "triage.json").read_text())
    assert triage[three_pairs.name]["images"] == 3
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["sam"] == "lesion-sam-tiny"


def _bad(args: list[str], capsys) -> str:
    code = main(["simulate-annotation", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(_error_lines(err)) == 1, err
    assert "Traceback" not in err
    return _error_lines(err)[0]


def test_a_missing_folder(tmp_path: Path, capsys) -> None:
    line = _bad(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert "nope" in line


def test_an_unknown_workflow(three_pairs: Path, tmp_path: Path, capsys) -> None:
    line = _bad(["--data", str(three_pairs), "--workflows", "sam-first,paint-by-hand",
                 "--out", str(tmp_path / "o")], capsys)
    assert "paint-by-hand" in line


def test_a_mask_of_another_size(three_pairs: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    bad = tmp_path / "bad_derm"
    (bad / "images").mkdir(parents=True)
    (bad / "masks").mkdir()
    image = sorted((three_pairs / "images").iterdir())[0]
    (bad / "images" / image.name).symlink_to(image.resolve())
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(bad / "masks" / f"{image.stem}.png")
    line = _bad(["--data", str(bad), "--split", "all", "--out", str(tmp_path / "o")], capsys)
    assert "differs" in line and image.stem in line


def test_a_bad_target(three_pairs: Path, tmp_path: Path, capsys) -> None:
    line = _bad(["--data", str(three_pairs), "--target", "0.9,abc",
                 "--out", str(tmp_path / "o")], capsys)
    assert "--target" in line
