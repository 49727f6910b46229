"""``lesion-diffkd distill --method ts-kd`` end to end on 12 real PH2 pairs with the registered
``lesion-sam-tiny`` teacher and a micro student; bad input exits 2 with a message."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_lesion_diffkd.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO = {
    "method": "ts-kd", "name": "cli-micro", "modality": "dermoscopy",
    "student": {"preset": "vit-mini", "embed_dim": 24, "depth": 2, "num_heads": 2,
                "fpn_dim": 8},
    "teacher_steps": 2, "teacher_minutes": None, "teacher_batch_size": 4,
    "generated_images": 2,
    "generator": {"steps": 2, "resolution": 16, "sample_steps": 2, "base_channels": 8,
                  "channel_mults": [1, 2], "batch_size": 4},
    "kd_steps": 3, "kd_minutes": None, "finetune_steps": 3, "finetune_minutes": None,
    "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "amp_bf16": False,
}


def _config(tmp: Path, **over) -> Path:
    path = tmp / "micro.yaml"
    path.write_text(yaml.safe_dump({**MICRO, **over}))
    return path


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, ph2_subset: Path) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("tskd_cli")
    out = tmp / "run"
    code, stdout, stderr = _run(
        ["distill", "--method", "ts-kd", "--teacher", "lesion-sam-tiny", "--student-config",
         str(_config(tmp)), "--data", str(ph2_subset), "--out", str(out), "--device", "cpu",
         "--threads", "1", "--tskd-lora-rank", "2"])
    assert code == 0, stderr
    return out, json.loads(stdout.strip().splitlines()[-1])


def test_cli_distils_lesion_sam_tiny_into_a_loadable_student(cli_run, ph2_pairs) -> None:
    from PIL import Image

    from napari_lesion_diffkd.core.distillation.ts_kd.bundle import (
        load_student_bundle,
        predict,
    )

    out, summary = cli_run
    assert summary["student"]["n_val"] == 3
    assert summary["teacher"]["base"] == "lesion-sam-tiny"
    assert summary["teacher"]["num_parameters_base"] == 2_920_192
    assert summary["generated"]["count"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["provenance"]["train_config"]["teacher_lora_rank"] == 2
    assert config["provenance"]["transfer_set"] == {"real": 9, "unlabeled": 0, "generated": 2}
    teacher_cfg = json.loads((out / "teacher" / "config.json").read_text())
    assert teacher_cfg["lora"] == {"rank": 2, "alpha": 2.0}
    assert teacher_cfg["automatic_prompt"] == summary["teacher"]["prompt"]
    student = load_student_bundle(out)
    image = np.asarray(Image.open(ph2_pairs[3][0]).convert("RGB"))
    assert predict(student, image).mask.shape == image.shape[:2]


def test_cli_resume_of_a_finished_run_keeps_the_result(cli_run, ph2_subset: Path,
                                                        tmp_path: Path) -> None:
    out, summary = cli_run
    code, stdout, _ = _run(
        ["distill", "--method", "ts-kd", "--teacher", "lesion-sam-tiny", "--student-config",
         str(_config(tmp_path)), "--data", str(ph2_subset), "--out", str(out), "--device",
         "cpu", "--tskd-lora-rank", "2", "--resume"])
    assert code == 0
    again = json.loads(stdout.strip().splitlines()[-1])
    assert again["student"]["val_dice"] == pytest.approx(summary["student"]["val_dice"])


@pytest.mark.parametrize("case", ["unknown teacher", "bad config key", "no data",
                                  "resume without checkpoint"])
def test_bad_input_exits_2_with_a_message(case: str, tmp_path: Path, ph2_subset: Path) -> None:
    teacher, data, extra = "lesion-sam-tiny", str(ph2_subset), []
    config = _config(tmp_path)
    if case == "unknown teacher":
        teacher = "no-such-sam"
    elif case == "bad config key":
        config = _config(tmp_path, kd_stepz=3)
    elif case == "no data":
        data = str(tmp_path / "missing")
    else:
        extra = ["--resume"]
    code, stdout, stderr = _run(
        ["distill", "--method", "ts-kd", "--teacher", teacher, "--student-config", str(config),
         "--data", data, "--out", str(tmp_path / "run"), "--device", "cpu", *extra])
    assert code == 2
    assert stderr.strip().startswith("error:") or "\nerror:" in stderr
    assert "Traceback" not in stderr
    if case == "unknown teacher":
        assert "no-such-sam" in stderr
