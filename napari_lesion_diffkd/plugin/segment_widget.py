"""Dock widget "Lesion segmentation": image layer + model -> samples, uncertainty, consensus.

Everything slow (model loading, sampling, STAPLE) runs in a worker thread; the GUI thread
only reads the current image and adds or updates layers. Re-running updates the result
layers of that image in place; other layers (the user's own labels) are never touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari

DEFAULT_MODEL = "dermoscopy-teacher"


class SegmentWidget(QWidget):
    """Pick an image layer and a model, choose K, Run; progress bar and Cancel.

    Public attributes used by tests and scripts: ``image_combo``, ``model_combo``,
    ``samples_spin``, ``steps_spin``, ``fusion_combo``, ``seed_spin``, ``run_button``,
    ``cancel_button``, ``progress``, ``status``, ``worker`` (the running worker or None),
    ``last_result``.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.last_result: Any = None
        self._bundles: dict[str, Any] = {}  # loaded models by name, reused across runs
        self._target: dict[str, Any] = {}

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, 64)
        self.samples_spin.setValue(8)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 1000)
        self.steps_spin.setSpecialValueText("model default")
        self.fusion_combo = QComboBox()
        self.fusion_combo.addItems(["staple", "mean", "majority"])
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_combo)
        form.addRow("", self.model_info)
        form.addRow("samples (K)", self.samples_spin)
        form.addRow("steps", self.steps_spin)
        form.addRow("fusion", self.fusion_combo)
        form.addRow("seed", self.seed_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.model_combo.currentTextChanged.connect(self._show_model_info)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh_images)
        self.refresh_images()
        self.refresh_models()

    # -- choices ----------------------------------------------------------------------------
    def refresh_images(self, *_: Any) -> None:
        """Fill the image combo with the viewer's image layers (result layers excluded)."""
        import napari

        current = self.image_combo.currentText()
        names = [
            layer.name for layer in self.viewer.layers
            if isinstance(layer, napari.layers.Image) and not layer.name.endswith(" uncertainty")
        ]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        elif names:
            self.image_combo.setCurrentIndex(len(names) - 1)
        self.image_combo.blockSignals(False)

    def refresh_models(self) -> None:
        """Fill the model combo from the registry (default model first when present)."""
        from napari_lesion_diffkd.core.registry import list_models

        self._model_rows = {row["name"]: row for row in list_models() if row["role"] != "broken"}
        names = sorted(self._model_rows, key=lambda n: (n != DEFAULT_MODEL, n))
        self.model_combo.clear()
        self.model_combo.addItems(names)
        self._show_model_info(self.model_combo.currentText())

    def _show_model_info(self, name: str) -> None:
        row = getattr(self, "_model_rows", {}).get(name)
        if not row:
            self.model_info.setText("no model selected")
            return
        dice = "-" if row["val_dice"] is None else f"{row['val_dice']:.3f}"
        self.model_info.setText(
            f"{row['modality']} {row['role']}, {row['params'] / 1e6:.2f}M params, "
            f"input {row['input_size']} px, val Dice {dice}"
        )

    # -- running ----------------------------------------------------------------------------
    def _current_image(self) -> tuple[Any, np.ndarray, list[float], list[float]]:
        """The selected layer and the 2D image to segment (current slice of a volume)."""
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("select an image layer first")
        layer = self.viewer.layers[name]
        data = np.asarray(layer.data)
        spatial = data.ndim - (1 if layer.rgb else 0)
        scale, translate = list(layer.scale), list(layer.translate)
        if spatial == 3:
            # The viewer's current world point, mapped into this layer's data frame (the
            # layer may have its own scale/translate, e.g. slice spacing).
            point = self.viewer.dims.point[-layer.ndim:]
            z = int(np.clip(round(float(layer.world_to_data(point)[0])), 0, data.shape[0] - 1))
            data = np.asarray(data[z])
            translate = [translate[0] + z * scale[0], *translate[1:]]
        elif spatial == 2:
            scale, translate = scale[-2:], translate[-2:]
        else:
            raise ValueError(f"layer {name!r} has {spatial} spatial dims; need 2D or 3D")
        return layer, data, scale, translate

    def run(self) -> None:
        """Start segmentation of the selected image in a worker thread."""
        if self.worker is not None:
            return
        try:
            layer, image, scale, translate = self._current_image()
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        model = self.model_combo.currentText()
        if not model:
            self.status.setText("no model available: train one or add a bundle folder")
            return
        settings = {
            "num_samples": self.samples_spin.value(),
            "num_steps": self.steps_spin.value() or None,
            "fusion": self.fusion_combo.currentText(),
            "seed": self.seed_spin.value(),
        }
        self._target = {"name": layer.name, "scale": scale, "translate": translate}
        cache = self._bundles

        def job():
            from napari_lesion_diffkd.core.jobs import JobEvent
            from napari_lesion_diffkd.core.registry import load_model
            from napari_lesion_diffkd.core.segmenter import segment_image

            if model not in cache:
                yield JobEvent("log", message=f"loading {model}")
                cache[model] = load_model(model, device="auto")
            result = yield from segment_image(cache[model], image, **settings)
            return result

        from napari_lesion_diffkd.plugin._workers import start_generator_worker

        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"segmenting {layer.name} with {model}...")
        self.worker = start_generator_worker(
            job, on_event=self._on_event, on_result=self._on_result,
            on_error=self._on_error, on_aborted=self._on_aborted,
            on_finished=self._on_finished,
        )

    def cancel(self) -> None:
        """Ask the worker to stop after the current network call."""
        if self.worker is not None:
            self.status.setText("cancelling...")
            self.worker.quit()

    def _on_event(self, event: Any) -> None:
        if event.kind == "progress" and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.step)
        elif event.message:
            self.status.setText(event.message)

    def _on_result(self, result: Any) -> None:
        from napari_lesion_diffkd.plugin._layers import result_layer_tuples

        self.last_result = result
        target = self._target
        for data, kwargs, kind in result_layer_tuples(
            result, target["name"], target["scale"], target["translate"]
        ):
            name = kwargs["name"]
            if name in self.viewer.layers:
                existing = self.viewer.layers[name]
                existing.data = data
                existing.metadata = kwargs.get("metadata", {})
                existing.scale, existing.translate = kwargs["scale"], kwargs["translate"]
            else:
                add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
                add(data, **kwargs)
        text = (f"done in {result.seconds:.2f} s: K = {result.samples.shape[0]}, "
                f"lesion {100 * result.consensus.mean():.1f}% of the image, "
                f"disagreement {result.scores.get('sample_disagreement', float('nan')):.3f}")
        if result.sensitivity is not None:
            sens = ", ".join(f"{v:.2f}" for v in result.sensitivity)
            spec = ", ".join(f"{v:.2f}" for v in result.specificity)
            text += f"\nSTAPLE sensitivity: {sens}\nSTAPLE specificity: {spec}"
        self.status.setText(text)

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"error: {exc}")

    def _on_aborted(self) -> None:
        self.status.setText("cancelled: no layers changed")

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
