"""``torchrun --nproc_per_node 2 ... lesion-diffkd train``: DDP with gloo on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import napari_lesion_diffkd


@pytest.mark.slow
def test_two_cpu_processes_train_and_agree(ph2_subset: Path, tmp_path: Path) -> None:
    config = Path(__file__).parents[1] / "fixtures" / "tiny_train.yaml"
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "napari_lesion_diffkd.cli", "train", "--config", str(config), "--data",
         str(ph2_subset), "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
        cwd=Path(napari_lesion_diffkd.__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(s["rank"] for s in summaries) == [0, 1]
    assert all(s["world_size"] == 2 and s["ranks_agree"] for s in summaries)
    assert all(s["steps"] == 12 for s in summaries)
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["provenance"]["world_size"] == 2
    assert (out / "train_curves.png").stat().st_size > 1000
