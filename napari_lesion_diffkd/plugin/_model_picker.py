"""A model picker: the registered teachers, students and baselines of a modality, the open
project's trained versions and the user's bundle folders ("Add checkpoint...").

The combo's item text is the model label (``dermoscopy-student``, ``dermoscopy-teacher@v2``,
a folder name); the line below shows modality, role, parameters, input size, sampler and
validation Dice. Reading the catalogue imports torch (core.registry): the first fill of a
fresh session runs that import in a worker thread so docking never freezes the window.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_diffkd.plugin._catalog import ROLE_PREFERENCE, ModelEntry, default_entry
from napari_lesion_diffkd.plugin._panel_layout import ElidedLabel


class ModelPicker(QWidget):
    """Combo of models + info line + "Add checkpoint..." + "all modalities".

    Args:
        context: the viewer's :class:`._context.AppContext`.
        roles: role preference for the default choice (e.g. ``("teacher",)`` for Compare).

    Signals:
        changed(object): the selected :class:`ModelEntry` (None when empty).
        ready(): the catalogue was read for the first time.
    """

    changed = Signal(object)
    ready = Signal()

    def __init__(self, context: Any, roles: Sequence[str] = ROLE_PREFERENCE) -> None:
        super().__init__()
        self.context = context
        self.roles = tuple(roles)
        self.modality: str | None = None
        self.entries: list[ModelEntry] = []
        self.is_ready = False
        self.error = ""  # a warm-up or listing failure, shown once in the info line
        self._shown: list[ModelEntry] = []

        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(18)
        # One elided line, the full text in its tooltip: a wrapped info line used to clip
        # and overlap the combo and "Add checkpoint..." in a narrow dock.
        self.info = ElidedLabel("reading models...")
        self.add_button = QPushButton("Add checkpoint...")
        self.add_button.setToolTip("a bundle folder with config.json and model.safetensors")
        self.all_check = QCheckBox("all modalities")
        row = QHBoxLayout()
        row.addWidget(self.add_button)
        row.addWidget(self.all_check)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.info)
        layout.addLayout(row)

        self.combo.currentIndexChanged.connect(self._on_index)
        self.add_button.clicked.connect(self._browse)
        self.all_check.toggled.connect(lambda _: self._fill())
        context.models_changed.connect(self.refresh)
        if "torch" in sys.modules:
            self.refresh()
        else:
            from napari_lesion_diffkd.plugin._workers import start_function_worker

            # torch's first import takes seconds: do it off the GUI thread, then list.
            self._warmup = start_function_worker(_import_registry,
                                                 on_error=self._on_warmup_error,
                                                 on_finished=self.refresh)

    # -- public ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the catalogue (registry, user folders, project) and refill the combo."""
        try:
            self.entries = self.context.catalog()
        except Exception as exc:  # a broken registry or cache must not freeze the picker
            self.entries, self.error = [], f"cannot list models: {exc}"
        self._fill()
        if self.error:  # shown until the picker is used (the next choice replaces it)
            self.info.setText(self.error)
            self.info.setToolTip(self.error)
            self.error = ""
        if not self.is_ready:
            self.is_ready = True
            self.ready.emit()

    def set_modality(self, modality: str | None, select_default: bool = True) -> None:
        """Show this modality's models (all with None); select its preset default."""
        self.modality = modality
        self._fill()
        if select_default:
            entry = default_entry(self._shown, modality, self.roles)
            if entry is not None:
                self.select(entry.label)

    def select(self, label: str) -> bool:
        """Select a model by label (showing all modalities if needed); False if unknown."""
        if self.combo.findText(label) < 0 and any(e.label == label for e in self.entries):
            self.all_check.setChecked(True)
        index = self.combo.findText(label)
        if index >= 0:
            self.combo.setCurrentIndex(index)
        return index >= 0

    def current(self) -> ModelEntry | None:
        """The selected entry, or None."""
        index = self.combo.currentIndex()
        return self._shown[index] if 0 <= index < len(self._shown) else None

    def labels(self) -> list[str]:
        """The labels listed now."""
        return [e.label for e in self._shown]

    def add_folder(self, folder: str) -> ModelEntry:
        """Add a bundle folder and select it; raises ``BundleError`` if it is not one."""
        from napari_lesion_diffkd.plugin._catalog import entry_from_folder

        entry = entry_from_folder(folder)
        self.context.add_user_bundle(entry.target)  # refreshes every picker
        self.select(entry.label)
        return entry

    # -- internals -----------------------------------------------------------------------
    def _on_warmup_error(self, exc: BaseException) -> None:
        self.error = f"loading the model code failed: {exc}"

    def _fill(self) -> None:
        from napari_lesion_diffkd.plugin._catalog import for_modality

        previous = self.combo.currentText()
        modality = None if self.all_check.isChecked() else self.modality
        self._shown = for_modality(self.entries, modality)
        self.combo.blockSignals(True)
        self.combo.clear()
        for entry in self._shown:
            self.combo.addItem(entry.label)
            self.combo.setItemData(self.combo.count() - 1, entry.describe(), 3)  # tooltip
        index = self.combo.findText(previous)
        if index < 0 and self._shown:
            entry = default_entry(self._shown, modality, self.roles)
            index = self.combo.findText(entry.label) if entry else 0
        self.combo.setCurrentIndex(max(index, 0) if self._shown else -1)
        self.combo.blockSignals(False)
        self._on_index(self.combo.currentIndex())

    def _on_index(self, _index: int) -> None:
        entry = self.current()
        self.info.setText(entry.describe() if entry else
                          "no model for this modality: tick 'all modalities' or add one")
        self.changed.emit(entry)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder")
        if not folder:
            return
        try:
            self.add_folder(folder)
        except Exception as exc:  # BundleError: say why, keep the picker as it was
            self.info.setText(f"not a model bundle: {exc}")


def _import_registry() -> None:
    import napari_lesion_diffkd.core.registry  # noqa: F401  (the slow torch import)
