"""Closing napari releases the plugin's panels: nothing the application outlives (its
``aboutToQuit`` signal, an event filter, the per-viewer context) keeps a closed viewer or its
panels alive."""

from __future__ import annotations

import gc
import weakref

import pytest

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("panel_name", ["project", "jobs", "segment", "compare", "correction"])
def test_closed_viewer_releases_its_panel(qtbot, panel_name):
    import napari

    from napari_lesion_diffkd.plugin.compare_widget import CompareWidget
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget
    from napari_lesion_diffkd.plugin.project_widget import ProjectWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    panels = {"project": ProjectWidget, "jobs": JobsWidget, "segment": SegmentWidget,
              "compare": CompareWidget, "correction": CorrectionWidget}

    viewer = napari.Viewer(show=True)
    try:
        panel = panels[panel_name](viewer)
        viewer.window.add_dock_widget(panel)
        qtbot.waitUntil(panel.isVisible)
        panel_ref, viewer_ref = weakref.ref(panel), weakref.ref(viewer)
        del panel
    finally:
        viewer.close()
    del viewer
    for _ in range(3):
        qtbot.wait(10)
        gc.collect()
    assert viewer_ref() is None
    assert panel_ref() is None
