"""``lesion-diffkd distill --method sam-ssl`` end to end on 12 real PH2 pairs, in seconds:
the SSL student and its supervised-only baseline from one config, and clear exit-2 errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from napari_lesion_diffkd.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"name": "tiny-sam-ssl", "input_size": 32,
        "network": {"widths": [8, 8, 8, 8, 8], "depths": [1, 1, 1, 1, 1], "expand_ratio": 2,
                    "decoder_widths": [8, 8]},
        "batch_size": 2, "unlabelled_batch_size": 2, "max_steps": 4, "val_every": 2,
        "checkpoint_every": 2, "label_fraction": 0.08, "warmup_steps": 1}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-sam-ssl.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _distill(config: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["distill", "--method", "sam-ssl", "--teacher", "lesion-sam-tiny",
                 "--student-config", str(config), "--data", str(data), "--out", str(out),
                 "--device", "cpu", "--threads", "1", *extra])


def test_ssl_and_supervised_only_from_one_config(tmp_path: Path, config_file: Path,
                                                 ph2_subset: Path, capsys) -> None:
    assert _distill(config_file, ph2_subset, tmp_path / "ssl") == 0
    ssl = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert _distill(config_file, ph2_subset, tmp_path / "sup", "--ssl-supervised-only") == 0
    sup = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not ssl["supervised_only"] and sup["supervised_only"]
    assert ssl["steps"] == sup["steps"] == 4 and ssl["n_labelled"] == sup["n_labelled"] == 1
    assert ssl["n_unlabelled"] == 8 and ssl["pseudo"]["n"] == 8
    for name in ("ssl", "sup"):
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        assert cfg["kind"] == "sam-ssl-student"
        assert (tmp_path / name / "model.safetensors").is_file()
        assert cfg["provenance"]["method"] == "sam-ssl"
        assert 0.0 <= cfg["metrics"]["dice"] <= 1.0
    prov = json.loads((tmp_path / "ssl" / "config.json").read_text())["provenance"]
    assert prov["teacher"]["name"] == "lesion-sam-tiny"
    # --ssl-label-fraction overrides the config; --resume of a finished run adds no steps.
    assert _distill(config_file, ph2_subset, tmp_path / "ssl", "--resume") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 4
    assert _distill(config_file, ph2_subset, tmp_path / "half", "--ssl-label-fraction", "0.5",
                    "--ssl-max-steps", "2") == 0
    half = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert half["n_labelled"] == 4 and half["steps"] == 2


@pytest.mark.parametrize("case", ["teacher", "config", "fraction", "resume", "data"])
def test_bad_arguments_exit_2_with_a_message(tmp_path: Path, config_file: Path,
                                             ph2_subset: Path, capsys, case: str) -> None:
    args = {"config": config_file, "data": ph2_subset, "out": tmp_path / "o"}
    extra: list[str] = []
    if case == "teacher":
        code = main(["distill", "--method", "sam-ssl", "--teacher", "no-such-sam",
                     "--student-config", str(config_file), "--data", str(ph2_subset),
                     "--out", str(tmp_path / "o"), "--device", "cpu"])
        assert code == 2
        assert "no-such-sam" in capsys.readouterr().err
        return
    if case == "config":
        bad = tmp_path / "bad.yaml"
        bad.write_text("lables: 0.1\n")
        args["config"] = bad
    elif case == "fraction":
        extra = ["--ssl-label-fraction", "1.5"]
    elif case == "resume":
        extra = ["--resume"]
    elif case == "data":
        args["data"] = tmp_path / "missing"
    code = _distill(args["config"], args["data"], args["out"], *extra)
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "Traceback" not in err
