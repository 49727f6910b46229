"""Seed 002's task-specific KD: the ViT + FPN student, the automatic-mode SAM teacher, the
dual-level KD losses, the pipeline's exact resume and the student bundle, on real PH2 pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs
from napari_lesion_diffkd.core.distillation.ts_kd.bundle import (
    load_student_bundle,
    predict,
)
from napari_lesion_diffkd.core.distillation.ts_kd.config import TsKdConfig
from napari_lesion_diffkd.core.distillation.ts_kd.data import load_pair_items, normalise_pad
from napari_lesion_diffkd.core.distillation.ts_kd.losses import (
    hidden_kd_loss,
    logit_kd_loss,
    segmentation_loss,
)
from napari_lesion_diffkd.core.distillation.ts_kd.student import (
    HiddenAdapter,
    StudentConfig,
    ViTFPNStudent,
    count_parameters,
)
from napari_lesion_diffkd.core.distillation.ts_kd.teacher import (
    sam_normalisation,
    teacher_forward,
)
from napari_lesion_diffkd.core.distillation.ts_kd.trainer import (
    CHECKPOINT_NAME,
    LOG_NAME,
    run_ts_kd,
)
from napari_lesion_diffkd.core.jobs import run_to_completion

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A micro SAM (64 px input, 4 x 4 embedding, 16 x 16 low-res logits) as in the SAM tests.
MICRO_SAM = {"img_size": 64, "patch_size": 16, "encoder_embed_dim": 32, "encoder_depth": 1,
             "encoder_num_heads": 2, "encoder_global_attn_indexes": [0], "window_size": 4,
             "prompt_embed_dim": 32, "mask_in_chans": 4, "decoder_mlp_dim": 64,
             "decoder_num_heads": 2, "iou_head_hidden_dim": 32}
MICRO_STUDENT = {"preset": "vit-mini", "img_size": 64, "embed_dim": 24, "depth": 2,
                 "num_heads": 2, "fpn_dim": 8}


def micro_config(**over) -> TsKdConfig:
    base = {"name": "micro-tskd", "student": MICRO_STUDENT, "teacher_steps": 3,
            "teacher_minutes": None, "generated_images": 4,
            "generator": {"steps": 3, "resolution": 16, "sample_steps": 2, "base_channels": 8,
                          "channel_mults": [1, 2], "batch_size": 4},
            "kd_steps": 4, "kd_minutes": None, "finetune_steps": 4, "finetune_minutes": None,
            "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 2, "amp_bf16": False}
    base.update(over)
    return TsKdConfig.from_dict(base)


@pytest.fixture(scope="module")
def micro_teacher(tmp_path_factory) -> Path:
    """A seeded random micro SAM saved as a SAM bundle (the teacher of the pipeline tests)."""
    from napari_lesion_diffkd.core.sam.architectures import TinySamConfig, build_tiny_sam
    from napari_lesion_diffkd.core.sam.sam_bundle import save_sam_bundle

    torch.manual_seed(0)
    cfg = TinySamConfig.from_dict(MICRO_SAM)
    folder = tmp_path_factory.mktemp("teacher") / "micro-sam"
    save_sam_bundle(folder, build_tiny_sam(cfg), {"name": "micro-sam"}, "tiny", tiny_config=cfg,
                    dtype=torch.float32)
    return folder


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, micro_teacher: Path, ph2_subset: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tskd") / "full"
    result = run_to_completion(run_ts_kd(micro_config(), scan_pairs(ph2_subset), out,
                                         teacher=str(micro_teacher)))
    return out, result


# ------------------------------------------------------------------------------ student


def test_vit_tiny_preset_is_the_standard_vit_tiny() -> None:
    student = ViTFPNStudent({"preset": "vit-tiny", "img_size": 224})
    c = student.config
    assert (c.embed_dim, c.depth, c.num_heads, c.patch_size, c.mlp_ratio) == (192, 12, 3, 16, 4.0)
    # timm's vit_tiny_patch16_224 has 5,717,416 parameters: this encoder + a class token
    # (192) + its position (192) + a 1000-class head (192 * 1000 + 1000).
    assert count_parameters(student.encoder) + 192 + 192 + 193_000 == 5_717_416
    # At 256 px (the teacher's input) only the position table grows: 256 instead of 196.
    at_256 = ViTFPNStudent({"preset": "vit-tiny"})
    assert count_parameters(at_256.encoder) == 5_717_416 - 192 - 192 - 193_000 + 60 * 192
    mini = ViTFPNStudent({"preset": "vit-mini"})
    assert count_parameters(mini) < count_parameters(at_256) / 5


def test_student_config_rejects_unknown_keys_and_presets() -> None:
    with pytest.raises(ValueError, match="unknown student preset"):
        StudentConfig.from_dict({"preset": "vit-huge"})
    with pytest.raises(ValueError, match="unknown student config keys"):
        StudentConfig.from_dict({"embed": 3})
    with pytest.raises(ValueError, match="multiple of patch_size"):
        StudentConfig.from_dict({"img_size": 250})


def test_hidden_states_and_logits_have_the_teachers_shapes(ph2_pairs) -> None:
    """lesion-sam-tiny's architecture (random weights): 16x16x128 embedding, 64x64 logits."""
    from napari_lesion_diffkd.core.sam.architectures import build_tiny_sam

    torch.manual_seed(0)
    sam = build_tiny_sam()
    student = ViTFPNStudent({"preset": "vit-mini"})
    records = scan_pairs(Path(ph2_pairs[0][0]).parents[1])[:2]
    items = load_pair_items(records, 256)
    mean, std = sam_normalisation(sam)
    x = torch.stack([normalise_pad(it.image, 256, mean, std) for it in items])
    assert x.shape == (2, 3, 256, 256)
    with torch.no_grad():
        emb, low = teacher_forward(sam, x, [tuple(it.image.shape[-2:]) for it in items], "none")
        _, low_box = teacher_forward(sam, x, [tuple(it.image.shape[-2:]) for it in items], "box")
        out = student.forward_all(x)
        adapted = HiddenAdapter(96, 128)(out.hidden, tuple(emb.shape[-2:]))
    assert emb.shape == (2, 128, 16, 16) and low.shape == low_box.shape == (2, 1, 64, 64)
    assert out.hidden.shape == (2, 96, 16, 16)
    assert out.logits.shape == low.shape
    assert adapted.shape == emb.shape
    # The batched no-prompt decoder equals SAM's own MaskDecoder on each image.
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
        ref, _ = sam.mask_decoder(image_embeddings=emb[1:2],
                                  image_pe=sam.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=sparse,
                                  dense_prompt_embeddings=dense, multimask_output=False)
    torch.testing.assert_close(low[1:2], ref, rtol=1e-4, atol=1e-4)


def test_kd_losses_decrease_over_a_few_steps(ph2_subset: Path) -> None:
    from napari_lesion_diffkd.core.sam.architectures import TinySamConfig, build_tiny_sam

    torch.manual_seed(0)
    sam = build_tiny_sam(TinySamConfig.from_dict(MICRO_SAM))
    items = load_pair_items(scan_pairs(ph2_subset)[:4], 64)
    mean, std = sam_normalisation(sam)
    x = torch.stack([normalise_pad(it.image, 64, mean, std) for it in items])
    with torch.no_grad():
        emb, low = teacher_forward(sam, x, [tuple(it.image.shape[-2:]) for it in items], "none")
    student = ViTFPNStudent(MICRO_STUDENT)
    adapter = HiddenAdapter(24, 32)
    opt = torch.optim.Adam(list(student.parameters()) + list(adapter.parameters()), lr=3e-3)
    history = []
    for _ in range(15):
        out = student.forward_all(x)
        lh = hidden_kd_loss(adapter(out.hidden, (4, 4)), emb)
        ll = logit_kd_loss(out.logits, low)
        loss = lh + 0.2 * ll
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((float(lh.detach()), float(ll.detach())))
    assert history[-1][0] < 0.7 * history[0][0]
    assert history[-1][1] < 0.7 * history[0][1]


def test_losses_on_hand_cases() -> None:
    a = torch.zeros(1, 2, 2, 2)
    assert float(hidden_kd_loss(a, a + 3)) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="hidden shapes differ"):
        hidden_kd_loss(a, torch.zeros(1, 2, 4, 4))
    s, t = torch.zeros(1, 1, 2, 2), torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])
    valid = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert float(logit_kd_loss(s, t)) == pytest.approx(1.0)
    assert float(logit_kd_loss(s, t, valid)) == pytest.approx(2.0)
    # Confident and right: loss near 0; the padded (invalid) half does not count.
    target = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    logits = torch.tensor([[[[20.0, -20.0], [-20.0, -20.0]]]])
    assert float(segmentation_loss(logits, target, valid)) < 1e-3
    assert float(segmentation_loss(logits, target, torch.ones_like(valid))) > 0.2


# ------------------------------------------------------------------------------ pipeline


def test_pipeline_writes_teacher_generated_images_log_and_bundle(pipeline_run) -> None:
    out, result = pipeline_run
    for name in ("config.json", "model.safetensors", "checkpoint.pt", "train_log.jsonl",
                 "eval.json", "teacher.json", "teacher_cache.pt", "generated_quality.json",
                 "teacher/config.json", "generator/config.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "generated").glob("gen-*.png"))) == 4
    log = [json.loads(x) for x in (out / LOG_NAME).read_text().splitlines()]
    assert [e["stage"] for e in log] == ["kd", "finetune"]
    assert {"hidden", "logit"} <= set(log[0])
    assert result["student"]["n_val"] == 3 and 0.0 <= result["student"]["val_dice"] <= 1.0
    teacher = result["teacher"]
    assert teacher["prompt"] in ("none", "box") and teacher["tuned"]
    assert teacher["lora_trainable"] > 0 and "val_dice_base" in teacher
    cache = torch.load(out / "teacher_cache.pt", weights_only=True)
    # 9 training + 4 generated images, 2 views; micro SAM: 32 x 4 x 4 embedding, 16 x 16 logits.
    assert cache["embeddings"].shape == (13, 2, 32, 4, 4)
    assert cache["logits"].shape == (13, 2, 1, 16, 16)
    quality = result["generated"]["generated_vs_train"]
    assert quality["n"] == 4 and quality["mse_mean"] > 0
    assert quality["psnr_of_mean_mse"] == pytest.approx(10 * np.log10(255**2
                                                                      / quality["mse_mean"]))


def test_resume_after_a_stop_equals_an_uninterrupted_run(pipeline_run, micro_teacher: Path,
                                                         ph2_subset: Path, tmp_path: Path
                                                         ) -> None:
    full_out, _ = pipeline_run
    records = scan_pairs(ph2_subset)
    for stage, stop_step in (("kd", 2), ("finetune", 2)):
        out = tmp_path / f"split-{stage}"
        gen = run_ts_kd(micro_config(), records, out, teacher=str(micro_teacher))
        for event in gen:
            if event.kind == "checkpoint" and event.message.endswith(CHECKPOINT_NAME) \
                    and event.step == stop_step and \
                    torch.load(out / CHECKPOINT_NAME, weights_only=True)["stage"] == stage:
                break
        gen.close()  # as a kill would: nothing after the checkpoint is kept
        assert not (out / "model.safetensors").exists()
        run_to_completion(run_ts_kd(micro_config(), records, out, teacher=str(micro_teacher),
                                    resume=True))
        a = torch.load(full_out / CHECKPOINT_NAME, weights_only=True)
        b = torch.load(out / CHECKPOINT_NAME, weights_only=True)
        assert a["stage"] == b["stage"] == "finetune" and a["step"] == b["step"] == 4
        for key in a["student"]:
            torch.testing.assert_close(a["student"][key], b["student"][key], rtol=0, atol=0)
        wa, wb = load_file(full_out / "model.safetensors"), load_file(out / "model.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_stage_files_are_reused_only_with_the_same_settings(pipeline_run, micro_teacher: Path,
                                                           ph2_subset: Path, tmp_path: Path
                                                           ) -> None:
    import shutil

    full_out, _ = pipeline_run
    out = tmp_path / "copy"
    shutil.copytree(full_out, out)
    before = json.loads((out / "teacher.json").read_text())
    events: list[str] = []
    run_to_completion(run_ts_kd(micro_config(teacher_steps=2, generated_images=3),
                                scan_pairs(ph2_subset), out, teacher=str(micro_teacher)),
                      on_event=lambda e: events.append(e.message))
    after = json.loads((out / "teacher.json").read_text())
    assert before["lora"]["steps"] == 3 and after["lora"]["steps"] == 2
    assert len(list((out / "generated").glob("gen-*.png"))) == 3
    assert not any(m.startswith(("teacher reused", "teacher outputs reused")) for m in events)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path: Path, ph2_subset: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        next(run_ts_kd(micro_config(), scan_pairs(ph2_subset), tmp_path, resume=True))


def test_scratch_baseline_needs_no_teacher(ph2_subset: Path, tmp_path: Path) -> None:
    config = micro_config(kd_steps=0, generated_images=0)
    result = run_to_completion(run_ts_kd(config, scan_pairs(ph2_subset), tmp_path,
                                         teacher="no-such-teacher"))
    assert result["teacher"] == {} and result["stage_seconds"]["finetune_steps"] == 4
    assert not (tmp_path / "teacher_cache.pt").exists()


def test_bundle_loads_without_pickle_and_predicts_in_the_image_frame(pipeline_run,
                                                                     ph2_pairs) -> None:
    out, result = pipeline_run
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "ts-kd-student" and config["network"]["_class_name"] == \
        "ViTFPNStudent"
    assert config["provenance"]["val_ids"] and config["teacher"]["prompt"]
    loaded = load_student_bundle(out)
    assert loaded.num_parameters == result["student"]["num_parameters"]
    from PIL import Image

    image = np.asarray(Image.open(ph2_pairs[0][0]).convert("RGB"))
    pred = predict(loaded, image)
    assert pred.mask.shape == image.shape[:2] and pred.mask.dtype == bool
    assert pred.probability.dtype == np.float32
    assert 0.0 <= pred.probability.min() <= pred.probability.max() <= 1.0
    # fp16 storage: the loaded network predicts what the trained one did, to fp16 precision.
    direct = predict(loaded.network, image)
    np.testing.assert_array_equal(direct.mask, pred.mask)


def test_load_rejects_a_sam_bundle(micro_teacher: Path) -> None:
    from napari_lesion_diffkd.core.bundle import BundleError

    with pytest.raises(BundleError, match="not a TS-KD student bundle"):
        load_student_bundle(micro_teacher)


def test_config_checks_and_budget() -> None:
    with pytest.raises(ValueError, match="unknown TS-KD config keys"):
        TsKdConfig.from_dict({"kd_stepz": 3})
    with pytest.raises(ValueError, match="views"):
        TsKdConfig.from_dict({"views": ["mirror"]})
    with pytest.raises(ValueError, match="nothing to train"):
        TsKdConfig.from_dict({"kd_steps": 0, "finetune_steps": 0})
    config = TsKdConfig.from_dict({"teacher_minutes": 2.0, "generated_images": 8,
                                   "generator": {"minutes": 3.0}, "kd_minutes": 3.0,
                                   "finetune_minutes": 2.0})
    config.fit_budget(5.0)
    parts = [config.teacher_minutes, config.generator["minutes"], config.kd_minutes,
             config.finetune_minutes]
    assert sum(parts) == pytest.approx(5.0) and parts[2] == pytest.approx(1.5)


def test_real_image_read_matches_the_item_frame(ph2_subset: Path) -> None:
    record = scan_pairs(ph2_subset)[0]
    image, mask = read_pair(record)
    item = load_pair_items([record], 256)[0]
    assert max(item.image.shape[-2:]) == 256 and item.mask is not None
    assert item.mask.shape == item.image.shape[-2:]
    assert abs(item.image.shape[-2] / item.image.shape[-1] - image.shape[0] / image.shape[1]) \
        < 0.01
