"""The Jobs panel's launch form (Qt side of :mod:`._job_forms`)."""

from __future__ import annotations

import os
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_lesion_diffkd.plugin._job_forms import (
    JOB_KINDS,
    LOOP_THRESHOLD,
    TRAINING_KINDS,
    JobForm,
    parse_overrides,
)
from napari_lesion_diffkd.plugin._model_picker import ModelPicker
from napari_lesion_diffkd.plugin._sam_picker import CHECKPOINT, SamPicker

MODEL_ROW_TITLES = {"fine-tune": "start from", "distill": "teacher", "pseudo-label": "model",
                    "score": "model", "train": "model", "loop round": "teacher"}
#: Kinds whose form has steps / minutes / overrides (a loop round trains two models).
STEPPED_KINDS = (*TRAINING_KINDS, "loop round")
SAM_KIND = "SAM fine-tune"
#: LoRA rank suggested when a SAM is picked: the small bundles train fully, an official
#: SAM (94M+ parameters) gets adapters on q/v with its base frozen.
SUGGESTED_LORA_RANK = {CHECKPOINT: 4}


def project_modality(store: Any) -> str | None:
    """The modality most of a project's images have (None without a project or modality)."""
    from collections import Counter

    from napari_lesion_diffkd.plugin._catalog import normalise_modality

    if store is None:
        return None
    try:
        counts = Counter(normalise_modality(image.modality) for image in store.images())
    except Exception:  # noqa: BLE001 - a store error must not break the form
        return None
    counts.pop(None, None)
    return counts.most_common(1)[0][0] if counts else None


class JobsForm(QWidget):
    """Kind, model, config file, steps, minutes, images, K, device, threads, overrides;
    a loop round adds the student and the confidence threshold; a SAM fine-tune picks a SAM
    (``sam_picker``) instead of a diffusion model and adds the LoRA rank."""

    def __init__(self, context: Any) -> None:
        super().__init__()
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(list(JOB_KINDS))
        self.picker = ModelPicker(context, roles=("teacher", "student", "baseline"))
        self.student_picker = ModelPicker(context, roles=("student",))
        self.sam_picker = SamPicker(context)
        self.lora_spin = QSpinBox()
        self.lora_spin.setRange(0, 256)
        self.lora_spin.setSpecialValueText("0 (full fine-tune)")
        self.lora_spin.setToolTip(
            "0: every parameter trains (the small lesion-sam-tiny); > 0: LoRA adapters of "
            "this rank on q/v of the image encoder, base frozen (the choice for an official "
            "SAM). Picking a SAM sets the suggested rank.")
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setValue(LOOP_THRESHOLD)
        self.threshold_spin.setToolTip(
            "a pseudo label trains the student when the teacher's samples agree: "
            "sample disagreement (1 - mean pairwise Dice) <= this")
        self.config_edit = QLineEdit()
        self.config_button = QPushButton("...")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 10_000_000)
        self.steps_spin.setSpecialValueText("config's")
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setRange(0, 10_000)
        self.minutes_spin.setSpecialValueText("config's")
        self.images_combo = QComboBox()
        self.images_combo.addItems(["unlabelled", "all"])
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(0, 64)
        self.samples_spin.setSpecialValueText("model's")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(0, 256)
        # Leave a core to napari: a job that takes every core makes the viewer stutter.
        self.threads_spin.setValue(max(1, (os.cpu_count() or 2) - 1))
        self.overrides_edit = QLineEdit()
        self.overrides_edit.setPlaceholderText("e.g. lr: 0.0005, batch_size: 4")

        config_row = self._config_row = QHBoxLayout()
        config_row.addWidget(self.config_edit)
        config_row.addWidget(self.config_button)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("job", self.kind_combo)
        form.addRow("start from", self.picker)
        form.addRow("start from", self.sam_picker)
        form.addRow("LoRA rank", self.lora_spin)
        form.addRow("student", self.student_picker)
        form.addRow("config", config_row)
        form.addRow("steps", self.steps_spin)
        form.addRow("minutes", self.minutes_spin)
        form.addRow("images", self.images_combo)
        form.addRow("samples (K)", self.samples_spin)
        form.addRow("confidence threshold", self.threshold_spin)
        form.addRow("device", self.device_combo)
        form.addRow("threads", self.threads_spin)
        form.addRow("overrides", self.overrides_edit)
        self._form = form
        self.kind_combo.currentTextChanged.connect(self._on_kind)
        self.config_button.clicked.connect(self._browse)
        self.sam_picker.changed.connect(self._on_sam_pick)
        self._on_kind(self.kind_combo.currentText())
        # "start from" offers the open project's modality (not the first teacher of all).
        self._context = context
        # A bound method, not a lambda: the per-viewer context would hold a lambda (and this
        # form) after the window is gone.
        context.project_changed.connect(self._on_context_project)
        self.picker.ready.connect(self.match_project_modality)
        self.student_picker.ready.connect(self.match_project_modality)
        self.kind_combo.currentTextChanged.connect(lambda _: self.match_project_modality())
        self.match_project_modality()

    def _on_context_project(self, _path: Any) -> None:
        self.match_project_modality()

    def match_project_modality(self) -> None:
        """Show and select the models of the project's modality (that of most of its
        images); with no project or no recorded modality the pickers stay as they are."""
        modality = project_modality(getattr(self._context, "store", None))
        if modality is None:
            return
        for picker in (self.picker, self.student_picker):
            if picker.is_ready and picker.modality != modality:
                picker.set_modality(modality)

    def job_form(self) -> JobForm:
        """The filled-in :class:`JobForm`; ValueError for unparsable overrides."""
        kind = self.kind_combo.currentText()
        entry = self.picker.current()
        student = self.student_picker.current()
        model = self.sam_picker.current_target() if kind == SAM_KIND else \
            entry.target if entry else None
        return JobForm(
            kind=kind, model=model,
            config_path=self.config_edit.text().strip() or None,
            steps=self.steps_spin.value(), minutes=self.minutes_spin.value(),
            images=self.images_combo.currentText(), num_samples=self.samples_spin.value(),
            device=self.device_combo.currentText(), threads=self.threads_spin.value(),
            overrides=parse_overrides(self.overrides_edit.text()),
            student=student.target if student else None,
            threshold=self.threshold_spin.value(), lora_rank=self.lora_spin.value())

    def _on_kind(self, kind: str) -> None:
        training, loop, sam = kind in TRAINING_KINDS, kind == "loop round", kind == SAM_KIND
        self._show(self.picker, kind != "train" and not sam, MODEL_ROW_TITLES.get(kind, "model"))
        self._show(self.sam_picker, sam)
        self._show(self.lora_spin, sam)
        if sam:
            self.sam_picker.activate()  # list the SAMs (not before: most users never ask)
        self._show(self.student_picker, loop)
        self._show(self.threshold_spin, loop)
        self._show(self.config_edit, training or loop, "student config" if loop else "config")
        for w in (self.steps_spin, self.minutes_spin, self.overrides_edit):
            self._show(w, kind in STEPPED_KINDS)
        self._show(self.images_combo, not training and not loop)
        self._show(self.samples_spin, not training)
        self.config_edit.setPlaceholderText(
            "the model's own training config" if kind == "fine-tune" else
            "the SAM's own training config (or a SamTrainConfig YAML)" if sam else
            "the student's own config; a file here starts a new student" if loop else
            "a TrainConfig YAML (required)" if training else "")

    def _on_sam_pick(self, _label: str, kind: str) -> None:
        self.lora_spin.setValue(SUGGESTED_LORA_RANK.get(kind, 0))

    def _show(self, widget: QWidget, visible: bool, title: str | None = None) -> None:
        field = self._config_row if widget is self.config_edit else widget
        label = self._form.labelForField(field)
        widget.setVisible(visible)
        if widget is self.config_edit:
            self.config_button.setVisible(visible)
        if label is not None:
            label.setVisible(visible)
            if title:
                label.setText(title)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Training config", "",
                                              "YAML / JSON (*.yaml *.yml *.json)")
        if path:
            self.config_edit.setText(path)
