"""No first-run freeze: a panel warms up the first run's imports in a worker when it opens,
and a result's new layers are created one per event-loop turn, so the GUI turns between
them (no wall-clock threshold: the number of event-loop turns is counted)."""

from __future__ import annotations

import sys

import pytest

from tests.plugin.conftest import wait_idle, wait_ready

pytestmark = pytest.mark.gui


class TurnCounter:
    """A 0 ms repeating QTimer: its count goes up once per turn of the event loop."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.count = 0
        self.timer = QTimer()
        self.timer.setInterval(0)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        self.count += 1


def _turns_of_inserts(viewer, qtbot, start, wait):
    counter = TurnCounter()
    seen: list[int] = []
    viewer.layers.events.inserted.connect(lambda _e: seen.append(counter.count))
    try:
        start()
        wait()
    finally:
        counter.timer.stop()
    return seen


def test_segment_result_layers_come_one_per_event_loop_turn(viewer, ph2_image, qtbot) -> None:
    from napari_lesion_diffkd.plugin import _warmup
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    wait_ready(qtbot, seg.picker)
    qtbot.waitUntil(_warmup.is_warm, timeout=120_000)
    assert all(name in sys.modules for name in _warmup.MODULES)  # imported off the GUI
    seg.samples_spin.setValue(2)
    turns = _turns_of_inserts(viewer, qtbot, seg.run, lambda: wait_idle(qtbot, seg))
    assert len(turns) == 2  # consensus and uncertainty (no samples layer for 2D)
    assert len(set(turns)) == 2, turns  # not in one slot: the GUI turned in between
    assert seg.status.text().startswith("done")


def test_compare_result_layers_come_one_per_event_loop_turn(viewer, ph2_image, qtbot) -> None:
    from napari_lesion_diffkd.plugin.compare_widget import CompareWidget

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    w = CompareWidget(viewer)
    viewer.window.add_dock_widget(w)
    wait_ready(qtbot, w.teacher_picker, w.student_picker)
    w.samples_spin.setValue(2)
    turns = _turns_of_inserts(viewer, qtbot, w.run, lambda: wait_idle(qtbot, w))
    assert len(turns) == 8  # per model: uncertainty, consensus, view, caption
    assert len(set(turns)) == 8, turns
    assert w.status.text().startswith("done") and w.last_result.dice > 0.8
