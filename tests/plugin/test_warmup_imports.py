"""After a panel's warm-up (plugin/_warmup.py) the first result layers import nothing on the
GUI thread, and the start-up objects are out of the full garbage collections. Run in a fresh
interpreter: in the test process earlier tests have imported everything already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

SCRIPT = textwrap.dedent('''
    import gc, json, sys, time
    import numpy as np
    import napari
    from qtpy.QtWidgets import QApplication
    from napari_lesion_diffkd.plugin import _warmup
    from napari_lesion_diffkd.plugin._layers import CONSENSUS_COLORS, CONSENSUS_CONTOUR
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer = napari.Viewer(show=False)
    viewer.add_image(np.zeros((64, 80, 3), np.uint8), name="lesion", rgb=True)
    widget = SegmentWidget(viewer)
    app, end = QApplication.instance(), time.time() + 120
    while not _warmup.is_warm() and time.time() < end:
        app.processEvents()
        time.sleep(0.01)
    before, frozen = set(sys.modules), gc.get_freeze_count()
    labels = viewer.add_labels(np.zeros((64, 80), np.uint8), colormap=CONSENSUS_COLORS)
    labels.contour = CONSENSUS_CONTOUR
    viewer.add_image(np.zeros((64, 80), np.float32), colormap="magma", blending="additive")
    print(json.dumps({"warm": _warmup.is_warm(), "error": repr(_warmup._state["error"]),
                      "frozen": frozen, "new": sorted(set(sys.modules) - before)}))
    viewer.close()
''')


def test_first_result_layers_import_nothing_after_the_warm_up(tmp_path) -> None:
    env = {**os.environ, "NAPARI_LESION_DIFFKD_MODELS": "",
           "LESION_DIFFKD_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["warm"] and out["error"] == "None", out
    # Before: skimage.color and scipy.linalg (napari's label colormap), ~0.2 s on the GUI.
    assert out["new"] == [], " ".join(out["new"])
    assert out["frozen"] > 100_000  # torch, pandas and napari's objects: out of gen 2
