"""``lesion-diffkd demo --screenshot``: opens a real image, segments it, saves the window."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from skimage.io import imread

pytestmark = pytest.mark.gui


def test_demo_screenshot_shows_the_app(tmp_path: Path) -> None:
    shot = tmp_path / "demo.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert env.get("DISPLAY"), "pytest-xvfb provides a display"
    out = subprocess.run(
        [sys.executable, "-m", "napari_lesion_diffkd.cli", "demo", "--model",
         "dermoscopy-student", "--screenshot", str(shot)],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    image = imread(shot)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 10  # not a blank window
    assert "screenshot saved" in out.stdout
