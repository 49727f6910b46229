"""lesion-diffkd sam-average: the weighted mean of SAM bundles from one lineage."""

from __future__ import annotations

import json

import pytest
import torch

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core.sam.architectures import TINY_ARCH, TinySamConfig, build_tiny_sam
from napari_lesion_diffkd.core.sam.loading import load_sam
from napari_lesion_diffkd.core.sam.sam_bundle import load_sam_bundle, save_sam_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bundle(folder, seed: int, val_ids):
    torch.manual_seed(seed)
    sam = build_tiny_sam()
    config = {"name": "tiny-test", "modality": "any",
              "provenance": {"val_ids": val_ids, "command": f"train {seed}", "steps": seed}}
    return save_sam_bundle(folder, sam, config, arch=TINY_ARCH, tiny_config=TinySamConfig())


def test_average_is_the_weighted_mean_and_records_its_inputs(tmp_path, capsys) -> None:
    a = _bundle(tmp_path / "a", 1, ["x", "y"])
    b = _bundle(tmp_path / "b", 2, ["x", "y"])
    out = tmp_path / "soup"
    code = main(["sam-average", str(a), str(b), "--weights", "1", "3", "--out", str(out),
                 "--test-time-flip"])
    assert code == 0 and json.loads(capsys.readouterr().out)["out"] == str(out)
    sa, sb = load_sam_bundle(a).model.state_dict(), load_sam_bundle(b).model.state_dict()
    soup = load_sam(str(out))
    for key, value in soup.model.state_dict().items():
        expected = (0.25 * sa[key] + 0.75 * sb[key]).half().float()
        torch.testing.assert_close(value, expected, atol=1e-3, rtol=0)
    assert soup.config["test_time_flip"] is True
    sources = soup.config["provenance"]["averaged_from"]
    assert [s["weight"] for s in sources] == [0.25, 0.75]
    assert [s["command"] for s in sources] == ["train 1", "train 2"]
    assert soup.config["provenance"]["val_ids"] == ["x", "y"]
    assert soup.config["provenance"]["command"].startswith("lesion-diffkd ")


def test_bundles_from_other_splits_or_too_few_are_refused(tmp_path, capsys) -> None:
    a = _bundle(tmp_path / "a", 1, ["x", "y"])
    b = _bundle(tmp_path / "b", 2, ["x", "z"])
    assert main(["sam-average", str(a), str(b), "--out", str(tmp_path / "o")]) == 2
    assert "different validation split" in capsys.readouterr().err
    assert main(["sam-average", str(a), "--out", str(tmp_path / "o")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["sam-average", str(a), str(tmp_path / "missing"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["sam-average", str(a), str(a), "--weights", "1", "--out",
                 str(tmp_path / "o")]) == 2
    assert "weights" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
