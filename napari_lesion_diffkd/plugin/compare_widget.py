"""Dock widget "Compare teacher / student": two models on the same image, side by side.

Each model's consensus and uncertainty become their own layers, named short by the model's
role so that the layer list shows them whole on a laptop screen (``T: consensus · <image>``
for the teacher, ``S: uncertainty · <image>`` for the student; the model's full name is in
the cell's caption and the layer's marker) and found again by their marker on a re-run; a
re-run with other models updates the same layers (the role's layers go to the new model).
"Side by side" turns on napari's grid mode with four layers per cell (a view of the image,
the uncertainty, the consensus, and a caption naming the model: "teacher: <label>" /
"student: <label>") and hides every other layer until it is turned off again; the camera
is reset so each cell shows the whole image. Turned off, the image and the user's layers
come back with the *student's* overlays only (the teacher's are hidden, not stacked on
top). The table gives each model's parameter count and latency (sampling + fusion,
measured after a warm-up run; loading and warm-up shown apart); the line below it the Dice
between the two consensus masks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_diffkd.plugin._model_picker import ModelPicker

if TYPE_CHECKING:
    import napari

CELL = ("view", "uncertainty", "consensus", "caption")  # bottom to top within one grid cell
ROLES = ("teacher", "student")  # the compared models, in order
SHORT = {"teacher": "T", "student": "S"}  # their tag in the layer names (_layers.compare_name)


class CompareWidget(QWidget):
    """Teacher vs student on one image.

    Public attributes used by tests and scripts: ``image_combo``, ``teacher_picker``,
    ``student_picker``, ``samples_spin``, ``seed_spin``, ``device_combo``, ``run_button``,
    ``cancel_button``, ``grid_check``, ``table``, ``dice_label``, ``status``, ``worker``,
    ``last_result`` (:class:`._compare_job.CompareResult`).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from napari_lesion_diffkd.plugin._context import app_context
        from napari_lesion_diffkd.plugin._segment_job import BundleCache

        self.viewer = napari_viewer
        self.context = app_context(napari_viewer)
        self.cache = BundleCache()
        self.worker: Any = None
        self.last_result: Any = None
        self._target: dict[str, Any] = {}
        self._hidden: list[Any] = []
        from napari_lesion_diffkd.plugin._gui_steps import GuiSteps

        self._steps = GuiSteps(self, on_error=self._on_error)

        self.image_combo = QComboBox()
        self.teacher_picker = ModelPicker(self.context, roles=("teacher", "student", "baseline"))
        self.student_picker = ModelPicker(self.context, roles=("student", "baseline", "teacher"))
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, 64)
        self.samples_spin.setValue(8)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.run_button = QPushButton("Compare")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.grid_check = QCheckBox("side by side (grid)")
        self.grid_check.setChecked(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.table = QTableWidget(0, 3)  # one row per model, its label as the row header
        self.table.setHorizontalHeaderLabels(["params", "latency", "load + warm-up"])
        self.table.horizontalHeaderItem(2).setToolTip(
            "loading and one warm-up run, made once per model; the latency is measured after")
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.dice_label = QLabel("")
        self.status = QLabel("ready")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("teacher", self.teacher_picker)
        form.addRow("student", self.student_picker)
        form.addRow("samples (K)", self.samples_spin)
        form.addRow("seed", self.seed_spin)
        form.addRow("device", self.device_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.grid_check)
        layout.addWidget(self.progress)
        layout.addWidget(self.table)
        layout.addWidget(self.dice_label)
        layout.addWidget(self.status)
        layout.addStretch(1)
        from napari_lesion_diffkd.plugin._panel_layout import make_scrollable, show_rows

        show_rows(self.table, 2)  # one row per compared model
        self.table.setMaximumHeight(self.table.minimumHeight())
        make_scrollable(self)  # fits a laptop screen with every panel open (_panel_layout)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.grid_check.toggled.connect(self.show_grid)
        self.image_combo.currentTextChanged.connect(self._on_image)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.refresh_images)
        self.refresh_images()
        from napari_lesion_diffkd.plugin._warmup import warm_up

        warm_up()  # the first run's imports, off the GUI thread (see _warmup)

    # -- choices -------------------------------------------------------------------------
    def refresh_images(self, *_: Any) -> None:
        """List the viewer's own image layers (the plugin's result layers excluded)."""
        from napari_lesion_diffkd.plugin._layer_ops import refresh_image_combo

        if not refresh_image_combo(self.image_combo, self.viewer):
            self._on_image(self.image_combo.currentText())

    def _on_image(self, name: str) -> None:
        from napari_lesion_diffkd.plugin._presets import detect_modality

        if name not in self.viewer.layers:
            return
        layer = self.viewer.layers[name]
        # The pixels count too (a gray ultrasound PNG has no metadata); a multiscale layer is
        # judged on its smallest level, as in the Segment form.
        data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
        modality = detect_modality(layer.metadata, bool(getattr(layer, "rgb", False)), data)
        for picker in (self.teacher_picker, self.student_picker):
            picker.set_modality(modality)

    # -- running -------------------------------------------------------------------------
    def run(self) -> None:
        """Segment the image (or the current slice of a volume) with both models."""
        from napari_lesion_diffkd.plugin._compare_job import compare_job
        from napari_lesion_diffkd.plugin._layer_ops import current_slice
        from napari_lesion_diffkd.plugin._segment_job import SegmentRequest
        from napari_lesion_diffkd.plugin._workers import start_generator_worker

        if self.worker is not None:
            return
        name = self.image_combo.currentText()
        teacher, student = self.teacher_picker.current(), self.student_picker.current()
        if name not in self.viewer.layers or teacher is None or student is None:
            self.status.setText("pick an image layer and two models")
            return
        layer = self.viewer.layers[name]
        data = np.asarray(layer.data)
        z = current_slice(self.viewer, layer) if layer.ndim == 3 else None
        if z is not None:
            data = np.asarray(data[z])
        requests = [(e.label, SegmentRequest(
            target=e.target, device=self.device_combo.currentText(),
            num_samples=self.samples_spin.value(), seed=self.seed_spin.value()))
            for e in (teacher, student)]
        self._target = {"name": name, "z": z}
        cache = self.cache
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"comparing {teacher.label} and {student.label} on {name}...")
        self.worker = start_generator_worker(
            lambda: compare_job(requests, data, cache), on_event=self._on_event,
            on_result=self._on_result, on_error=self._on_error,
            on_aborted=lambda: self.status.setText("cancelled: no layers changed"),
            on_finished=self._on_finished)

    def cancel(self) -> None:
        """Stop after the current network call."""
        if self.worker is not None:
            self.worker.quit()

    def show_grid(self, on: bool) -> None:
        """Side by side: grid mode with one cell per model (other layers hidden), or back."""
        for step in self._grid_steps(on):
            step()

    def _grid_steps(self, on: bool) -> list[Any]:
        """:meth:`show_grid` as steps for :class:`._gui_steps.GuiSteps`: turning the grid
        on took 0.5 s of the GUI thread in one slot here (each layer move and visibility
        change re-draws the scene). Each step looks the layers up itself, when it runs."""
        if not on or not self._cell_layers():
            return [self._grid_off]
        n = len(CELL)
        models = len(self._cell_layers()) // n
        return ([self._hide_others]
                + [lambda m=m: self._place_cell(m) for m in range(models)]
                + [lambda: self._grid_on(False), lambda: self._grid_on(True),
                   self.viewer.reset_view])  # whole image in each cell

    def _grid_off(self) -> None:
        layers = self._cell_layers()
        grid = viewer_grid(self.viewer)
        was_on = grid.enabled
        for layer in self._hidden:
            if layer in self.viewer.layers:
                layer.visible = True
        self._hidden = []
        n = len(CELL)
        last = len(layers) - n
        for i, layer in enumerate(layers):
            # Views and captions are for the grid; of the overlays only the last
            # model's (the student's) stay, so two models never stack on the image.
            layer.visible = i >= last and CELL[i % n] in ("uncertainty", "consensus")
        grid.enabled = False
        if was_on:
            self.viewer.reset_view()

    def _hide_others(self) -> None:
        ours = {id(layer) for layer in self._cell_layers()}
        for layer in self.viewer.layers:
            if id(layer) not in ours and layer.visible:
                self._hidden.append(layer)
                layer.visible = False

    def _place_cell(self, model: int) -> None:
        """Move one model's cell layers to the bottom of the list, in order, and show them
        (moves that change nothing are skipped: each one re-draws)."""
        n = len(CELL)
        layers = self._cell_layers()[model * n:(model + 1) * n]
        for offset, layer in enumerate(layers):  # bottom of the list = bottom of a cell
            index = model * n + offset
            if self.viewer.layers.index(layer) != index:
                self.viewer.layers.move(self.viewer.layers.index(layer), index)
            if not layer.visible:
                layer.visible = True

    def _grid_on(self, enable: bool) -> None:
        """The grid's stride and shape (``enable`` False), or turning it on (True): two
        steps, each re-lays the canvas out when the grid is on."""
        layers = self._cell_layers()
        if not layers:
            return
        grid = viewer_grid(self.viewer)
        if enable:
            if not grid.enabled:
                grid.enabled = True
            return
        shape = (1, len(layers) // len(CELL))
        if grid.stride != len(CELL):
            grid.stride = len(CELL)
        if tuple(grid.shape) != shape:
            grid.shape = shape

    # -- callbacks -----------------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if event.kind == "progress" and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.step)
        elif event.message:
            self.status.setText(event.message)

    def _on_result(self, result: Any) -> None:
        from napari_lesion_diffkd.plugin._layer_ops import apply_result

        name = self._target["name"]
        if name not in self.viewer.layers:
            self.status.setText(f"image layer {name!r} was removed: result dropped")
            return
        image = self.viewer.layers[name]
        self.last_result = result
        z = self._target["z"]
        self._retarget(image.name, {run.label: SHORT[tag]
                                    for tag, run in zip(ROLES, result.runs)})
        # One layer per event-loop turn (_gui_steps): eight new layers in one slot froze
        # napari for seconds. The worker counts as running until the last step is done.
        steps: list[Any] = []
        for tag, run in zip(ROLES, result.runs):
            for role in ("uncertainty", "consensus"):
                steps.append(lambda run=run, role=role, tag=tag: apply_result(
                    self.viewer, run.result, image, z=z, model=run.label, group="compare",
                    roles=(role,), short=SHORT[tag]))
            steps.append(lambda run=run, tag=tag: self._image_view(image, run.label, tag))
        for role, run in zip(ROLES, result.runs):
            steps.append(lambda role=role, run=run: self._caption(
                image, run.label, f"{role}: {run.label}", SHORT[role]))
        steps.append(lambda: self._show_numbers(result))
        # The grid's steps, worked out when the layers exist (the steps above make them).
        steps.append(lambda: self._steps.push(self._grid_steps(self.grid_check.isChecked())))
        self._steps.run(steps)


    def _show_numbers(self, result: Any) -> None:
        self.table.setRowCount(len(result.runs))
        self.table.setVerticalHeaderLabels([run.label for run in result.runs])
        for row, run in enumerate(result.runs):
            values = (f"{run.params / 1e6:.2f} M", f"{run.seconds:.2f} s",
                      f"{run.load_seconds + run.warmup_seconds:.2f} s"
                      if run.load_seconds or run.warmup_seconds else "cached")
            for col, text in enumerate(values):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.dice_label.setText(f"Dice between the consensus masks: {result.dice:.3f}")
        self.status.setText(f"done: {result.runs[0].label} {result.runs[0].seconds:.2f} s, "
                            f"{result.runs[1].label} {result.runs[1].seconds:.2f} s")

    def _retarget(self, image: str, tags: dict[str, str]) -> None:
        """Hand this image's Compare layers of an earlier comparison to the model now in
        their role (``tags``: model -> its tag now), so that this run updates them in place:
        new layers would stack under them with the same short names. (Removing them
        instead crashed software OpenGL, llvmpipe, in glDrawArrays on the next draw.)"""
        from napari_lesion_diffkd.plugin._layers import META_KEY, managed

        models = {tag: model for model, tag in tags.items()}
        for layer in self.viewer.layers:
            marker = managed(layer)
            if not marker or marker.get("group") != "compare" or marker.get("image") != image:
                continue
            model = models.get(layer.name.split(":", 1)[0])
            if model is not None and marker.get("model") != model:
                layer.metadata = {**layer.metadata, META_KEY: {**marker, "model": model}}

    def _image_view(self, image: Any, model: str, tag: str = "teacher") -> None:
        """A second image layer over the same array, for this model's grid cell."""
        from napari_lesion_diffkd.plugin._layer_ops import find_managed
        from napari_lesion_diffkd.plugin._layers import compare_name, model_meta

        if find_managed(self.viewer, image.name, "view", "compare", model) is not None:
            return
        kwargs = {"name": compare_name(SHORT[tag], "view", image.name), "scale": image.scale,
                  "translate": image.translate, "rgb": image.rgb,
                  "metadata": model_meta("view", image.name, "compare", model)}
        if not image.rgb:
            kwargs.update(colormap=image.colormap.name, contrast_limits=image.contrast_limits)
        self.viewer.add_image(image.data, **kwargs)  # shares the data: no copy

    def _caption(self, image: Any, model: str, text: str, short: str = "T") -> None:
        """A text label centred above the image, the caption of this model's cell."""
        from napari_lesion_diffkd.plugin._layer_ops import find_managed
        from napari_lesion_diffkd.plugin._layers import compare_name, model_meta

        layer = find_managed(self.viewer, image.name, "caption", "compare", model)
        height = float(np.asarray(image.data).shape[image.ndim - 2])
        # Centred just above the image (the anchor centres the text on the point).
        text_style = {"string": [text], "anchor": "center", "color": "white",
                      "size": 8, "translation": [-0.04 * height, 0.0]}
        if layer is not None:
            layer.text = text_style
            return
        corner = np.zeros((1, image.ndim))  # the top edge's middle, in the image's frame
        corner[0, -1] = (np.asarray(image.data).shape[image.ndim - 1] - 1) / 2.0
        if image.ndim == 3:  # a volume: on the compared slice
            corner[0, 0] = self._target.get("z") or 0
        scale, translate = list(image.scale), list(image.translate)
        self.viewer.add_points(
            corner, name=compare_name(short, "caption", image.name), scale=scale,
            translate=translate, size=1, face_color="transparent", border_width=0, text=text_style,
            metadata=model_meta("caption", image.name, "compare", model))

    def _cell_layers(self) -> list[Any]:
        """[view, uncertainty, consensus, caption] per compared model, in the order
        compared."""
        from napari_lesion_diffkd.plugin._layer_ops import find_managed

        if self.last_result is None or self._target.get("name") not in self.viewer.layers:
            return []
        out = []
        for run in self.last_result.runs:
            cell = [find_managed(self.viewer, self._target["name"], role, "compare", run.label)
                    for role in CELL]
            if any(layer is None for layer in cell):
                return []
            out += cell
        return out

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"error: {exc}")

    def _on_finished(self) -> None:
        self._steps.then(self._finished)  # after the result's layers are all shown

    def _finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)


def viewer_grid(viewer: napari.viewer.Viewer) -> Any:
    """The viewer's grid settings (``viewer.canvas.grid`` since napari 0.9, where
    ``viewer.grid`` is deprecated; ``viewer.grid`` before)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid
