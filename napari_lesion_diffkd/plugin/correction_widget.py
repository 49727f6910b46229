"""Dock widget "Correct segmentation": start from the consensus, a sample or nothing,
(optionally) refine with prompts, then accept or reject; undo / redo accepted outputs.

The proposal lives in its own labels layer (``<image> proposal``) that the user may also
paint on. Accept copies it into the target layer (``<image> label``, the layer the project
panel saves; created when missing) and records the change for Undo / Redo; Reject drops it.

Prompting is a hook: :meth:`CorrectionWidget.set_backend` takes an object following
:class:`._correction.CorrectionBackend` (SAM, from ``core/sam``, is being built separately).
"Refine with prompts" then sends the image, the proposal and the clicks of the
``<image> prompts`` points layer (positive by default; tick "negative clicks" for
background) to the backend in a worker thread. Without a backend the button is disabled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_diffkd.plugin._correction import START_SOURCES, LabelHistory

if TYPE_CHECKING:
    import napari

NO_BACKEND = "prompt model: none registered (SAM prompting is added by core/sam)"


class CorrectionWidget(QWidget):
    """Start / refine / accept / reject / undo / redo on one image's labels.

    Public attributes used by tests and scripts: ``image_combo``, ``source_combo``,
    ``sample_spin``, ``start_button``, ``refine_button``, ``negative_check``,
    ``accept_button``, ``reject_button``, ``undo_button``, ``redo_button``, ``status``,
    ``backend``, ``history``, ``worker``.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from napari_lesion_diffkd.plugin._context import app_context

        self.viewer = napari_viewer
        self.context = app_context(napari_viewer)
        self.backend: Any = None
        self.history = LabelHistory()
        self.worker: Any = None
        self._refined = False
        self._history_target: Any = None

        self.image_combo = QComboBox()
        self.source_combo = QComboBox()
        self.source_combo.addItems(list(START_SOURCES))
        self.sample_spin = QSpinBox()
        self.sample_spin.setRange(1, 64)
        self.start_button = QPushButton("Start proposal")
        self.backend_label = QLabel(NO_BACKEND)
        self.backend_label.setWordWrap(True)
        self.negative_check = QCheckBox("negative clicks")
        self.refine_button = QPushButton("Refine with prompts")
        self.refine_button.setEnabled(False)
        self.accept_button = QPushButton("Accept")
        self.reject_button = QPushButton("Reject")
        self.undo_button = QPushButton("Undo accept")
        self.redo_button = QPushButton("Redo accept")
        self.status = QLabel("segment an image, then start a proposal")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("start from", self.source_combo)
        form.addRow("sample", self.sample_spin)
        grid = QGridLayout()
        grid.addWidget(self.accept_button, 0, 0)
        grid.addWidget(self.reject_button, 0, 1)
        grid.addWidget(self.undo_button, 1, 0)
        grid.addWidget(self.redo_button, 1, 1)
        layout = QVBoxLayout(self)
        for item in (form, self.start_button, self.backend_label, self.negative_check,
                     self.refine_button, grid, self.status):
            (layout.addLayout if not isinstance(item, QWidget) else layout.addWidget)(item)
        layout.addStretch(1)

        self.start_button.clicked.connect(self.start)
        self.refine_button.clicked.connect(self.refine)
        self.accept_button.clicked.connect(self.accept)
        self.reject_button.clicked.connect(self.reject)
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.negative_check.toggled.connect(self._on_negative)
        self.image_combo.currentTextChanged.connect(lambda _: self.history.clear())
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.refresh_images)
        self.refresh_images()
        self._sync_buttons()

    # -- hook ----------------------------------------------------------------------------
    def set_backend(self, backend: Any) -> None:
        """Register a prompt backend (see :class:`._correction.CorrectionBackend`); None
        removes it."""
        self.backend = backend
        self.backend_label.setText(NO_BACKEND if backend is None
                                   else f"prompt model: {backend.name}")
        self._sync_buttons()

    # -- actions -------------------------------------------------------------------------
    def start(self) -> Any:
        """Create (or reset) the proposal layer from the chosen start; returns it."""
        from napari_lesion_diffkd.plugin._correction import start_mask
        from napari_lesion_diffkd.plugin._layer_ops import find_managed
        from napari_lesion_diffkd.plugin._layers import model_meta

        image = self._image()
        if image is None:
            return None
        consensus = find_managed(self.viewer, image.name, "consensus")
        samples = find_managed(self.viewer, image.name, "samples")
        shape = np.asarray(image.data).shape[:image.ndim]
        try:
            mask = start_mask(self.source_combo.currentText(), shape,
                              None if consensus is None else consensus.data,
                              None if samples is None else samples.data,
                              self.sample_spin.value() - 1)
        except ValueError as exc:
            self.status.setText(str(exc))
            return None
        layer = self._proposal(image)
        if layer is None:
            layer = self.viewer.add_labels(
                mask, name=f"{image.name} proposal", scale=image.scale,
                translate=image.translate, opacity=0.6,
                # Its own colour, so it stands out over the consensus it started from.
                colormap={0: "transparent", 1: "cyan", None: "cyan"},
                metadata=model_meta("proposal", image.name, "correction"))
        else:
            layer.data = mask
        self._refined = False
        if self.backend is not None:
            self._prompts(image, create=True)
        self.viewer.layers.selection.active = layer  # ready for the brush, too
        self.status.setText(f"proposal from {self.source_combo.currentText()}: edit it, "
                            "refine it, then Accept or Reject")
        self._sync_buttons()
        return layer

    def refine(self) -> None:
        """Send image, proposal and clicks to the backend (worker thread)."""
        from napari_lesion_diffkd.plugin._correction import CorrectionRequest
        from napari_lesion_diffkd.plugin._layer_ops import current_slice
        from napari_lesion_diffkd.plugin._workers import start_function_worker

        image = self._image()
        proposal = None if image is None else self._proposal(image)
        if self.backend is None or proposal is None or self.worker is not None:
            return
        z = current_slice(self.viewer, image) if image.ndim == 3 else None
        pixels = np.asarray(image.data if z is None else image.data[z])
        start = np.asarray(proposal.data if z is None else proposal.data[z]) > 0
        prompts = self._prompts(image, create=False)
        points = np.zeros((0, 2)) if prompts is None else np.asarray(prompts.data)[:, -2:]
        labels = np.ones(len(points), int) if prompts is None or not len(points) else \
            np.asarray(prompts.features["positive"], bool).astype(int)
        if z is not None and prompts is not None and len(points):  # this slice's clicks only
            keep = np.round(np.asarray(prompts.data)[:, 0]).astype(int) == z
            points, labels = points[keep], labels[keep]
        request = CorrectionRequest(pixels, start, points, labels, key=(image.name, z))
        backend = self.backend

        def done(mask: Any) -> None:
            mask = np.asarray(mask, bool).astype(np.uint8)
            if z is None:
                proposal.data = mask
            else:
                proposal.data[z] = mask
                proposal.refresh()
            self._refined = True
            self.status.setText(f"refined by {backend.name}: Accept or Reject")

        self.status.setText(f"asking {backend.name}...")
        self.worker = start_function_worker(
            lambda: backend.propose(request), on_result=done,
            on_error=lambda exc: self.status.setText(f"prompt model failed: {exc}"),
            on_finished=self._worker_done)

    def accept(self) -> Any:
        """Copy the proposal into the target label layer (undoable); returns the target."""
        from napari_lesion_diffkd.plugin._layers import META_KEY

        image = self._image()
        proposal = None if image is None else self._proposal(image)
        if proposal is None:
            self.status.setText("no proposal to accept: Start one first")
            return None
        target = self._target(image)
        after = np.array(proposal.data, copy=True).astype(target.data.dtype)
        self._record(target, np.array(target.data, copy=True), after, "accept proposal")
        target.data = after
        if self._refined:  # the store records prompt-made labels as their own kind
            marker = dict(target.metadata.get(META_KEY, {}))
            marker["save_kind"] = "sam-assisted"
            target.metadata = {**target.metadata, META_KEY: marker}
        self._drop_proposal(image)
        self.status.setText(f"accepted into {target.name} (Undo accept to revert)")
        self._sync_buttons()
        return target

    def reject(self) -> None:
        """Drop the proposal; the target layer is unchanged."""
        image = self._image()
        if image is not None:
            self._drop_proposal(image)
        self.status.setText("proposal rejected")
        self._sync_buttons()

    def undo(self) -> None:
        """Revert the last accepted proposal."""
        self._apply_history(self.history.undo(), "undo")

    def redo(self) -> None:
        """Re-apply the last undone accept."""
        self._apply_history(self.history.redo(), "redo")

    # -- internals -----------------------------------------------------------------------
    def refresh_images(self, *_: Any) -> None:
        """List the viewer's own image layers."""
        from napari_lesion_diffkd.plugin._layer_ops import refresh_image_combo

        refresh_image_combo(self.image_combo, self.viewer)

    def _image(self) -> Any:
        name = self.image_combo.currentText()
        if name not in self.viewer.layers:
            self.status.setText("select an image layer first")
            return None
        return self.viewer.layers[name]

    def _proposal(self, image: Any) -> Any:
        from napari_lesion_diffkd.plugin._layer_ops import find_managed

        return find_managed(self.viewer, image.name, "proposal", "correction")

    def _prompts(self, image: Any, create: bool) -> Any:
        from napari_lesion_diffkd.plugin._layer_ops import find_managed
        from napari_lesion_diffkd.plugin._layers import model_meta

        layer = find_managed(self.viewer, image.name, "prompts", "correction")
        if layer is None and create:
            layer = self.viewer.add_points(
                np.zeros((0, image.ndim)), name=f"{image.name} prompts", scale=image.scale,
                translate=image.translate, size=8, features={"positive": np.zeros(0, bool)},
                feature_defaults={"positive": True},
                metadata=model_meta("prompts", image.name, "correction"))
            layer.mode = "add"
        return layer

    def _target(self, image: Any) -> Any:
        """``<image> label`` (the project panel's layer), created empty when missing."""
        from napari_lesion_diffkd.plugin._layer_ops import find_managed
        from napari_lesion_diffkd.plugin._layers import digest, model_meta

        layer = find_managed(self.viewer, image.name, "label", "project")
        if layer is None:
            empty = np.zeros(np.asarray(image.data).shape[:image.ndim], np.uint8)
            layer = self.viewer.add_labels(
                empty, name=f"{image.name} label", scale=image.scale,
                translate=image.translate, opacity=0.5,
                metadata=model_meta("label", image.name, "project", None, digest(empty)))
        return layer

    def _record(self, target: Any, before: np.ndarray, after: np.ndarray, what: str) -> None:
        if self._history_target is not target:
            self.history.clear()  # undo applies to one layer at a time
            self._history_target = target
        self.history.push(before, after, what)

    def _apply_history(self, entry: Any, verb: str) -> None:
        target = self._history_target
        if entry is None or target is None or target not in self.viewer.layers:
            self.status.setText(f"nothing to {verb}")
            return
        data, what = entry
        target.data = data
        self.status.setText(f"{verb}: {what}")
        self._sync_buttons()

    def _drop_proposal(self, image: Any) -> None:
        for layer in (self._proposal(image), self._prompts(image, create=False)):
            if layer is not None:
                self.viewer.layers.remove(layer)

    def _on_negative(self, negative: bool) -> None:
        image = self._image() if self.image_combo.currentText() else None
        prompts = None if image is None else self._prompts(image, create=False)
        if prompts is not None:
            prompts.feature_defaults = {"positive": not negative}

    def _worker_done(self) -> None:
        self.worker = None

    def _sync_buttons(self) -> None:
        self.refine_button.setEnabled(self.backend is not None)
        self.undo_button.setEnabled(self.history.can_undo)
        self.redo_button.setEnabled(self.history.can_redo)
