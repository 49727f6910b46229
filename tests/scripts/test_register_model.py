"""scripts/register_model.py: a trained run becomes a registered bundle with a model card."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from napari_lesion_diffkd.core.evaluation import gflops_per_image
from napari_lesion_diffkd.core.registry import load_model

SCRIPT = Path(__file__).parents[2] / "scripts" / "register_model.py"


@pytest.fixture(scope="module")
def register():
    spec = importlib.util.spec_from_file_location("register_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_registered_card_has_metrics_compute_and_provenance(register, tiny_bundle: Path,
                                                             tmp_path: Path, capsys) -> None:
    assert register([str(tiny_bundle), "--models-dir", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    dest = Path(summary["dest"])
    config = json.loads((dest / "config.json").read_text())
    metrics = config["metrics"]
    assert 0.0 <= metrics["dice"] <= 1.0 and metrics["n_val"] == summary["n_val"] > 0
    # The stored compute equals a fresh count for the same K (a sampler with K samples).
    k = metrics["eval_num_samples"]
    assert metrics["gflops_per_image"] == pytest.approx(
        gflops_per_image(load_model(tiny_bundle), k), rel=1e-6)
    assert metrics["gflops_per_image"] > 0
    card = (dest / "README.md").read_text()
    assert f"{metrics['gflops_per_image']:.2f} GFLOPs at {k} sample(s)" in card
    assert "## Validation metrics" in card and "| all validation |" in card
    assert "\n\n|" not in card.split("## Data")[0].split("| | |")[1]  # table unbroken
