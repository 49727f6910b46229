"""A small table of STAPLE's per-sample sensitivity and specificity (Warfield et al. 2004).

A sample whose sensitivity or specificity sits well below the others is the odd one out:
the consensus trusts it less. For a volume the table shows the mean over slices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem


class StapleTable(QTableWidget):
    """Rows: samples 1..K; columns: sensitivity, specificity (3 decimals)."""

    def __init__(self) -> None:
        super().__init__(0, 2)
        self.setHorizontalHeaderLabels(["sensitivity", "specificity"])
        self.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setMaximumHeight(170)

    def show_values(self, sensitivity: Any, specificity: Any) -> None:
        """Fill from (K,) arrays, or (Z, K) per-slice arrays (averaged); None clears."""
        if sensitivity is None or specificity is None:
            self.setRowCount(0)
            return
        sens, spec = np.asarray(sensitivity, float), np.asarray(specificity, float)
        if sens.ndim == 2:
            sens, spec = sens.mean(axis=0), spec.mean(axis=0)
        self.setRowCount(len(sens))
        self.setVerticalHeaderLabels([f"sample {k + 1}" for k in range(len(sens))])
        for k, (a, b) in enumerate(zip(sens, spec, strict=True)):
            self.setItem(k, 0, QTableWidgetItem(f"{a:.3f}"))
            self.setItem(k, 1, QTableWidgetItem(f"{b:.3f}"))

    def values(self) -> list[tuple[float, float]]:
        """The shown (sensitivity, specificity) pairs."""
        return [(float(self.item(k, 0).text()), float(self.item(k, 1).text()))
                for k in range(self.rowCount())]
