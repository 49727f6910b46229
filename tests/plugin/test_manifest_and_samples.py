"""npe2 manifest validity and the sample-data contributions (headless fetch_* twins)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_lesion_diffkd


def test_manifest_validates_with_npe2() -> None:
    manifest = Path(napari_lesion_diffkd.__file__).parent / "napari.yaml"
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", str(manifest)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in (out.stdout + out.stderr).lower()


def test_plugin_is_discovered_by_npe2() -> None:
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-lesion-diffkd")
    commands = {c.id for c in manifest.contributions.commands}
    assert "napari-lesion-diffkd.get_reader" in commands
    widgets = {w.command: w.display_name for w in manifest.contributions.widgets}
    assert widgets == {
        "napari-lesion-diffkd.make_segment_widget": "Lesion segmentation",
        "napari-lesion-diffkd.make_project_widget": "Annotation project",
        "napari-lesion-diffkd.make_jobs_widget": "Jobs",
        "napari-lesion-diffkd.make_compare_widget": "Compare teacher / student",
        "napari-lesion-diffkd.make_correction_widget": "Correct segmentation",
    }
    assert widgets.keys() <= commands


@pytest.mark.parametrize("name", ["dermoscopy", "ultrasound", "ct"])
def test_sample_data_phantoms_are_lesion_images(name: str) -> None:
    from napari_lesion_diffkd.plugin import _sample_data

    (image, image_kwargs, kind), (mask, _, mask_kind) = getattr(_sample_data, f"sample_{name}")()
    assert kind == "image" and mask_kind == "labels"
    assert mask.shape == image.shape[:2] and 0.005 < mask.mean() < 0.5
    # The lesion differs from its surroundings (a phantom that a model could segment).
    gray = image.mean(axis=-1) if image.ndim == 3 else image
    assert abs(float(gray[mask > 0].mean()) - float(gray[mask == 0].mean())) > 20
    if name == "ct":
        assert image.dtype == np.float32 and image.min() < -800  # Hounsfield units


@pytest.mark.gui
def test_every_widget_docks_through_napari(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    for name in ("Lesion segmentation", "Annotation project", "Jobs",
                 "Compare teacher / student", "Correct segmentation"):
        dock, widget = viewer.window.add_plugin_dock_widget("napari-lesion-diffkd", name)
        assert widget.__class__.__name__.endswith("Widget") and dock.widget() is not None
