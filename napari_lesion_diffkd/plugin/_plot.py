"""A tiny live line plot (QPainter): training loss and validation Dice against the step.

QPainter instead of a matplotlib canvas: redrawing two short polylines twice a second costs
microseconds and needs no matplotlib Qt backend. Each series has its own vertical range
(loss: its min..max; Dice: 0..1), drawn in its own colour with a legend.
"""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

SERIES_COLOURS = {"loss": QColor(230, 120, 40), "val Dice": QColor(60, 160, 230)}


class CurvePlot(QWidget):
    """Draws ``series`` (name -> [(step, value), ...]); call :meth:`set_series` to update."""

    def __init__(self) -> None:
        super().__init__()
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.fixed_ranges: dict[str, tuple[float, float]] = {"val Dice": (0.0, 1.0)}
        self.setMinimumHeight(120)

    def set_series(self, name: str, points: Sequence[tuple[float, float]]) -> None:
        """Replace one series and repaint."""
        self.series[name] = [(float(x), float(y)) for x, y in points]
        self.update()

    def clear(self) -> None:
        """Remove every series."""
        self.series = {}
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        area = QRectF(self.rect()).adjusted(36, 20, -8, -20)  # legend above, steps below
        painter.setPen(QPen(QColor(128, 128, 128)))
        painter.drawRect(area)
        points = [p for pts in self.series.values() for p in pts]
        if not points:
            painter.drawText(area, Qt.AlignCenter, "no curve yet")
            painter.end()
            return
        x_lo = min(p[0] for p in points)
        x_hi = max(max(p[0] for p in points), x_lo + 1)
        painter.drawText(QPointF(area.left(), area.bottom() + 15), f"{x_lo:g}")
        painter.drawText(QPointF(area.right() - 40, area.bottom() + 15), f"step {x_hi:g}")
        legend_x = area.left()
        for name, pts in self.series.items():
            colour = SERIES_COLOURS.get(name, QColor(200, 200, 200))
            painter.setPen(QPen(colour, 2))
            lo, hi = self.fixed_ranges.get(name, _range(pts))
            poly = QPolygonF([
                QPointF(area.left() + (x - x_lo) / (x_hi - x_lo) * area.width(),
                        area.bottom() - (y - lo) / (hi - lo) * area.height())
                for x, y in pts])
            if len(pts) == 1:
                painter.drawEllipse(poly[0], 2.5, 2.5)
            else:
                painter.drawPolyline(poly)
            text = f"{name} {pts[-1][1]:.4g}" if pts else f"{name} -"
            painter.drawText(QPointF(legend_x, area.top() - 6), text)
            legend_x += painter.fontMetrics().horizontalAdvance(text) + 16
        painter.end()


def _range(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    if not points:
        return 0.0, 1.0
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
