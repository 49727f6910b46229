"""Dock widget "Correct segmentation": start from the consensus, a sample or nothing,
refine with SAM prompts (points and a box, the mask updating live), then accept or reject;
undo / redo.

The proposal lives in its own labels layer (``<image> proposal``) that the user may also
paint on. Accept copies it into the target layer (``<image> label``, the layer the project
panel saves; created when missing) through napari's own labels history
(``_layer_ops.write_labels``), so accepts, model outputs and brush strokes are one history:
Undo / Redo here and napari's Ctrl-Z walk through them in order and drop nothing; Reject
drops the proposal.

Prompting: the SAM picker (``_sam_models.SamModelBox``, ``lesion-sam-tiny`` by default)
loads a model in a worker and registers it with :meth:`CorrectionWidget.set_backend` (any
object following :class:`._correction.CorrectionBackend` works). With a backend, Start adds
two prompt layers: ``<image> prompts`` (points; positive = lesion in green, tick "negative
clicks" for background, magenta) and ``<image> box`` (shapes; draw one rectangle). Every
finished change of either layer (add, move, delete) restarts a 120 ms debounce timer; when
it fires, the image, the start mask and all prompts of the slice go to the backend in a
worker thread (:meth:`CorrectionWidget.refine` does the same at once). One request runs at
a time: a change during a request queues one more, and a result whose prompts have changed
since it was asked for is dropped (stale). The start mask is the proposal as it was before
the first prompt (brush edits made before prompting count), so removing every prompt
restores it; brush edits after a prompt are replaced by the next prompt's mask.

Guidance (``_guidance``): "Next uncertain region" (Shift-N) centres and zooms the view on the
most uncertain region of the image's uncertainty layer not yet reviewed and marks it
reviewed; "Accept as is" (Shift-Enter) accepts the proposal, or the chosen start (the
consensus by default) when no proposal is open, without any prompt. Every prompt, model
call, accept and undo / redo goes to the project's interaction log (``_interaction_log``).

Background embedding: as soon as an image is shown (chosen in the panel, a SAM loaded, a
proposal started), its embedding is computed in a worker (``_sam_prefetch.
EmbeddingPrefetch``), so a prompt then runs only the decoder; "Cancel embedding" stops it,
and a prompt given before it is ready is answered as soon as it is.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
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

from napari_lesion_diffkd.plugin._correction import START_SOURCES
from napari_lesion_diffkd.plugin._sam_models import SamModelBox
from napari_lesion_diffkd.plugin._sam_prefetch import EmbeddingPrefetch

if TYPE_CHECKING:
    import napari

NO_BACKEND = "prompt model: none (choose a SAM above)"
DEBOUNCE_MS = 120  # quiet time after a prompt change before SAM runs (a drag ends, a click)
_DONE_ACTIONS = ("added", "removed", "changed")  # napari data-event actions worth a request


def _samples_of(samples: Any, consensus: Any) -> Any:
    """The K sample masks: the samples layer's data, else those the consensus layer keeps
    (a 2D image's samples get no layer of their own, see ``_layer_ops.apply_result``)."""
    from napari_lesion_diffkd.plugin._layers import managed

    if samples is not None:
        return samples.data
    marker = None if consensus is None else managed(consensus)
    return None if marker is None else marker.get("samples")


class CorrectionWidget(QWidget):
    """Start / prompt / accept / reject / undo / redo on one image's labels.

    Args:
        napari_viewer: the viewer.
        autoload_sam: load the default SAM (``lesion-sam-tiny``) when the panel opens.

    Public attributes used by tests and scripts: ``image_combo``, ``source_combo``,
    ``sample_spin``, ``start_button``, ``sam_models`` (:class:`SamModelBox`),
    ``live_check``, ``refine_button``, ``negative_check``, ``accept_button``,
    ``reject_button``, ``undo_button``, ``redo_button``, ``next_region_button``,
    ``accept_as_is_button``, ``guide`` (:class:`._guidance.RegionGuide`), ``log``
    (:class:`._interaction_log.InteractionLog`), ``status``, ``backend``,
    ``worker`` (the running prompt request), ``proposals`` (backend answers
    shown), ``dropped`` (stale answers dropped), ``is_busy``, ``prefetch``
    (:class:`EmbeddingPrefetch`), ``cancel_embed_button``, ``embed_status``.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, autoload_sam: bool = True) -> None:
        super().__init__()
        from napari_lesion_diffkd.plugin._context import app_context
        from napari_lesion_diffkd.plugin._guidance import RegionGuide
        from napari_lesion_diffkd.plugin._interaction_log import interaction_log

        self.viewer = napari_viewer
        self.context = app_context(napari_viewer)
        self.log = interaction_log(napari_viewer)
        self.guide = RegionGuide(napari_viewer)
        self._asked_at = 0.0
        self.backend: Any = None
        self.worker: Any = None
        self.proposals = 0
        self.dropped = 0
        self._refined = False
        self._history_target: Any = None  # the label layer Undo / Redo act on
        self._base: np.ndarray | None = None  # the start mask the prompts refine
        self._generation = 0  # bumped by every prompt change; older answers are stale
        self._pending = False
        self._epoch = 0  # bumped by Start / Accept / Reject: answers for older proposals drop
        self._inflight: tuple = ()  # what the running request was asked with

        self.image_combo = QComboBox()
        self.source_combo = QComboBox()
        self.source_combo.addItems(list(START_SOURCES))
        self.sample_spin = QSpinBox()
        self.sample_spin.setRange(1, 64)
        self.start_button = QPushButton("Start proposal")
        self.sam_models = SamModelBox(self.context, autoload=autoload_sam)
        self.backend_label = QLabel(NO_BACKEND)
        self.backend_label.setWordWrap(True)
        self.prefetch = EmbeddingPrefetch(self)
        self.embed_status = QLabel("")
        self.embed_status.setWordWrap(True)
        self.cancel_embed_button = QPushButton("Cancel embedding")
        self.cancel_embed_button.setEnabled(False)
        self.live_check = QCheckBox("live: update the mask as prompts change")
        self.live_check.setChecked(True)
        self.negative_check = QCheckBox("negative clicks (background)")
        self.refine_button = QPushButton("Refine with prompts")
        self.refine_button.setEnabled(False)
        self.accept_button = QPushButton("Accept")
        self.reject_button = QPushButton("Reject")
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.undo_button.setToolTip("Undo the last change of the label layer: an accept or "
                                    "a brush stroke (the same history as napari's Ctrl-Z)")
        self.redo_button.setToolTip("Redo the last undone change of the label layer")
        from napari_lesion_diffkd.plugin._guidance import ACCEPT_AS_IS_KEY, NEXT_REGION_KEY

        self.next_region_button = QPushButton(f"Next uncertain region ({NEXT_REGION_KEY})")
        self.next_region_button.setToolTip(
            "Centre and zoom on the most uncertain region not yet reviewed (from the "
            "image's uncertainty layer) and mark it reviewed")
        self.accept_as_is_button = QPushButton(f"Accept as is ({ACCEPT_AS_IS_KEY})")
        self.accept_as_is_button.setToolTip(
            "Accept the proposal, or the chosen start (consensus) when none is open, "
            "without prompting")
        self.status = QLabel("segment an image, then start a proposal")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("start from", self.source_combo)
        form.addRow("sample", self.sample_spin)
        form.addRow("SAM", self.sam_models)
        grid = QGridLayout()
        grid.addWidget(self.accept_button, 0, 0)
        grid.addWidget(self.reject_button, 0, 1)
        grid.addWidget(self.undo_button, 1, 0)
        grid.addWidget(self.redo_button, 1, 1)
        grid.addWidget(self.next_region_button, 2, 0)
        grid.addWidget(self.accept_as_is_button, 2, 1)
        layout = QVBoxLayout(self)
        for item in (form, self.start_button, self.backend_label, self.embed_status,
                     self.cancel_embed_button, self.live_check,
                     self.negative_check, self.refine_button, grid, self.status):
            (layout.addLayout if not isinstance(item, QWidget) else layout.addWidget)(item)
        layout.addStretch(1)
        from napari_lesion_diffkd.plugin._panel_layout import make_scrollable

        make_scrollable(self)  # fits a laptop screen with every panel open (_panel_layout)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._propose)
        self.start_button.clicked.connect(self.start)
        self.refine_button.clicked.connect(self.refine)
        self.accept_button.clicked.connect(self.accept)
        self.reject_button.clicked.connect(self.reject)
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.next_region_button.clicked.connect(self.next_region)
        self.accept_as_is_button.clicked.connect(self.accept_as_is)
        import weakref

        me = weakref.ref(self)  # the viewer's keymap must not keep a closed panel alive
        napari_viewer.bind_key(NEXT_REGION_KEY, lambda _v: (w := me()) and w.next_region(),
                               overwrite=True)
        napari_viewer.bind_key(ACCEPT_AS_IS_KEY, lambda _v: (w := me()) and w.accept_as_is(),
                               overwrite=True)
        self.negative_check.toggled.connect(self._on_negative)
        self.sam_models.loaded.connect(self.set_backend)
        self.sam_models.failed.connect(self.status.setText)
        self.image_combo.currentTextChanged.connect(lambda _: self._sync_buttons())
        self.image_combo.currentTextChanged.connect(lambda _: self.prefetch_image())
        self.cancel_embed_button.clicked.connect(self.prefetch.cancel)
        self.prefetch.changed.connect(self._on_prefetch_state)
        self.prefetch.idle.connect(self._sync_buttons)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.refresh_images)
        self.refresh_images()
        self._sync_buttons()

    # -- hook ----------------------------------------------------------------------------
    def set_backend(self, backend: Any) -> None:
        """Register a prompt backend (see :class:`._correction.CorrectionBackend`); None
        removes it. An open proposal gets its prompt layers."""
        self.backend = backend
        self.backend_label.setText(NO_BACKEND if backend is None
                                   else f"prompt model: {backend.name}")
        image = self._image(quiet=True)
        if backend is not None and image is not None and self._proposal(image) is not None:
            self._prompts(image, create=True)
            self._boxes(image, create=True)
        self._sync_buttons()
        self.prefetch_image()

    def prefetch_image(self) -> None:
        """Start the shown image's (or slice's) embedding in the background."""
        from napari_lesion_diffkd.plugin._layer_ops import current_slice

        image = self._image(quiet=True)
        if self.backend is None or image is None:
            return
        z = current_slice(self.viewer, image) if image.ndim == 3 else None
        pixels = np.asarray(image.data if z is None else image.data[z])
        self.prefetch.start(self.backend, pixels, (image.name, z))  # build_request's key
        self._sync_buttons()

    def _on_prefetch_state(self, text: str) -> None:
        self.embed_status.setText(text)
        self._sync_buttons()

    @property
    def is_busy(self) -> bool:
        """A prompt request runs or waits for its debounce."""
        return self.worker is not None or self._debounce.isActive() or self._pending

    # -- actions -------------------------------------------------------------------------
    def start(self) -> Any:
        """Create (or reset) the proposal layer from the chosen start, and clear the
        prompts; returns the proposal layer."""
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
                              _samples_of(samples, consensus),
                              self.sample_spin.value() - 1)
        except ValueError as exc:
            self.status.setText(str(exc))
            return None
        prompts, boxes = self._prompts(image, create=False), self._boxes(image, create=False)
        if prompts is not None and len(prompts.data):
            prompts.data = np.zeros((0, image.ndim))
        if boxes is not None and len(boxes.data):
            boxes.data = []
        self._debounce.stop()  # a new start: no request for the old prompts
        self._pending = False
        self._epoch += 1
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
        self._base = mask.copy()
        self._refined = False
        self.prefetch_image()  # a no-op cache hit unless the image or slice changed
        active = layer  # ready for the brush
        if self.backend is not None:
            self._boxes(image, create=True)
            active = self._prompts(image, create=True)  # ready for clicks
        self.viewer.layers.selection.active = active
        self.status.setText(f"proposal from {self.source_combo.currentText()}: "
                            + ("click points or draw a box, " if self.backend else "")
                            + "edit it, then Accept or Reject")
        self._sync_buttons()
        return layer

    def refine(self) -> None:
        """Send the image, the start mask and the prompts to the backend now."""
        self._debounce.stop()
        self._propose()

    def accept(self) -> Any:
        """Copy the proposal into the target label layer (undoable); returns the target."""
        from napari_lesion_diffkd.plugin._layer_ops import write_labels
        from napari_lesion_diffkd.plugin._layers import META_KEY

        image = self._image()
        proposal = None if image is None else self._proposal(image)
        if proposal is None:
            self.status.setText("no proposal to accept: Start one first")
            return None
        target = self._target(image)
        self._watch(target)
        with self.log.cause("accept", {"refined": self._refined}):
            write_labels(target, proposal.data)  # one step of the layer's own undo history
        if self._refined:  # the store records prompt-made labels as their own kind
            marker = dict(target.metadata.get(META_KEY, {}))
            marker["save_kind"] = "sam-assisted"
            target.metadata = {**target.metadata, META_KEY: marker}
        self._drop_proposal(image)
        self.status.setText(f"accepted into {target.name} (Undo to revert)")
        self._sync_buttons()
        return target

    def accept_as_is(self) -> Any:
        """Accept without prompting: the open proposal, else the chosen start (the
        consensus by default) right away; returns the target layer."""
        image = self._image()
        if image is None:
            return None
        if self._proposal(image) is None and self.start() is None:
            return None
        with self.log.cause("accept", {"as_is": True}):
            return self.accept()

    def next_region(self) -> dict[str, Any] | None:
        """Centre and zoom on the most uncertain region not yet reviewed (see
        ``_guidance.RegionGuide``); returns its description, or None."""
        image = self._image()
        if image is None:
            return None
        shown = self.guide.next_region(image)
        if shown is None:
            found = self.guide.queue(image)
            self.status.setText("no uncertainty map: segment the image first" if found is None
                                else "every uncertain region was reviewed")
            return None
        self.status.setText(f"uncertain region {shown['reviewed']} ({shown['pixels']} px, "
                            f"{shown['left']} left): correct it or go on")
        return shown

    def reject(self) -> None:
        """Drop the proposal; the target layer is unchanged."""
        image = self._image()
        if image is not None:
            self._drop_proposal(image)
        self.status.setText("proposal rejected")
        self._sync_buttons()

    def undo(self) -> None:
        """Undo the label layer's last change (an accept or a brush stroke), as Ctrl-Z."""
        self._apply_history("undo")

    def redo(self) -> None:
        """Redo the label layer's last undone change."""
        self._apply_history("redo")

    # -- prompting -----------------------------------------------------------------------
    def _on_prompt_change(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(getattr(action, "value", action)) not in _DONE_ACTIONS:
            return  # "adding", "changing": the change is not finished yet
        self._generation += 1
        if str(getattr(action, "value", action)) == "added":
            self._log_prompt(getattr(event, "source", None))
        if self.backend is not None and self.live_check.isChecked():
            self._debounce.start()  # restarts: one request per quiet period

    def _propose(self) -> None:
        from napari_lesion_diffkd.plugin._layer_ops import current_slice
        from napari_lesion_diffkd.plugin._sam_request import build_request
        from napari_lesion_diffkd.plugin._workers import start_function_worker

        image = self._image(quiet=True)
        proposal = None if image is None else self._proposal(image)
        if self.backend is None or proposal is None:
            return
        if self.worker is not None:
            self._pending = True  # asked again when the running request ends
            return
        if not self._refined or self._base is None or self._base.shape != proposal.data.shape:
            self._base = np.array(proposal.data, copy=True)  # brush edits before prompting
        z = current_slice(self.viewer, image) if image.ndim == 3 else None
        request = build_request(image, self._base, self._prompts(image, create=False),
                                self._boxes(image, create=False), z)
        if not len(request.points) and request.box is None:  # every prompt removed
            if not np.array_equal(proposal.data, self._base):
                proposal.data = self._base.copy()
            self._refined = False
            self.status.setText("no prompts: back to the start mask")
            return
        backend = self.backend
        self._asked_at = time.monotonic()
        self._inflight = (backend, proposal, z, self._generation, self._epoch,
                          self.live_check.isChecked())
        # Bound methods, not closures: Qt drops them if this panel is deleted first.
        self.worker = start_function_worker(lambda: backend.propose(request),
                                            on_result=self._on_proposed,
                                            on_error=self._on_propose_error,
                                            on_finished=self._worker_done)

    def _on_proposed(self, mask: Any) -> None:
        backend, proposal, z, generation, epoch, live = self._inflight
        stale = (epoch != self._epoch or proposal not in self.viewer.layers
                 or (live and generation != self._generation))
        call = {"model": backend.name, "seconds": round(time.monotonic() - self._asked_at, 4),
                "stale": stale, "z": z}
        if stale:
            self.dropped += 1  # stale: the prompts or the proposal changed meanwhile
            self.log.note(proposal.metadata.get("lesion_diffkd", {}).get("image", ""),
                          "model", call)
            return
        mask = np.asarray(mask, bool).astype(proposal.data.dtype)
        self.log.note(proposal.metadata["lesion_diffkd"]["image"], "model", call)
        with self.log.cause("model", {"model": backend.name}):
            if z is None:
                proposal.data = mask
            else:
                proposal.data[z] = mask
                proposal.refresh()
        self._refined = True
        self.proposals += 1
        last = getattr(backend, "last", None)
        score = f" (predicted IoU {last.score:.2f})" if last is not None else ""
        self.status.setText(f"refined by {backend.name}{score}: Accept or Reject")

    def _on_propose_error(self, exc: BaseException) -> None:
        self.status.setText(f"prompt model failed: {exc}")

    def _worker_done(self) -> None:
        self.worker = None
        if self._pending:
            self._pending = False
            self._propose()

    # -- internals -----------------------------------------------------------------------
    def refresh_images(self, *_: Any) -> None:
        """List the viewer's own image layers."""
        from napari_lesion_diffkd.plugin._layer_ops import refresh_image_combo

        refresh_image_combo(self.image_combo, self.viewer)

    def _image(self, quiet: bool = False) -> Any:
        name = self.image_combo.currentText()
        if name not in self.viewer.layers:
            if not quiet:
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
                feature_defaults={"positive": not self.negative_check.isChecked()},
                face_color="positive", face_color_cycle={True: "lime", False: "magenta"},
                metadata=model_meta("prompts", image.name, "correction"))
            layer.mode = "add"
            layer.events.data.connect(self._on_prompt_change)
            layer.events.features.connect(self._on_prompt_change)
        return layer

    def _boxes(self, image: Any, create: bool) -> Any:
        from napari_lesion_diffkd.plugin._layer_ops import find_managed
        from napari_lesion_diffkd.plugin._layers import model_meta

        layer = find_managed(self.viewer, image.name, "box", "correction")
        if layer is None and create:
            layer = self.viewer.add_shapes(
                ndim=image.ndim, name=f"{image.name} box", scale=image.scale,
                translate=image.translate, edge_color="yellow", face_color="transparent",
                edge_width=2, metadata=model_meta("box", image.name, "correction"))
            layer.mode = "add_rectangle"
            layer.events.data.connect(self._on_prompt_change)
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

    def _history_layer(self) -> Any:
        """The shown image's label layer (Undo / Redo act on its napari history), if any."""
        from napari_lesion_diffkd.plugin._layer_ops import find_managed

        image = self._image(quiet=True)
        layer = None if image is None else find_managed(self.viewer, image.name, "label",
                                                          "project")
        if layer is not None:
            self._watch(layer)
        return layer

    def _watch(self, layer: Any) -> None:
        """Keep Undo / Redo in step with brush strokes and napari's own Ctrl-Z."""
        if self._history_target is layer:
            return
        self._history_target = layer
        for event in (layer.events.paint, layer.events.data, layer.events.set_data):
            event.connect(self._sync_buttons)

    def _apply_history(self, verb: str) -> None:
        from napari_lesion_diffkd.plugin._layer_ops import can_redo, can_undo

        target = self._history_layer()
        able = can_undo if verb == "undo" else can_redo
        if target is None or not able(target):
            self.status.setText(f"nothing to {verb}")
            return
        with self.log.cause(verb):
            getattr(target, verb)()
        self.status.setText(f"{verb} on {target.name}")
        self._sync_buttons()

    def _log_prompt(self, layer: Any) -> None:
        """One ``prompt`` event per point clicked or box drawn (the interaction log)."""
        from napari_lesion_diffkd.plugin._layers import managed

        marker = managed(layer) if layer is not None else None
        if not marker or not len(layer.data):
            return
        if marker.get("role") == "prompts":
            positive = layer.features["positive"] if "positive" in layer.features else None
            data = {"type": "point", "point": np.asarray(layer.data[-1], float).tolist(),
                    "positive": bool(positive.iloc[-1]) if positive is not None else True}
        else:
            data = {"type": "box", "box": np.asarray(layer.data[-1], float).tolist()}
        self.log.note(str(marker.get("image")), "prompt", data)

    def _drop_proposal(self, image: Any) -> None:
        self._debounce.stop()
        self._pending = False
        self._epoch += 1  # an answer on its way has nowhere to go
        self._base = None
        for layer in (self._proposal(image), self._prompts(image, create=False),
                      self._boxes(image, create=False)):
            if layer is not None:
                self.viewer.layers.remove(layer)

    def _on_negative(self, negative: bool) -> None:
        image = self._image(quiet=True)
        prompts = None if image is None else self._prompts(image, create=False)
        if prompts is not None:
            prompts.feature_defaults = {"positive": not negative}

    def _sync_buttons(self, *_: Any) -> None:
        from napari_lesion_diffkd.plugin._layer_ops import can_redo, can_undo

        self.refine_button.setEnabled(self.backend is not None)
        self.cancel_embed_button.setEnabled(self.prefetch.is_running)
        target = self._history_layer()
        self.undo_button.setEnabled(target is not None and can_undo(target))
        self.redo_button.setEnabled(target is not None and can_redo(target))
