"""Spread GUI-thread work over several turns of the event loop.

Showing a result creates napari layers, and each new layer costs the GUI thread a few
hundred ms here (its Qt controls, vispy visuals, overlays and shaders; napari does that on
the GUI thread and nowhere else). Done in one slot, a Compare result (eight layers) froze
napari for 2-4 s. :class:`GuiSteps` runs one step per event-loop turn instead, so input,
repaints and timers get through between layers; the longest freeze is one layer's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer


class GuiSteps(QObject):
    """A queue of callables run on the GUI thread, one per event-loop turn.

    ``run(steps, done)`` starts them (the first at once); ``done()`` is called after the
    last, also when a step raised (``on_error`` gets the exception and the rest is
    skipped). ``busy`` is True until then.
    """

    def __init__(self, parent: QObject | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        super().__init__(parent)
        self._steps: list[Callable[[], Any]] = []
        self._after: list[Callable[[], Any]] = []
        self._on_error = on_error
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._next)
        self.busy = False

    def run(self, steps: list[Callable[[], Any]], done: Callable[[], Any] | None = None
            ) -> None:
        self._steps = list(steps)
        self._after = [done] if done is not None else []
        self.busy = True
        self._next()

    def push(self, steps: list[Callable[[], Any]]) -> None:
        """Run ``steps`` next, before the ones still queued (one per turn, as the rest);
        for a step that can only work out its follow-ups when it runs."""
        self._steps[:0] = list(steps)
        if not self.busy:
            self.run(self._steps)

    def then(self, callback: Callable[[], Any]) -> None:
        """Call ``callback`` when the steps are done (at once when idle)."""
        if self.busy:
            self._after.append(callback)
        else:
            callback()

    def _next(self) -> None:
        if self._steps:
            step = self._steps.pop(0)
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - shown, and the widget stays usable
                self._steps = []
                if self._on_error is not None:
                    self._on_error(exc)
        if self._steps:
            self._timer.start()
            return
        self.busy = False
        after, self._after = self._after, []
        for callback in after:
            callback()
