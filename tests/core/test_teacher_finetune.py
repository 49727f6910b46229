"""Bundles are self-contained (issue 14, item 4): every registered teacher fine-tunes from
the committed models on a fresh clone (no ``runs/`` folder), and a bundle refers to the
bundles it needs by registered name and weights sha256, never by a local path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_lesion_diffkd.core.bundle import BundleError, read_config
from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.registry import list_models, load_model, resolve_model
from napari_lesion_diffkd.core.training.config import TrainConfig
from napari_lesion_diffkd.core.training.trainer import _build, train

ROOT = Path(__file__).resolve().parents[2]
DATASET = {"dermoscopy": "ph2_dermoscopy", "ultrasound": "busbra_breast_ultrasound",
           "ct": "covid19_ct_infection"}


@pytest.fixture(autouse=True)
def _committed_models_only(monkeypatch, tmp_path):
    """The committed models/ only, one thread, and a working directory without runs/."""
    monkeypatch.setenv("NAPARI_LESION_DIFFKD_MODELS", "")
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "no-cache"))
    monkeypatch.chdir(tmp_path)  # a fresh clone: no runs/ folder of the trainer's machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _teachers() -> list[str]:
    return [r["name"] for r in list_models() if r["role"] == "teacher"]


def _tiny_data(data_root: Path, modality: str, out: Path, n: int = 4) -> Path:
    """n image/mask pairs of the teacher's dataset (links), each its own group."""
    src = data_root / DATASET[modality]
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True)
    for image in sorted((src / "images").iterdir())[:n]:
        mask = src / "masks" / f"{image.stem}.png"
        (out / "images" / image.name).symlink_to(image)
        (out / "masks" / mask.name).symlink_to(mask)
    return out


def test_every_registered_teacher_is_found() -> None:
    assert {"ct-teacher", "ultrasound-teacher", "dermoscopy-teacher"} <= set(_teachers())


def test_no_committed_bundle_names_a_local_runs_folder() -> None:
    from napari_lesion_diffkd.core.registry import weights_sha256

    for row in list_models():
        tc = (read_config(row["path"]).get("provenance") or {}).get("train_config") or {}
        for key in ("condition_bundle", "init_bundle", "teacher", "leaf_encoder"):
            value = tc.get(key)
            assert not (isinstance(value, str) and ("/" in value or value.startswith("runs"))), \
                f"{row['name']}: {key} = {value!r}"
            if isinstance(value, dict):  # a reference: a registered bundle with these weights
                assert weights_sha256(resolve_model(value["name"])) == value["sha256"]


@pytest.mark.parametrize("teacher", ["dermoscopy-teacher", "ultrasound-teacher", "ct-teacher"])
def test_fine_tune_each_registered_teacher_for_two_steps(teacher, data_root, tmp_path) -> None:
    assert teacher in _teachers()
    cfg = read_config(resolve_model(teacher))
    fields = dict(cfg["provenance"]["train_config"])  # what the Jobs form's fine-tune uses
    fields.update(max_steps=2, batch_size=2, warmup_steps=1, val_every=2, val_samples=1,
                  val_steps=1, checkpoint_every=100, max_minutes=None, val_fraction=0.25,
                  init_bundle=teacher, name=f"{teacher}-ft")
    config = TrainConfig.from_dict(fields)
    data = _tiny_data(data_root, cfg["modality"], tmp_path / "data")
    summary = run_to_completion(train(config, scan_pairs(data), tmp_path / "run"))
    assert summary["steps"] == 2
    tuned = load_model(tmp_path / "run")
    assert tuned.config["provenance"]["train_config"]["init_bundle"] == teacher
    ref = tuned.config["provenance"]["train_config"].get("condition_bundle")
    assert ref is None or isinstance(ref, dict)  # never a local path
    text = json.dumps(tuned.config["provenance"]["train_config"])
    assert "runs/" not in text


def test_condition_reference_loads_the_registered_unet_and_checks_its_sha(tmp_path) -> None:
    """Training a teacher from scratch resolves {name, sha256} to the registered SegUNet;
    a sha that does not match is refused (another version of the bundle)."""
    fields = dict(read_config(resolve_model("ct-teacher"))["provenance"]["train_config"])
    assert fields["condition_bundle"]["name"] == "ct-unet"
    config = TrainConfig.from_dict(fields)
    network = _build(config, torch.device("cpu"))
    unet = load_model("ct-unet").network.state_dict()
    for key, value in network.condition.state_dict().items():
        torch.testing.assert_close(value, unet[key])
    assert network.condition_frozen
    bad = TrainConfig.from_dict({**fields, "condition_bundle": {"name": "ct-unet",
                                                                 "sha256": "0" * 64}})
    with pytest.raises(BundleError, match="sha256"):
        _build(bad, torch.device("cpu"))
