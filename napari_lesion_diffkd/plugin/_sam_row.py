"""The widget row both SAM lists share (the correction panel's and the SAM fine-tune form's):
a combo of SAMs, an "Add SAM..." button that browses for a checkpoint or bundle, and an
info line under them."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class SamComboRow(QWidget):
    """``combo``, ``add_button`` and ``info`` laid out; a subclass defines ``add_path(path)``
    (called with the file the user picked) and connects the combo's signals."""

    def __init__(self, min_chars: int, info_text: str = "") -> None:
        super().__init__()
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(min_chars)
        self.add_button = QPushButton("Add SAM...")
        self.add_button.setToolTip("a SAM bundle folder (config.json) or a SAM checkpoint "
                                   "file (.pth / .pt / .safetensors)")
        self.info = QLabel(info_text)
        self.info.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(self.add_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.info)
        self.add_button.clicked.connect(self._browse)

    def add_path(self, path: str) -> None:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "SAM checkpoint or bundle config", "",
            "SAM checkpoints (*.pth *.pt *.safetensors *.bin);;SAM bundle (config.json)")
        if path:
            self.add_path(path)
