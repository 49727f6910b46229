"""The project panel's queue list: image, score, status and confidence badge per row
(read-only). The badge (``_guidance.confidence_badge``) is coloured: green high, amber
medium, red low; its tooltip gives the stored prediction's sample disagreement."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from napari_lesion_diffkd.plugin._queue import QueueRow


class QueueTable(QTableWidget):
    """Rows of :class:`QueueRow`, in queue order; one row selected at a time."""

    def __init__(self) -> None:
        super().__init__(0, 4)
        self.rows: list[QueueRow] = []
        self.setHorizontalHeaderLabels(["image", "score", "status", "confidence"])
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.verticalHeader().setVisible(False)

    def show_rows(self, rows: Sequence[QueueRow], current_id: int | None = None) -> None:
        """Replace the rows; re-select the image ``current_id`` if listed."""
        self.rows = list(rows)
        self.blockSignals(True)
        self.setRowCount(len(self.rows))
        for i, row in enumerate(self.rows):
            score = "" if row.score is None else f"{row.score:.4f}"
            for j, text in enumerate((row.name, score, row.status)):
                self.setItem(i, j, QTableWidgetItem(text))
            self.setItem(i, 3, badge_item(row))
        self.blockSignals(False)
        index = self.index_of(current_id)
        if index is not None:
            self.selectRow(index)

    def index_of(self, image_id: int | None) -> int | None:
        """Row index of an image id, or None."""
        for i, row in enumerate(self.rows):
            if row.image_id == image_id:
                return i
        return None

    def selected_index(self) -> int | None:
        """The selected row index, or None."""
        selected = self.selectionModel().selectedRows()
        return selected[0].row() if selected else None


BADGE_COLOURS = {"high": "#2e9e44", "medium": "#d19a00", "low": "#d03030"}


def badge_item(row: QueueRow) -> QTableWidgetItem:
    """The confidence cell: ``● high`` / ``● medium`` / ``● low`` in its colour, or empty."""
    badge = getattr(row, "confidence", "")
    item = QTableWidgetItem(f"\u25cf {badge}" if badge else "")
    if badge:
        item.setForeground(QColor(BADGE_COLOURS[badge]))
        item.setToolTip(f"{badge} confidence: sample disagreement {row.score:.3f} (1 - mean "
                        "Dice of the K samples; high <= 0.1, medium <= 0.25)"
                        if row.score is not None else f"{badge} confidence")
    return item
