"""The Segment widget's settings form: image, modality preset, model, device, backend (torch
or ONNX Runtime), K, sampler, steps, fusion, seed and scope (image / current slice / whole
volume).

The modality preset (auto from the image's metadata, or chosen) filters the model picker,
selects the preset's default model and sets the display: the stored pixel spacing as layer
scale, and for CT in Hounsfield units a window (``core.data.windows``) as contrast limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QSpinBox, QWidget

from napari_lesion_diffkd.plugin._catalog import DEVICES, MODALITIES
from napari_lesion_diffkd.plugin._model_picker import ModelPicker
from napari_lesion_diffkd.plugin._segment_job import SegmentRequest

if TYPE_CHECKING:
    import napari

AUTO = "auto (from image)"
DEFAULT_SAMPLER = "model default"
SAMPLER_NAMES = ("ddim", "ddpm", "staged", "one-step")
SCOPE_IMAGE, SCOPE_SLICE, SCOPE_VOLUME = "image", "current slice", "whole volume"
BACKENDS = ("torch", "onnxruntime")
BACKEND_TIP = ("onnxruntime: run the network with ONNX Runtime on the CPU (exported once and "
               "cached; same seeds give the same masks as torch)")


class SegmentForm(QWidget):
    """Settings of one segmentation run (public widgets are attributes, see ``__init__``)."""

    def __init__(self, viewer: napari.viewer.Viewer, context: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.image_combo = QComboBox()
        self.modality_combo = QComboBox()
        self.modality_combo.addItems([AUTO, *MODALITIES])
        self.modality_note = QLabel("")  # the detected modality; a warning on a mismatch
        self.modality_note.setWordWrap(True)
        self._guess: tuple[Any, Any] | None = None  # (layer data, ModalityGuess) cache
        self.window_combo = QComboBox()
        self.picker = ModelPicker(context)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.backend_combo = QComboBox()
        self.backend_combo.addItems(BACKENDS)
        self.backend_combo.setToolTip(BACKEND_TIP)
        self.samples_spin = _spin(1, 64, 8)
        self.sampler_combo = QComboBox()
        self.sampler_combo.addItems([DEFAULT_SAMPLER, *SAMPLER_NAMES])
        self.steps_spin = _spin(0, 1000, 0)
        self.steps_spin.setSpecialValueText("model default")
        self.fusion_combo = QComboBox()
        self.fusion_combo.addItems(["staple", "mean", "majority"])
        self.seed_spin = _spin(0, 2**31 - 1, 0)
        self.scope_combo = QComboBox()

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("image", self.image_combo)
        form.addRow("modality", self.modality_combo)
        form.addRow("detected", self.modality_note)
        form.addRow("CT window", self.window_combo)
        form.addRow("model", self.picker)
        form.addRow("device", self.device_combo)
        form.addRow("backend", self.backend_combo)
        form.addRow("samples (K)", self.samples_spin)
        form.addRow("sampler", self.sampler_combo)
        form.addRow("steps", self.steps_spin)
        form.addRow("fusion", self.fusion_combo)
        form.addRow("seed", self.seed_spin)
        form.addRow("run on", self.scope_combo)
        self._form = form
        self._preset_modality: str | None = "unset"

        self.image_combo.currentTextChanged.connect(self._on_image)
        self.modality_combo.currentTextChanged.connect(lambda _: self.apply_preset())
        self.window_combo.currentTextChanged.connect(self._apply_window)
        self.sampler_combo.currentTextChanged.connect(lambda _: self._sync_enabled())
        self.picker.changed.connect(lambda _: self._sync_enabled())
        self.picker.changed.connect(lambda _: self._update_note())
        self.backend_combo.currentTextChanged.connect(lambda _: self._sync_enabled())
        self.picker.ready.connect(self._on_models_ready)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh_images)
        self.refresh_images()
        self._set_row_visible(self.window_combo, False)
        if self.picker.is_ready:
            self._on_models_ready()

    # -- choices -------------------------------------------------------------------------
    def refresh_images(self, *_: Any) -> None:
        """List the viewer's image layers (the plugin's own result layers excluded)."""
        from napari_lesion_diffkd.plugin._layer_ops import refresh_image_combo

        if not refresh_image_combo(self.image_combo, self.viewer):
            self._on_image(self.image_combo.currentText())

    def image_layer(self) -> Any:
        """The selected image layer; ValueError when none is selected."""
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("select an image layer first")
        return self.viewer.layers[name]

    def modality(self) -> str | None:
        """The preset's modality: the chosen one, else the image's own (None if unknown)."""
        chosen = self.modality_combo.currentText()
        if chosen != AUTO:
            return chosen
        guess = self.guess()
        return None if guess is None else guess.modality

    def guess(self) -> Any:
        """The selected image's :class:`core.data.modality.ModalityGuess` (None without an
        image): DICOM tag / project setting, HU range, else the pixels (cached per data)."""
        from napari_lesion_diffkd.plugin._presets import guess_modality

        try:
            layer = self.image_layer()
        except ValueError:
            return None
        if self._guess is None or self._guess[0] is not layer.data:
            # A multiscale layer: its smallest level is plenty to judge from.
            data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
            self._guess = (layer.data, guess_modality(
                data, layer.metadata, bool(getattr(layer, "rgb", False))))
        return self._guess[1]

    def _update_note(self) -> None:
        """Show the detected modality; warn when the chosen model is for another one."""
        guess, entry = self.guess(), self.picker.current()
        if guess is None:
            self.modality_note.setText("")
            return
        text = guess.describe()
        image = guess.modality or (self.modality_combo.currentText()
                                   if self.modality_combo.currentText() != AUTO else None)
        if entry is not None and image and entry.modality and entry.modality != image:
            text += (f"\n\u26a0 {entry.label} is a model for {entry.modality}; this image "
                     f"looks like {image}")
        elif guess.modality is None and self.modality_combo.currentText() == AUTO:
            text += "\nchoose the modality (or the model) yourself"
        self.modality_note.setText(text)
        self.modality_note.setToolTip(text)

    def request(self) -> SegmentRequest:
        """The run's settings; ValueError when no model is selected."""
        entry = self.picker.current()
        if entry is None:
            raise ValueError("no model available: train one or add a bundle folder")
        sampler = self.sampler_combo.currentText()
        return SegmentRequest(
            target=entry.target, device=self.device_combo.currentText(),
            num_samples=self.samples_spin.value(),
            sampler=None if sampler == DEFAULT_SAMPLER else sampler,
            num_steps=(self.steps_spin.value() or None) if self.steps_spin.isEnabled() else None,
            fusion=self.fusion_combo.currentText(), seed=self.seed_spin.value(),
            backend=self.backend_combo.currentText() or "torch")

    def scope(self) -> str:
        """``image`` | ``current slice`` | ``whole volume``."""
        return self.scope_combo.currentText() or SCOPE_IMAGE

    # -- presets -------------------------------------------------------------------------
    def apply_preset(self) -> None:
        """Filter and default the model picker and set the image's display for its modality."""
        from napari_lesion_diffkd.plugin._presets import PRESETS, ct_window_names, looks_like_hu

        modality = self.modality()
        preset = PRESETS.get(modality or "")
        # A new modality selects its default model; another image of the same modality
        # keeps the user's choice, unless that model is for another modality. An unknown
        # modality keeps the model (no student of an arbitrary modality is picked).
        entry = self.picker.current()
        stale = entry is not None and entry.modality not in (None, modality)
        self.picker.set_modality(modality, select_default=modality is not None and (
            modality != self._preset_modality or stale))
        self._preset_modality = modality
        try:
            layer = self.image_layer()
        except ValueError:
            layer = None
        hu = bool(layer is not None and modality == "ct"
                  and looks_like_hu(layer.data, layer.metadata))
        self._set_row_visible(self.window_combo, hu)
        if hu and preset is not None:
            self.window_combo.blockSignals(True)
            self.window_combo.clear()
            self.window_combo.addItems(ct_window_names(layer.metadata))
            self.window_combo.setCurrentText(layer.metadata.get("ct_window") or preset.ct_window)
            self.window_combo.blockSignals(False)
            self._apply_window(self.window_combo.currentText())
        if layer is not None:
            self._apply_spacing(layer)
        self._update_note()

    def _apply_window(self, name: str) -> None:
        from napari_lesion_diffkd.plugin._presets import window_contrast

        if not name:
            return
        try:
            layer = self.image_layer()
        except ValueError:
            return
        try:
            layer.contrast_limits = window_contrast(name, layer.metadata)
        except ValueError:  # "file" on an image without a window of its own
            return
        layer.metadata = {**layer.metadata, "ct_window": name}

    @staticmethod
    def _apply_spacing(layer: Any) -> None:
        from napari_lesion_diffkd.plugin._presets import spacing_scale

        scale = spacing_scale(layer.metadata, layer.ndim)
        if scale is not None and not np.allclose(layer.scale[-layer.ndim:], scale):
            layer.scale = scale  # physical pixel size: result layers copy it

    # -- enabling ------------------------------------------------------------------------
    def _on_image(self, _name: str) -> None:
        try:
            layer = self.image_layer()
        except ValueError:
            layer = None
        self.scope_combo.clear()
        if layer is not None and layer.ndim == 3:
            self.scope_combo.addItems([SCOPE_SLICE, SCOPE_VOLUME])
        else:
            self.scope_combo.addItem(SCOPE_IMAGE)
        chosen, guess = self.modality_combo.currentText(), self.guess()
        if chosen != AUTO and guess is not None and guess.modality not in (None, chosen):
            # The last image's modality must not stick to an image of another modality.
            self.modality_combo.blockSignals(True)
            self.modality_combo.setCurrentText(AUTO)
            self.modality_combo.blockSignals(False)
        if self.picker.is_ready:
            self.apply_preset()

    def _on_models_ready(self) -> None:
        from napari_lesion_diffkd.plugin._catalog import available_devices

        model = self.device_combo.model()
        for row, (name, ok) in enumerate(available_devices().items()):
            item = model.item(row)
            item.setEnabled(ok)
            item.setToolTip("" if ok else f"{name} is not available on this machine")
        self.apply_preset()

    def _sync_enabled(self) -> None:
        entry = self.picker.current()
        sampling = entry is not None and not entry.deterministic
        for w in (self.samples_spin, self.sampler_combo, self.fusion_combo, self.seed_spin):
            w.setEnabled(sampling)
        chosen = self.sampler_combo.currentText()
        effective = (entry.sampler if entry else None) if chosen == DEFAULT_SAMPLER else chosen
        # core.segmenter: a step count applies to the DDIM sampler only.
        self.steps_spin.setEnabled(sampling and effective == "ddim")
        # ONNX Runtime runs on the CPU: the device choice does not apply to it.
        self.device_combo.setEnabled(self.backend_combo.currentText() != "onnxruntime")

    def _set_row_visible(self, widget: QWidget, visible: bool) -> None:
        label = self._form.labelForField(widget)
        widget.setVisible(visible)
        if label is not None:
            label.setVisible(visible)


def _spin(low: int, high: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    return spin
