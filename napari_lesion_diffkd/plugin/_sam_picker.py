"""The Jobs panel's "start from" picker of a SAM fine-tune: which SAM the job trains.

Lists the same SAMs as the correction panel (``core.sam.correction_backend.sam_choices``:
the project's SAM versions, newest first, the registered SAM bundles with
``lesion-sam-tiny`` first) plus SAM bundles the user added to the viewer, and, of the
official checkpoint names, only those whose file is in the cache (a job cannot download).
"Add SAM..." takes a bundle folder or a checkpoint file. Picking never loads weights: the
job process does. The list is read the first time the SAM kind is chosen (``activate``) and
again whenever the viewer's models change (a finished job).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal

from napari_lesion_diffkd.plugin._sam_row import SamComboRow

#: What a listed SAM is: a bundle (own training config) or a bare checkpoint (defaults).
BUNDLE, CHECKPOINT = "bundle", "checkpoint"


class SamPicker(SamComboRow):
    """Combo of SAMs + "Add SAM..." + an info line.

    Signals:
        changed(str, str): label and kind (:data:`BUNDLE` / :data:`CHECKPOINT`) of the pick.

    Public attributes used by tests: ``combo``, ``add_button``, ``info``, ``is_ready``
    (listed at least once), ``worker`` (the first torch import, None when idle).
    """

    changed = Signal(str, str)

    def __init__(self, context: Any) -> None:
        super().__init__(18, "")
        self.context = context
        self.is_ready = False
        self.active = False
        self.worker: Any = None
        self._rows: list[tuple[str, str, str]] = []  # (label, target, kind)
        self._user: list[tuple[str, str, str]] = []

        self.combo.currentIndexChanged.connect(self._on_index)
        context.models_changed.connect(self.refresh)

    # -- public API ----------------------------------------------------------------------
    def activate(self) -> None:
        """List the SAMs from now on (the first call may import torch in a worker)."""
        if self.active:
            return
        self.active = True
        if "torch" in sys.modules:
            self.refresh()
            return
        from napari_lesion_diffkd.plugin._workers import start_function_worker

        self.info.setText("reading SAM models...")
        self.worker = start_function_worker(_import_sam_listing, on_error=self._import_failed,
                                            on_finished=self._imported)

    def refresh(self) -> None:
        """Re-read the list (GUI thread: a few small JSON reads once torch is imported)."""
        if not self.active or self.worker is not None:
            return
        try:
            rows = list_training_sams(self.context.project_models(), self.context.user_bundles)
        except Exception as exc:  # a broken registry must not take the panel down
            self.info.setText(f"cannot list SAM models: {exc}")
            rows = []
        self._rows = rows
        self._fill()
        self.is_ready = True

    def labels(self) -> list[str]:
        return [self.combo.itemText(i) for i in range(self.combo.count())]

    def select(self, label: str) -> bool:
        """Pick a listed SAM; False when it is not listed."""
        index = self.combo.findText(label)
        if index >= 0:
            self.combo.setCurrentIndex(index)
        return index >= 0

    def current_target(self) -> str | None:
        """The pick's load target (bundle folder, registered name, checkpoint name or file)."""
        row = self._current_row()
        return row[1] if row else None

    def current_kind(self) -> str | None:
        row = self._current_row()
        return row[2] if row else None

    def add_path(self, path: str | Path) -> str:
        """List a SAM bundle folder (or its ``config.json``) or a checkpoint file and pick
        it; returns its label. Whether it loads is the job's to find out."""
        path = Path(path).expanduser().resolve()
        if path.name == "config.json":
            path = path.parent
        row = (path.name if path.is_dir() else path.stem, str(path),
               BUNDLE if path.is_dir() else CHECKPOINT)
        if row not in self._user:
            self._user.append(row)
        self._fill()
        self.select(row[0])
        return row[0]

    # -- internals -----------------------------------------------------------------------
    def _current_row(self) -> tuple[str, str, str] | None:
        label = self.combo.currentText()
        return next((r for r in self._user + self._rows if r[0] == label), None)

    def _fill(self) -> None:
        previous = self.combo.currentText()
        self.combo.blockSignals(True)
        self.combo.clear()
        seen: set[str] = set()
        for label, target, _ in self._user + self._rows:
            if label not in seen:
                seen.add(label)
                self.combo.addItem(label)
                self.combo.setItemData(self.combo.count() - 1, target, 3)  # tooltip
        index = self.combo.findText(previous)
        if index < 0:  # first fill, or the pick is gone: the default SAM
            from napari_lesion_diffkd.core.sam.correction_backend import DEFAULT_SAM

            index = max(0, self.combo.findText(DEFAULT_SAM))
        self.combo.setCurrentIndex(index if self.combo.count() else -1)
        self.combo.blockSignals(False)
        self._on_index(self.combo.currentIndex())

    def _on_index(self, _index: int) -> None:
        row = self._current_row()
        if row is None:
            self.info.setText("no SAM listed: add a bundle folder or a checkpoint")
            return
        source = "its own training config" if row[2] == BUNDLE else "SamTrainConfig defaults"
        self.info.setText(f"{row[1]} (starts from {source})")
        self.changed.emit(row[0], row[2])

    def _import_failed(self, exc: BaseException) -> None:
        self._error = f"loading the SAM code failed: {exc}"

    def _imported(self) -> None:
        self.worker = None
        self.refresh()
        error, self._error = getattr(self, "_error", ""), ""
        if error:  # listed what could be listed; say what went wrong
            self.info.setText(error)
            self.info.setToolTip(error)


def list_training_sams(project_models: Any,
                       user_bundles: Any = ()) -> list[tuple[str, str, str]]:
    """``(label, target, kind)`` of every SAM a fine-tune can start from (see the module
    docstring); official names only when their checkpoint is in the cache."""
    from napari_lesion_diffkd.core.sam.correction_backend import sam_choices
    from napari_lesion_diffkd.core.sam.loading import OFFICIAL_CHECKPOINTS, sam_cache_dir
    from napari_lesion_diffkd.core.sam.sam_bundle import is_sam_bundle

    rows = [(Path(p).name, str(p), BUNDLE) for p in user_bundles if is_sam_bundle(p)]
    for label, target in sam_choices(project_models):
        if target == "medsam-lite":  # its own start config (_sam_job_form), after the
            continue                 # default small SAM: a cheap fine-tune comes first
        info = OFFICIAL_CHECKPOINTS.get(target)
        if info is None:
            rows.append((label, target, BUNDLE))
        elif (sam_cache_dir() / info.filename).is_file():
            rows.append((label, target, CHECKPOINT))
    from napari_lesion_diffkd.core.sam import medsam_lite

    if medsam_lite.is_available():
        after = [i for i, row in enumerate(rows) if row[1] == "lesion-sam-tiny"]
        rows.insert(after[0] + 1 if after else len(rows),
                    (medsam_lite.NAME, medsam_lite.NAME, BUNDLE))
    return rows


def _import_sam_listing() -> None:
    import napari_lesion_diffkd.core.sam.correction_backend  # noqa: F401  (imports torch)
    import napari_lesion_diffkd.core.sam.loading  # noqa: F401
