"""Dock widget "Lesion segmentation": image layer + model -> samples, uncertainty, consensus.

Everything slow (model loading, sampling, STAPLE) runs in a worker thread; the GUI thread
only reads the image array and adds or updates layers. Re-running replaces the image's
*model* layers (found by their metadata marker, see ``_layers``), never the user's own. For a
volume, "current slice" writes that slice into volume-shaped result layers (other slices are
kept) and "whole volume" segments every slice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_diffkd.plugin._segment_form import SCOPE_SLICE, SCOPE_VOLUME, SegmentForm

if TYPE_CHECKING:
    import napari


class SegmentWidget(QWidget):
    """Pick an image layer and a model, Run; progress bar, Cancel, STAPLE table.

    Public attributes used by tests and scripts: ``form`` (:class:`SegmentForm`) and its
    shortcuts ``image_combo``, ``picker``, ``model_combo``, ``model_info``,
    ``samples_spin``, ``steps_spin``, ``sampler_combo``, ``fusion_combo``, ``seed_spin``,
    ``device_combo``, ``backend_combo``, ``scope_combo``; ``run_button``, ``cancel_button``, ``progress``,
    ``status``, ``staple_table``, ``samples_layer_check``, ``worker`` (the running worker or None), ``last_result``
    and ``last_layers`` (role -> layer of the last run).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from napari_lesion_diffkd.plugin._context import app_context
        from napari_lesion_diffkd.plugin._segment_job import BundleCache
        from napari_lesion_diffkd.plugin._staple_table import StapleTable

        self.viewer = napari_viewer
        self.context = app_context(napari_viewer)
        self.worker: Any = None
        self.last_result: Any = None
        self.last_layers: dict[str, Any] = {}
        self.cache = BundleCache()  # loaded models, reused across runs
        self._target: dict[str, Any] = {}
        from napari_lesion_diffkd.plugin._gui_steps import GuiSteps

        self._steps = GuiSteps(self, on_error=self._on_error)

        self.form = SegmentForm(napari_viewer, self.context)
        f = self.form
        self.image_combo, self.picker = f.image_combo, f.picker
        self.model_combo, self.model_info = f.picker.combo, f.picker.info
        self.samples_spin, self.steps_spin = f.samples_spin, f.steps_spin
        self.sampler_combo, self.fusion_combo = f.sampler_combo, f.fusion_combo
        self.seed_spin, self.device_combo, self.scope_combo = \
            f.seed_spin, f.device_combo, f.scope_combo
        self.backend_combo = f.backend_combo

        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        self.staple_table = StapleTable()
        # A 2D image's K samples get no layer unless asked: a (K, Y, X) layer adds a dims
        # slider to a 2D view even when hidden (volumes always get it).
        self.samples_layer_check = QCheckBox("K samples as a layer")
        self.samples_layer_check.setToolTip(
            "add '<image> samples' (K, Y, X), hidden, for a 2D image too: it adds a slider "
            "for K; the correction panel can start from a sample either way")

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addLayout(buttons)
        layout.addWidget(self.samples_layer_check)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("STAPLE per sample"))
        layout.addWidget(self.staple_table)
        layout.addStretch(1)
        from napari_lesion_diffkd.plugin._panel_layout import make_scrollable, show_rows

        show_rows(self.staple_table, 4)
        make_scrollable(self)  # fits a laptop screen with every panel open (_panel_layout)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.context.image_opened.connect(self.select_image)
        from napari_lesion_diffkd.plugin._warmup import warm_up

        warm_up()  # the first run's imports, off the GUI thread (see _warmup)

    # -- public API ----------------------------------------------------------------------
    def select_image(self, name: str) -> None:
        """Make ``name`` the image to segment (e.g. opened by the project panel)."""
        self.form.refresh_images()
        self.image_combo.setCurrentText(name)

    def select_model(self, label: str) -> bool:
        """Select a model by its picker label; False when it is not in the catalogue."""
        return self.picker.select(label)

    def run(self) -> None:
        """Start segmentation of the selected image (or slice / volume) in a worker thread."""
        if self.worker is not None:
            return
        try:
            layer = self.form.image_layer()
            request = self.form.request()
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        data = np.asarray(layer.data)
        scope = self.form.scope()
        z = None
        if layer.ndim == 3 and scope == SCOPE_SLICE:
            from napari_lesion_diffkd.plugin._layer_ops import current_slice

            z = current_slice(self.viewer, layer)
            data = np.asarray(data[z])
        elif layer.ndim not in (2, 3):
            self.status.setText(f"layer {layer.name!r} has {layer.ndim} dims; need 2D or 3D")
            return
        volume = layer.ndim == 3 and scope == SCOPE_VOLUME
        label = self.picker.current().label
        self._target = {"name": layer.name, "z": z, "model": label}
        cache = self.cache

        def job():
            from napari_lesion_diffkd.plugin._layers import prepare_display
            from napari_lesion_diffkd.plugin._segment_job import segment_job

            result = yield from segment_job(request, data, volume, cache)
            return prepare_display(result)  # the full-size outline, off the GUI thread

        from napari_lesion_diffkd.plugin._workers import start_generator_worker

        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        where = f" slice {z}" if z is not None else (" (all slices)" if volume else "")
        self.status.setText(f"segmenting {layer.name}{where} with {label}...")
        self.worker = start_generator_worker(
            job, on_event=self._on_event, on_result=self._on_result,
            on_error=self._on_error, on_aborted=self._on_aborted,
            on_finished=self._on_finished,
        )

    def cancel(self) -> None:
        """Ask the worker to stop after the current network call; no layer changes."""
        if self.worker is not None:
            self.status.setText("cancelling...")
            self.worker.quit()

    # -- worker callbacks (GUI thread) ---------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if event.kind == "progress" and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.step)
        elif event.message:
            self.status.setText(event.message)

    def _on_result(self, result: Any) -> None:
        from napari_lesion_diffkd.plugin._layer_ops import apply_result

        target = self._target
        if target["name"] not in self.viewer.layers:
            self.status.setText(f"image layer {target['name']!r} was removed: result dropped")
            return
        self.last_result = result
        image = self.viewer.layers[target["name"]]
        samples_layer = True if self.samples_layer_check.isChecked() else None
        self.last_layers = {}

        def show(roles: tuple[str, ...]) -> None:
            self.last_layers.update(apply_result(
                self.viewer, result, image, z=target["z"], model=target["model"],
                before_replace=self.context.consensus_replacing.emit, roles=roles,
                samples_layer=samples_layer))

        # One new layer per event-loop turn (_gui_steps); the run counts as running until
        # the last is shown. (The samples ride with the consensus, see apply_result.)
        self._steps.run([lambda: show(("samples", "consensus")),
                         lambda: show(("uncertainty",)),
                         lambda: self._show_status(result, target)])

    def _show_status(self, result: Any, target: dict[str, Any]) -> None:
        self.staple_table.show_values(result.sensitivity, result.specificity)
        consensus = np.asarray(result.consensus)
        text = (f"done in {result.seconds:.2f} s with {target['model']}: "
                f"K = {result.samples.shape[0]}, lesion {100 * consensus.mean():.1f}% of "
                f"the {'volume' if consensus.ndim == 3 else 'image'}")
        if "sample_disagreement" in result.scores:
            text += f", disagreement {result.scores['sample_disagreement']:.3f}"
        if result.sensitivity is not None:
            text += " (STAPLE sensitivity / specificity per sample below)"
        elif result.samples.shape[0] == 1:
            text += " (one mask: no STAPLE)"
        note = getattr(result, "working_note", "")
        if note:  # a large image: say that the maps were computed smaller and upsampled
            text += f". Note: {note}"
        self.status.setText(text)

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"error: {exc}")

    def _on_aborted(self) -> None:
        self.status.setText("cancelled: no layers changed")

    def _on_finished(self) -> None:
        self._steps.then(self._finished)  # after the result's layers are all shown

    def _finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
