"""Dock widget "Annotation project": a project folder, its queue, Next / Previous, Save.

* Open / create a project folder (``core.store.ProjectStore``), import images or folders
  (a dataset folder's ``masks/`` become ``human`` labels) in a worker thread.
* The queue lists image, score and status, ordered by the stored ranking (``_queue``).
* Next / Previous (or a double click) opens an image with its cached prediction (as the
  usual ``<image> samples / uncertainty / consensus`` layers) and its current label (as
  ``<image> label``).
* Save writes the chosen labels layer ("auto": the edited one, else the consensus) as a
  ``human`` label version. Saves run in order on a background thread (``_save_queue``).
* Nothing is lost: an edited label or consensus is saved automatically when another image
  is opened, when the layer is removed, when a new run is about to overwrite it, and when
  the viewer closes.
* Every save is linked to the image's interaction log (``_interaction_log``: the strokes,
  prompts, accepts and undos that made it), so ``lesion-diffkd project replay`` can rebuild
  it; the queue shows a confidence badge per image (``_guidance.confidence_badge``).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_diffkd.plugin._catalog import MODALITIES
from napari_lesion_diffkd.plugin._layers import is_dirty, managed, model_meta
from napari_lesion_diffkd.plugin._queue_table import QueueTable

if TYPE_CHECKING:
    import napari

AUTO_SOURCE = "auto (edited, else consensus)"


class ProjectWidget(QWidget):
    """The annotation queue of a project folder (see module docstring).

    Public attributes used by tests and scripts: ``queue_table``, ``source_combo``,
    ``modality_combo``, ``status``, ``save_queue`` (None without a project), ``worker``
    (import or open in flight, else None), ``current`` (``{"id", "name"}`` of the open
    image, or None).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from napari_lesion_diffkd.plugin._context import app_context

        self.viewer = napari_viewer
        self.context = app_context(napari_viewer)
        from napari_lesion_diffkd.plugin._interaction_log import interaction_log

        self.log = interaction_log(napari_viewer)  # tracks the label layers from now on
        self.save_queue: Any = None
        self.worker: Any = None
        self.current: dict[str, Any] | None = None

        self.path_label = QLabel("no project")
        self.path_label.setWordWrap(True)
        self.open_button = QPushButton("Open / create project...")
        self.import_files_button = QPushButton("Import images...")
        self.import_folder_button = QPushButton("Import folder...")
        self.modality_combo = QComboBox()
        self.modality_combo.addItems(["(from file)", *MODALITIES])
        self.queue_table = QueueTable()
        self.prev_button = QPushButton("Previous")
        self.next_button = QPushButton("Next")
        self.source_combo = QComboBox()
        self.save_button = QPushButton("Save label")
        self.status = QLabel("open or create a project folder")
        self.status.setWordWrap(True)

        imports = QHBoxLayout()
        imports.addWidget(self.import_files_button)
        imports.addWidget(self.import_folder_button)
        form = QFormLayout()
        form.addRow("import as", self.modality_combo)
        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        save_form = QFormLayout()
        save_form.addRow("save from", self.source_combo)
        layout = QVBoxLayout(self)
        for item in (self.open_button, self.path_label, imports, form, self.queue_table, nav,
                     save_form, self.save_button, self.status):
            (layout.addLayout if not isinstance(item, QWidget) else layout.addWidget)(item)
        from napari_lesion_diffkd.plugin._panel_layout import make_scrollable, show_rows

        show_rows(self.queue_table, 4)
        make_scrollable(self)  # fits a laptop screen with every panel open (_panel_layout)

        self.open_button.clicked.connect(self._browse_project)
        self.import_files_button.clicked.connect(self._browse_files)
        self.import_folder_button.clicked.connect(self._browse_folder)
        self.next_button.clicked.connect(self.next_image)
        self.prev_button.clicked.connect(self.previous_image)
        self.save_button.clicked.connect(lambda: self.save())
        self.queue_table.cellDoubleClicked.connect(lambda row, _col: self.open_row(row))
        self.context.consensus_replacing.connect(self._save_before_replace)
        self.context.project_changed.connect(self._on_project_changed)
        self.context.job_finished.connect(self._on_job_finished)  # bound: see _call_on_quit
        napari_viewer.layers.events.removing.connect(self._on_removing)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh_sources)
        # The viewer's window closing (public Qt API only: the widget's top-level window,
        # known once docked and shown) and the application quitting both save and flush.
        self._close_watch = _CloseWatcher(self)
        self._watched: Any = lambda: None  # weakref to the watched window (none yet)
        _call_on_quit(self)
        self._set_enabled(False)
        if self.context.store is not None:
            self._on_project_changed(self.context.project_path)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        window = self.window()
        if window is not self and window is not self._watched():
            window.installEventFilter(self._close_watch)
            # Weak: the panel must not keep a closed viewer's window alive (napari's leak
            # check in tests; a second viewer in one process).
            self._watched = weakref.ref(window)

    # -- project -------------------------------------------------------------------------
    def open_project(self, path: str | Path, create: bool = True) -> None:
        """Open (or create) the project folder; the current image's edits are saved first."""
        self.autosave("project change")
        try:
            self.context.set_project(path, create=create)  # -> _on_project_changed
        except Exception as exc:  # StoreError: not a project, newer schema, no WAL...
            self.status.setText(f"cannot open {path}: {exc}")

    def import_paths(self, paths: list[str], modality: str | None = None) -> None:
        """Add image files, dataset folders (images/ + masks/) or flat folders, in a worker."""
        if self.context.project_path is None or self.worker is not None:
            return
        chosen = self.modality_combo.currentText()
        modality = modality or (chosen if chosen in MODALITIES else None)
        project = self.context.project_path

        def work() -> str:
            from napari_lesion_diffkd.core.store import (
                ImportReport,
                InvalidInputError,
                ProjectStore,
                import_folder,
                import_image,
            )

            report = ImportReport()  # counts only what was added; names the duplicates
            with ProjectStore(project) as store:
                for p in map(Path, paths):
                    if p.is_dir() and ((p / "images").is_dir() or not _is_dicom_series(p)):
                        report.add(import_folder(store, p, modality=modality,
                                                 skip_invalid=True))
                        continue
                    try:  # an image file or a DICOM series folder
                        report.add(import_image(store, p, modality=modality))
                    except InvalidInputError as exc:
                        report.skipped.append((str(p), str(exc)))
            return report.summary()

        from napari_lesion_diffkd.plugin._workers import start_function_worker

        self.status.setText("importing...")
        self.worker = start_function_worker(work, on_result=self._after_import,
                                            on_error=self._on_error,
                                            on_finished=self._worker_done)

    def refresh_queue(self) -> None:
        """Re-read the queue from the store (a few quick queries)."""
        from napari_lesion_diffkd.plugin._queue import queue_rows

        store = self.context.store
        rows = [] if store is None else queue_rows(store)
        self.queue_table.show_rows(rows, None if self.current is None else self.current["id"])

    # -- navigation ----------------------------------------------------------------------
    def open_row(self, index: int) -> None:
        """Open the queue's ``index``-th image (saving the current image's edits first)."""
        rows = self.queue_table.rows
        if not 0 <= index < len(rows) or self.worker is not None:
            return
        self.autosave("image change")
        self.queue_table.selectRow(index)
        project, image_id = self.context.project_path, rows[index].image_id

        def work() -> Any:
            from napari_lesion_diffkd.plugin._queue import load_for_viewing

            return load_for_viewing(project, image_id)

        from napari_lesion_diffkd.plugin._workers import start_function_worker

        self.status.setText(f"opening {rows[index].name}...")
        self.worker = start_function_worker(work, on_result=self._show, on_error=self._on_error,
                                            on_finished=self._worker_done)

    def next_image(self) -> None:
        """Open the next image of the queue (the first when none is open)."""
        self._step(+1)

    def previous_image(self) -> None:
        """Open the previous image of the queue."""
        self._step(-1)

    def _step(self, delta: int) -> None:
        index = self.queue_table.index_of(None if self.current is None else self.current["id"])
        self.open_row(0 if index is None else index + delta)

    # -- saving --------------------------------------------------------------------------
    def save(self, note: str | None = None) -> Any:
        """Save the chosen labels layer as a ``human`` version (after retrying earlier
        failed saves); returns the Future or None."""
        if self.save_queue is not None and self.save_queue.failed_saves:
            self.save_queue.retry_failed()
        layer = self.source_layer()
        if layer is None:
            self.status.setText("nothing to save: open an image and segment or draw it")
            return None
        return self._submit(layer, note or f"saved from {layer.name}")

    def autosave(self, reason: str) -> bool:
        """Save the open image's edited label / consensus if there is one; True if queued."""
        if self.current is None:
            return False
        for layer in self._candidate_layers():
            if is_dirty(layer):
                self._submit(layer, f"autosave ({reason}) from {layer.name}")
                return True
        return False

    def source_layer(self) -> Any:
        """The layer Save writes: the chosen one, or by "auto": an edited label, an edited
        consensus, the consensus, the label (in this order)."""
        chosen = self.source_combo.currentText()
        if chosen and chosen != AUTO_SOURCE:
            return self.viewer.layers[chosen] if chosen in self.viewer.layers else None
        candidates = self._candidate_layers()
        dirty = [layer for layer in candidates if is_dirty(layer)]
        return (dirty or candidates[::-1] or [None])[0]

    def _candidate_layers(self) -> list[Any]:
        """The open image's ``label`` then ``consensus`` layers that exist."""
        from napari_lesion_diffkd.plugin._layer_ops import find_managed

        if self.current is None:
            return []
        name = self.current["name"]
        found = [find_managed(self.viewer, name, "label", "project"),
                 find_managed(self.viewer, name, "consensus", "segment")]
        return [layer for layer in found if layer is not None]

    def _submit(self, layer: Any, note: str) -> Any:
        from napari_lesion_diffkd.plugin._layer_ops import set_clean
        from napari_lesion_diffkd.plugin._save_queue import PendingSave

        if self.save_queue is None or self.current is None:
            return None
        labels = np.array(layer.data, copy=True)  # the queue writes this copy
        if labels.ndim == len(self.current["shape"]) + 1 and labels.shape[0] == 1:
            labels = labels[0]
        marker = managed(layer) or {}
        # "sam-assisted" when the correction panel accepted a prompt-refined mask into it.
        item = PendingSave(self.current["id"], labels, marker.get("save_kind", "human"),
                           note, layer.name)
        self.log.mark_save(item, layer)  # the log up to here rebuilds this save
        if marker:
            set_clean(layer)  # its content is now on its way to the store
        self.status.setText(f"saving {self.current['name']}...")
        future = self.save_queue.submit(item)
        self.log.saving(item, future)
        return future

    # -- callbacks (GUI thread) ----------------------------------------------------------
    def _on_project_changed(self, path: Any) -> None:
        if self.save_queue is not None:
            self.save_queue.flush()  # the old project's saves land in the old project
            self.save_queue = None
        self.current = None
        if path is not None:
            from napari_lesion_diffkd.plugin._save_queue import SaveQueue

            self.save_queue = SaveQueue(path)
            self.save_queue.saved.connect(self._on_saved)
            self.save_queue.failed.connect(self._on_save_failed)
        self.path_label.setText(str(path) if path else "no project")
        self._set_enabled(path is not None)
        self.refresh_queue()
        self.status.setText(f"{len(self.queue_table.rows)} images" if path else "no project")

    def _after_import(self, message: str) -> None:
        self.status.setText(message)
        self.refresh_queue()

    def _show(self, opened: Any) -> None:
        from napari_lesion_diffkd.plugin._layer_ops import apply_result, remove_image_layers

        if self.current is not None:
            remove_image_layers(self.viewer, self.current["name"])
            old = self.current.get("layer")
            if old is not None and old in self.viewer.layers:
                self.viewer.layers.remove(old)
        data, kwargs, _ = opened.layer
        image = self.viewer.add_image(data, **kwargs)
        self.current = {"id": opened.record.id, "name": image.name, "layer": image,
                        "shape": tuple(opened.record.shape)}
        parts = [f"{opened.record.name} ({opened.record.modality or 'modality unknown'})"]
        if opened.prediction is not None:
            apply_result(self.viewer, opened.prediction, image, model=opened.prediction_model)
            parts.append(f"cached prediction of {opened.prediction_model}")
        if opened.label is not None:
            self._show_label(image, opened.label, opened.label_version)
            parts.append(f"label v{opened.label_version.id} ({opened.label_version.kind})")
        elif opened.prediction is None:
            # Nothing to start from: an empty label layer to draw on (saved once drawn).
            self._show_label(image, np.zeros(opened.record.shape, np.uint8), None)
            parts.append("no label yet")
        self.context.image_opened.emit(image.name)
        self.status.setText("; ".join(parts))
        self.refresh_queue()

    def _show_label(self, image: Any, labels: np.ndarray, version: Any,
                    visible: bool = True) -> None:
        from napari_lesion_diffkd.plugin._layer_ops import find_managed
        from napari_lesion_diffkd.plugin._layers import digest

        meta = model_meta("label", image.name, "project", None, digest(labels),
                          version=None if version is None else version.id,
                          kind=None if version is None else version.kind)
        layer = find_managed(self.viewer, image.name, "label", "project")
        if layer is None:
            self.viewer.add_labels(labels, name=f"{image.name} label", scale=image.scale,
                                   translate=image.translate, opacity=0.5, metadata=meta,
                                   visible=visible)
        else:
            layer.data = labels
            layer.metadata = {**layer.metadata, **meta}

    def _on_saved(self, item: Any, version: Any) -> None:
        self.log.link_save(item, version)
        self.status.setText(f"saved label v{version.id} ({version.kind}) of image "
                            f"{item.image_id}: {item.note}")
        current = self.current
        if current is not None and item.image_id == current["id"] \
                and current["layer"] in self.viewer.layers:
            label = self._candidate_layers()[:1]
            label_layer = label[0] if label and managed(label[0])["role"] == "label" else None
            if label_layer is None or (label_layer.name != item.source
                                       and not is_dirty(label_layer)):
                # Show what the store now holds as this image's label.
                self._show_label(current["layer"], item.labels, version,
                                 visible=label_layer is not None and label_layer.visible)
        self.refresh_queue()

    def _on_save_failed(self, item: Any, message: str) -> None:
        self.status.setText(f"SAVE FAILED for image {item.image_id} ({message}); the labels "
                            "are kept: press Save to retry")

    def _save_before_replace(self, layer: Any) -> None:
        marker = managed(layer)
        if self.current is not None and marker and marker.get("image") == self.current["name"]:
            self._submit(layer, f"autosave (before a new run) from {layer.name}")

    def _on_removing(self, event: Any) -> None:
        if not isinstance(event.index, int):
            return
        layer = self.viewer.layers[event.index]
        if layer in self._candidate_layers() and is_dirty(layer):
            self._submit(layer, f"autosave (layer removed) from {layer.name}")

    def _on_job_finished(self, _job: Any) -> None:
        self.refresh_queue()

    def on_viewer_closing(self) -> None:
        """Save edits and wait for every queued save (the window is closing)."""
        self.autosave("viewer closing")
        if self.save_queue is not None:
            self.save_queue.flush()
            self.log.link_finished()  # the saved signals may never arrive while closing

    def _refresh_sources(self, *_: Any) -> None:
        current = self.source_combo.currentText()
        names = [AUTO_SOURCE] + [layer.name for layer in self.viewer.layers
                                 if layer.__class__.__name__ == "Labels"]
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItems(names)
        self.source_combo.setCurrentText(current if current in names else AUTO_SOURCE)
        self.source_combo.blockSignals(False)

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"error: {exc}")

    def _worker_done(self) -> None:
        self.worker = None

    def _set_enabled(self, on: bool) -> None:
        for w in (self.import_files_button, self.import_folder_button, self.prev_button,
                  self.next_button, self.save_button):
            w.setEnabled(on)

    # -- dialogs -------------------------------------------------------------------------
    def _browse_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder (new or existing)")
        if folder:
            self.open_project(folder)

    def _browse_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Images to import")
        if files:
            self.import_paths(files)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder (images/ + masks/, or images)")
        if folder:
            self.import_paths([folder])


class _CloseWatcher(QObject):
    """Calls :meth:`ProjectWidget.on_viewer_closing` when the main window closes."""

    def __init__(self, widget: ProjectWidget) -> None:
        super().__init__(widget)
        self.widget = widget

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Close:
            self.widget.on_viewer_closing()
        return False


def _is_dicom_series(folder: Path) -> bool:
    from napari_lesion_diffkd.core.data.readers import is_supported

    return is_supported(folder)


def _call_on_quit(widget: ProjectWidget) -> None:
    """Run ``widget.on_viewer_closing`` when the application quits, without the application
    (which outlives every viewer) holding the widget: a weak reference, and the connection
    dropped when the widget goes. A bound method or a lambda on ``aboutToQuit`` kept a closed
    viewer's panel, its layers and its store alive until the process ended."""
    app = QApplication.instance()
    widget_ref = weakref.ref(widget)

    def on_quit() -> None:
        target = widget_ref()
        if target is not None:
            try:
                target.on_viewer_closing()
            except RuntimeError:  # its C++ side is gone already: nothing left to save
                pass

    app.aboutToQuit.connect(on_quit)

    def disconnect(*_: Any) -> None:
        try:
            app.aboutToQuit.disconnect(on_quit)
        except (RuntimeError, TypeError):  # already gone at interpreter exit
            pass

    widget.destroyed.connect(disconnect)
