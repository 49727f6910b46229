"""Layout helpers that let all five panels fit a 1366 x 768 laptop screen.

* :func:`make_scrollable`: a panel's content goes into a scroll area, so a dock can be
  shorter than its content (it scrolls) and the main window never grows past the screen.
* :func:`tabify_with_siblings`: when a panel is docked next to another of this plugin's
  panels (napari's Plugins menu stacks docks vertically), it joins them as a tab and is
  raised; every panel keeps the full height.
* :class:`ElidedLabel`: one line, elided with "...", the full text in its tooltip (model
  info lines that used to wrap, clip or overlap the combo and "Add checkpoint...").
* :func:`show_rows`: a table tall enough for a few rows (they used to shrink to one).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDockWidget,
    QFrame,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

PANEL_MARK = "_lesion_diffkd_panel"  # attribute set on every panel of this plugin
MAX_WIDTH = 460  # a panel's minimum width at most: the canvas keeps ~560 px on 1366


def make_scrollable(panel: QWidget) -> QScrollArea:
    """Move ``panel``'s layout (and its widgets) into a scroll area that fills ``panel``;
    returns the scroll area (its widget is the content)."""
    layout = panel.layout()
    content = QWidget()
    content.setLayout(layout)  # reparents the layout's widgets to ``content``
    for combo in content.findChildren(QComboBox):
        # Long items (model names, paths) must not set the panel's width: the combo shows
        # what fits and its popup the whole text.
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(min(combo.minimumContentsLength() or 10, 10))
        combo.setSizePolicy(QSizePolicy.Expanding, combo.sizePolicy().verticalPolicy())
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.NoFrame)
    # No sideways scrolling: the content takes the dock's width (combos and info lines are
    # elided to fit); it scrolls vertically only.
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    scroll.setWidget(content)
    for label in content.findChildren(QLabel):
        if not isinstance(label, ElidedLabel) and not label.wordWrap() and label.text():
            label.setWordWrap(True)  # long status / detection lines wrap, not widen
    outer = QVBoxLayout(panel)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    # As wide as the content needs (so nothing is cut at the right), at most MAX_WIDTH.
    need = content.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
    panel.setMinimumWidth(min(need + 4, MAX_WIDTH))
    setattr(panel, PANEL_MARK, True)
    panel.setMinimumHeight(120)  # a dock may be short: the content scrolls
    _TabifyOnShow(panel)
    return scroll


def tabify_with_siblings(panel: QWidget) -> bool:
    """If ``panel`` sits in a dock next to another of this plugin's docks (same area,
    untabbed), tabify it with them and raise it; returns whether it did."""
    dock = _parent_of(panel, QDockWidget)
    window = _parent_of(dock, QMainWindow) if dock is not None else None
    if dock is None or window is None or dock.isFloating():
        return False
    area = window.dockWidgetArea(dock)
    # Open docks of this plugin in the same area (a tab that is not current is not
    # "visible", but its toggle action is checked).
    siblings = [d for d in window.findChildren(QDockWidget)
                if d is not dock and not d.isFloating() and d.toggleViewAction().isChecked()
                and window.dockWidgetArea(d) == area and _is_panel_dock(d)]
    if not siblings or dock in window.tabifiedDockWidgets(siblings[0]):
        return False
    window.tabifyDockWidget(siblings[0], dock)  # always the same group
    dock.show()
    dock.raise_()
    return True


class _TabifyOnShow(QObject):
    """Tabifies its panel the first time it is shown in a dock."""

    def __init__(self, panel: QWidget) -> None:
        super().__init__(panel)
        self._panel = panel
        panel.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt API)
        panel = getattr(self, "_panel", None)  # None while Qt tears the panel down
        if panel is not None and obj is panel and event.type() == QEvent.Show:
            panel.removeEventFilter(self)
            QTimer.singleShot(0, self._tabify)
        return False

    def _tabify(self) -> None:
        try:
            tabify_with_siblings(self._panel)
        except RuntimeError:  # the panel was deleted meanwhile
            pass


def _parent_of(widget: Any, kind: type) -> Any:
    while widget is not None and not isinstance(widget, kind):
        widget = widget.parent()
    return widget


def _is_panel_dock(dock: QDockWidget) -> bool:
    return bool(getattr(dock.widget(), PANEL_MARK, False))


class ElidedLabel(QLabel):
    """A one-line label that elides its text to its width; the full text is the tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.setMinimumWidth(40)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt API)
        self._full = str(text)
        self.setToolTip(self._full)
        self._elide()

    def text(self) -> str:
        """The full text (not the elided one shown)."""
        return self._full

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(self.width(), self.minimumWidth())
        shown = self.fontMetrics().elidedText(self._full, Qt.ElideRight, width)
        super().setText(shown)


def show_rows(table: QAbstractItemView, rows: int = 4) -> None:
    """Give ``table`` room for its header and ``rows`` rows, at least."""
    header = table.horizontalHeader().sizeHint().height() \
        if hasattr(table, "horizontalHeader") else 0
    row = table.verticalHeader().defaultSectionSize() if hasattr(table, "verticalHeader") \
        else table.sizeHintForRow(0)
    table.setMinimumHeight(header + rows * row + 2 * table.frameWidth() + 4)
    table.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
