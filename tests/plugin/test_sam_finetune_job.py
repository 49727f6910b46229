"""The Jobs panel's "SAM fine-tune" kind: the form's config (the picked SAM's own training
config, LoRA rank, short-run overrides, errors), then a real job process that fine-tunes the
shipped lesion-sam-tiny for a few steps on a project of 8 human-labelled PH2 images; the new
version is registered, plotted, and listed and loadable in the correction panel's SAM list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugin.conftest import ROOT

pytestmark = pytest.mark.gui

TINY = "lesion-sam-tiny"


@pytest.fixture
def ph2_eight(tmp_path, data_root) -> Path:
    """A dataset folder with 8 PH2 pairs (symlinks), one group per image."""
    src, dst = data_root / "ph2_dermoscopy", tmp_path / "ph2_eight"
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    images = sorted((src / "images").iterdir())[:8]
    for image in images:
        mask = next((src / "masks").glob(f"{image.stem}.*"))
        (dst / "images" / image.name).symlink_to(image)
        (dst / "masks" / mask.name).symlink_to(mask)
    (dst / "metadata.csv").write_text(
        "id,group\n" + "".join(f"{i.stem},{i.stem}\n" for i in images))
    return dst


def test_sam_finetune_form_builds_its_config(tmp_path, monkeypatch) -> None:
    from napari_lesion_diffkd.core.sam.training import SamTrainConfig
    from napari_lesion_diffkd.plugin._job_forms import JobForm, build_job
    from napari_lesion_diffkd.plugin._sam_picker import CHECKPOINT, list_training_sams

    # The shipped SAM: its own training config (network size, prompts), base = the pick.
    kind, cfg = build_job(JobForm("SAM fine-tune", model=TINY, steps=6, threads=1,
                                  device="cpu", overrides={"batch_size": 2}))
    stored = json.loads((ROOT / "models" / TINY / "config.json").read_text())
    stored = stored["provenance"]["train_config"]
    assert kind == "sam-finetune" and cfg["threads"] == 1 and cfg["device"] == "cpu"
    sam = cfg["sam_config"]
    assert (sam["base"], sam["lora_rank"], sam["name"]) == (TINY, 0, TINY)
    assert sam["tiny"] == stored["tiny"] and sam["prompt_weights"] == stored["prompt_weights"]
    # A 6-step run still warms up, validates and checkpoints within its 6 steps.
    assert cfg["overrides"] == {"max_steps": 6, "val_every": 6, "checkpoint_every": 6,
                                "warmup_steps": 1, "batch_size": 2}
    merged = SamTrainConfig.from_dict({**sam, **cfg["overrides"]})
    assert merged.max_steps == 6 and merged.base == TINY
    _, cfg = build_job(JobForm("SAM fine-tune", model=TINY, lora_rank=4, minutes=2.5))
    assert cfg["sam_config"]["lora_rank"] == 4 and cfg["overrides"] == {"max_minutes": 2.5}
    assert cfg["sam_config"]["name"] == f"{TINY}-lora"  # adapters: a version of their own

    # An official checkpoint: listed and accepted only once its file is in the cache; it
    # starts from the SamTrainConfig defaults, named after the checkpoint.
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "cache"))
    assert "sam_vit_b" not in [row[0] for row in list_training_sams([])]
    with pytest.raises(ValueError, match="not in the cache"):
        build_job(JobForm("SAM fine-tune", model="sam_vit_b", lora_rank=4))
    (tmp_path / "cache" / "sam").mkdir(parents=True)
    (tmp_path / "cache" / "sam" / "sam_vit_b_01ec64.pth").write_bytes(b"")
    rows = list_training_sams([])
    assert rows[0][0] == TINY and ("sam_vit_b", "sam_vit_b", CHECKPOINT) in rows
    _, cfg = build_job(JobForm("SAM fine-tune", model="sam_vit_b", lora_rank=4))
    defaults = SamTrainConfig().to_dict()
    assert cfg["sam_config"] == {**defaults, "name": "sam_vit_b-lora", "base": "sam_vit_b",
                                 "lora_rank": 4}
    # A checkpoint file is named after its file; a config file replaces the derived fields.
    ckpt = tmp_path / "my_sam.pth"
    ckpt.write_bytes(b"")
    _, cfg = build_job(JobForm("SAM fine-tune", model=str(ckpt), lora_rank=8))
    assert (cfg["sam_config"]["name"], cfg["sam_config"]["base"]) == ("my_sam-lora",
                                                                       str(ckpt))
    own = tmp_path / "own.yaml"
    own.write_text("name: my-derm-sam\nbatch_size: 2\nlora_rank: 16\n")
    _, cfg = build_job(JobForm("SAM fine-tune", model=TINY, config_path=str(own), lora_rank=2))
    assert cfg["sam_config"] == {"name": "my-derm-sam", "batch_size": 2, "lora_rank": 2,
                                 "base": TINY}

    # What cannot work says why before anything starts.
    lora_bundle = tmp_path / "lora-sam"
    lora_bundle.mkdir()
    (lora_bundle / "config.json").write_text(json.dumps(
        {"kind": "sam", "name": "lora-sam", "lora": {"rank": 4},
         "sam": {"arch": "vit_b", "base": "/models/sam_vit_b.pth"}}))
    for form, message in (
            (JobForm("SAM fine-tune"), "needs the SAM"),
            (JobForm("SAM fine-tune", model="no-such-sam"), "unknown SAM 'no-such-sam'"),
            (JobForm("SAM fine-tune", model="dermoscopy-student"), "not a SAM"),
            (JobForm("SAM fine-tune", model=TINY, lora_rank=-1), "negative"),
            (JobForm("SAM fine-tune", model=TINY, overrides={"epochs": 3}),
             "unknown SAM training config keys"),
            (JobForm("SAM fine-tune", model=str(lora_bundle)), "fine-tune /models/sam_vit_b"),
            (JobForm("SAM fine-tune", model=TINY, config_path=str(tmp_path / "x.yaml")),
             "does not exist")):
        with pytest.raises(ValueError, match=message):
            build_job(form)


def test_sam_finetune_job_runs_and_the_new_sam_is_selectable(viewer, qtbot, tmp_path,
                                                              ph2_eight) -> None:
    from napari_lesion_diffkd.core.store import import_folder
    from napari_lesion_diffkd.plugin._context import app_context
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget

    context = app_context(viewer)
    store = context.set_project(tmp_path / "project")
    jobs = JobsWidget(viewer)
    correction = CorrectionWidget(viewer, autoload_sam=False)
    viewer.window.add_dock_widget(jobs)
    viewer.window.add_dock_widget(correction)
    form, sams = jobs.form, correction.sam_models
    form.kind_combo.setCurrentText("SAM fine-tune")
    qtbot.waitUntil(lambda: form.sam_picker.is_ready and sams.is_ready, timeout=30_000)
    assert not form.sam_picker.isHidden() and not form.lora_spin.isHidden()
    assert form.picker.isHidden() and form.samples_spin.isHidden()
    assert form._form.labelForField(form.sam_picker).text() == "start from"
    assert form.sam_picker.labels()[0] == TINY and form.sam_picker.current_target() == TINY
    assert form.lora_spin.value() == 0  # a small bundle trains fully by default
    form.steps_spin.setValue(4)
    form.threads_spin.setValue(1)
    form.device_combo.setCurrentText("cpu")
    form.overrides_edit.setText("batch_size: 4, val_max_images: 2")

    # Errors land in the panel: an empty project, then an unknown SAM.
    assert jobs.launch() is None and "no human labels" in jobs.status.text()
    import_folder(store, ph2_eight, modality="dermoscopy")
    form.sam_picker.add_path(tmp_path / "missing_sam.pth")
    assert jobs.launch() is None and "unknown SAM" in jobs.status.text()
    assert store.jobs.list() == []
    assert form.sam_picker.select(TINY) and form.lora_spin.value() == 0

    job = jobs.launch()
    assert job is not None and job.type == "sam-finetune", jobs.status.text()
    qtbot.waitUntil(lambda: jobs.jobs[job.id].status not in ("queued", "running"),
                    timeout=120_000)
    done = jobs.jobs[job.id]
    assert done.status == "done", done.error
    tag = done.result["model"]
    assert tag == f"{TINY}@v1" and done.result["steps"] == 4
    assert f"{tag} ready in the correction panel's SAM list" in jobs.status.text()
    record = store.find_model(tag)
    assert record.role == "promptable"
    # The curve: the running loss and the validation score (box / after-click Dice).
    jobs._show_detail()
    assert jobs.plot.series["loss"] and jobs.plot.series["val score"]
    assert all(0.0 <= v <= 1.0 for _, v in jobs.plot.series["val score"])
    assert "registered" in jobs.log_view.toPlainText()

    # The correction panel lists the new version first and loads it; so does the form.
    qtbot.waitUntil(lambda: tag in sams.labels(), timeout=30_000)
    assert sams.labels().index(tag) < sams.labels().index(TINY)
    with qtbot.waitSignal(sams.loaded, timeout=30_000) as loaded:
        assert sams.select(tag)
    assert loaded.args[0] is not None and sams.loaded_target == str(record.path)
    assert tag in sams.info.text() or "ready" in sams.info.text()
    assert tag in form.sam_picker.labels()

    # LoRA (rank 2, base frozen) on the same SAM: a version of its own that loads too.
    form.lora_spin.setValue(2)
    form.steps_spin.setValue(2)
    lora_job = jobs.launch()
    assert lora_job is not None, jobs.status.text()
    qtbot.waitUntil(lambda: jobs.jobs[lora_job.id].status not in ("queued", "running"),
                    timeout=120_000)
    lora_done = jobs.jobs[lora_job.id]
    assert lora_done.status == "done", lora_done.error
    lora_tag = lora_done.result["model"]
    assert lora_tag == f"{TINY}-lora@v1"
    assert 0 < lora_done.result["trainable"] < lora_done.result["num_parameters"]
    qtbot.waitUntil(lambda: lora_tag in sams.labels(), timeout=30_000)
    with qtbot.waitSignal(sams.loaded, timeout=30_000) as loaded:
        assert sams.select(lora_tag)
    assert loaded.args[0] is not None
    assert sams.loaded_target == str(store.find_model(lora_tag).path)
