"""The model picker shows how many validation images a model's Dice comes from and warns
below 10 (issue 14, item 8: a fine-tuned model's "val Dice 0.964 (project)" came from one
image, shown beside a registered model's 64-image score)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.plugin.conftest import ROOT, STUDENT, wait_ready

pytestmark = pytest.mark.gui


def test_catalog_entry_shows_the_size_and_warns_below_ten() -> None:
    from napari_lesion_diffkd.plugin._catalog import entry_from_config

    cfg = {"network": {}, "modality": "dermoscopy", "role": "teacher",
           "metrics": {"model_resolution_dice": 0.964},
           "provenance": {"split": {"n_val": 1}}}
    one = entry_from_config("derm@v2", "x", cfg, "project")
    assert one.n_val == 1 and one.few_val_images
    assert "val Dice 0.964 on 1 image (project)" in one.describe()
    assert "\u26a0 validated on only 1 image" in one.describe()
    many = entry_from_config("derm", "x", {**cfg, "metrics": {"dice": 0.9, "n_val": 32}},
                             "registered")
    assert "val Dice 0.900 on 32 images (registered)" in many.describe()
    assert not many.few_val_images and "\u26a0" not in many.describe()


def test_picker_shows_validation_size_of_project_and_registered_models(
        viewer, qtbot, tmp_path, ph2_image) -> None:
    from napari_lesion_diffkd.plugin._context import app_context
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    context = app_context(viewer)
    context.set_project(tmp_path / "project")
    # A fine-tuned version whose validation split held one image (as a job registers it).
    run = tmp_path / "project" / "jobs" / "1" / "run"
    shutil.copytree(ROOT / "models" / STUDENT, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["metrics"] = {"model_resolution_dice": 0.964}
    cfg["provenance"]["split"]["n_val"] = 1
    (run / "config.json").write_text(json.dumps(cfg))
    context.store.register_model("derm-tuned", run, role="student",
                                 metrics={"model_resolution_dice": 0.964, "n_val": 1})
    viewer.add_image(ph2_image, name="lesion", rgb=True)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    wait_ready(qtbot, widget.picker)
    context.models_changed.emit()

    assert widget.select_model("derm-tuned@v1")
    info = widget.model_info.text()
    assert "val Dice 0.964 on 1 image (project)" in info
    assert "\u26a0 validated on only 1 image" in info
    assert widget.select_model(STUDENT)
    info = widget.model_info.text()
    registered_n = json.loads((ROOT / "models" / STUDENT / "config.json").read_text())
    assert f"on {registered_n['metrics']['n_val']} images (registered)" in info
    assert "\u26a0" not in info
