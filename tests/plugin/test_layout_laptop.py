"""All five panels open on a 1366 x 768 laptop screen: the window fits, the panels are
tabbed and scroll, the model row's widgets do not overlap, the tables show several rows,
and the model info is elided with the full text in its tooltip. Takes a screenshot of the
whole window (kept under the test's tmp dir) as the visual record."""

from __future__ import annotations

import numpy as np
import pytest

from tests.plugin.conftest import wait_ready

pytestmark = pytest.mark.gui

SCREEN = (1366, 768)
PANELS = ("Lesion segmentation", "Annotation project", "Jobs",
          "Compare teacher / student", "Correct segmentation")


def _rect_in(widget, ancestor):
    from qtpy.QtCore import QRect

    top_left = widget.mapTo(ancestor, widget.rect().topLeft())
    return QRect(top_left, widget.size())


def _settle(qtbot, ms: int = 300) -> None:
    qtbot.wait(ms)


def test_all_five_panels_fit_a_laptop_screen(make_napari_viewer, ph2_image, qtbot,
                                             tmp_path) -> None:
    from qtpy.QtWidgets import QDockWidget, QTableWidget

    from napari_lesion_diffkd.plugin._panel_layout import PANEL_MARK

    viewer = make_napari_viewer(show=True)  # shown, as a user's: docks lay out for real
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    viewer.add_image(ph2_image, name="lesion", rgb=True)
    panels = {}
    for name in PANELS:  # as the Plugins menu opens them: one after another, same area
        dock, widget = viewer.window.add_plugin_dock_widget("napari-lesion-diffkd", name)
        panels[name] = (dock, widget)
        _settle(qtbot, 50)
    seg = panels["Lesion segmentation"][1]
    compare = panels["Compare teacher / student"][1]
    wait_ready(qtbot, seg.picker, compare.teacher_picker, compare.student_picker)
    _settle(qtbot)

    # The window fits the screen: its minimum size is no larger, and it is still 1366x768.
    hint = window.minimumSizeHint()
    assert hint.width() <= SCREEN[0] and hint.height() <= SCREEN[1], hint
    assert window.width() <= SCREEN[0] and window.height() <= SCREEN[1]

    # Tabbed: every panel's dock shares one tab group, each panel scrolls.
    docks = [d for d in window.findChildren(QDockWidget)
             if getattr(d.widget(), PANEL_MARK, False)]
    assert len(docks) == 5
    tabbed = set(window.tabifiedDockWidgets(docks[0])) | {docks[0]}
    assert tabbed == set(docks)

    for name, (dock, widget) in panels.items():
        dock.show()
        dock.raise_()
        _settle(qtbot, 150)
        assert dock.height() <= SCREEN[1]
        # Tables show a few rows at least.
        for table in widget.findChildren(QTableWidget):
            rows = 2 if name.startswith("Compare") else 4
            row_h = table.verticalHeader().defaultSectionSize()
            assert table.viewport().height() >= rows * row_h - 2, (name, table)

    # The model row: combo, info line and "Add checkpoint..." never overlap; the info line
    # is one elided line with the full text as its tooltip.
    for picker in (seg.picker, compare.teacher_picker, compare.student_picker):
        dock = panels["Lesion segmentation" if picker is seg.picker
                      else "Compare teacher / student"][0]
        dock.raise_()
        _settle(qtbot, 150)
        rects = [_rect_in(w, picker) for w in (picker.combo, picker.info, picker.add_button,
                                               picker.all_check)]
        for i, a in enumerate(rects):
            for b in rects[i + 1:]:
                assert not a.intersects(b), (a, b)
        full = picker.current().describe()
        assert picker.info.text() == full and picker.info.toolTip() == full
        assert picker.info.height() <= 2 * picker.info.fontMetrics().height()
        shown = picker.info.fontMetrics().horizontalAdvance(
            super(type(picker.info), picker.info).text())
        assert shown <= picker.info.width() + 2

    panels["Lesion segmentation"][0].raise_()
    _settle(qtbot)
    # Let the panels' background work end before the viewer closes (SAM load, embedding).
    correct = panels["Correct segmentation"][1]
    qtbot.waitUntil(lambda: correct.sam_models.worker is None
                    and not correct.prefetch.is_running and correct.worker is None,
                    timeout=180_000)
    shot = viewer.screenshot(str(tmp_path / "laptop-all-panels.png"), canvas_only=False,
                             flash=False)
    assert np.asarray(shot).shape[0] <= SCREEN[1] and np.asarray(shot).shape[1] <= SCREEN[0]
