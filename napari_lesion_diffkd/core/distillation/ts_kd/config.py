"""``TsKdConfig``: one task-specific KD run (seed 002 §3.2-3.3), read from YAML/JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_lesion_diffkd.core.config_files import check_keys, read_mapping
from napari_lesion_diffkd.core.distillation.ts_kd.data import VIEWS
from napari_lesion_diffkd.core.distillation.ts_kd.student import StudentConfig
from napari_lesion_diffkd.core.distillation.ts_kd.teacher import PROMPT_MODES
from napari_lesion_diffkd.core.diffusion.image_generator import ImageGeneratorConfig


@dataclass
class TsKdConfig:
    """Settings of ``trainer.run_ts_kd`` (YAML/JSON keys = attribute names).

    Stages, each skipped when it has nothing to do: (1) teacher: automatic prompt, LoRA;
    (2) image generator + generated images; (3) teacher outputs cached on the transfer set;
    (4) dual-level KD; (5) fine-tuning on the labels; (6) evaluation and bundle.

    Attributes:
        name, modality: bundle name and modality label.
        student: ``StudentConfig`` keys (``preset: vit-tiny`` or ``vit-mini`` + overrides).
        teacher_prompt: ``auto`` (the better of ``none``/``box`` on the training images),
            ``none`` or ``box`` (see ``teacher.py``).
        teacher_lora_rank: LoRA rank on q/v of the teacher's encoder (0: no fine-tuning).
        teacher_steps, teacher_minutes, teacher_lr, teacher_batch_size: its fine-tuning.
        generated_images: images drawn from the image generator for the transfer set
            (0: no generator). generator: ``ImageGeneratorConfig`` overrides.
        generated_dir: use the images of this folder as the generated set instead of
            training a generator (e.g. another run's ``generated/``).
        transfer_real: the labelled training images (their images only) join the transfer set.
        views: views of each image (``data.VIEWS``) used for KD (teacher outputs cached per
            view) and as augmentation in fine-tuning.
        hidden_weight, logit_weight: KD loss weights (seed 002 Table 8 TS-KD1: hidden states
            1.0, decoder-logit MSE 0.2).
        kd_steps, kd_minutes, kd_lr: the KD stage (0 steps: no KD, the student trains from
            scratch on the labels: the baseline).
        finetune_steps, finetune_minutes, finetune_lr: fine-tuning with
            ``ce_weight`` · CE + ``dice_weight`` · Dice (seed 002 eq. 4: 0.2 / 0.8).
        batch_size, warmup_steps, weight_decay, grad_clip: AdamW for both student stages.
        val_fraction, split_seed: the group-aware split (``datasets.group_split``).
        checkpoint_every: steps between ``checkpoint.pt`` writes.
        amp_bf16: bf16 autocast for the student's forward passes.
        seed: initialisation, data order, views.
    """

    name: str = "ts-kd-student"
    modality: str = "any"
    student: dict[str, Any] = field(default_factory=lambda: {"preset": "vit-tiny"})
    teacher_prompt: str = "auto"
    teacher_lora_rank: int = 4
    teacher_steps: int = 200
    teacher_minutes: float | None = 2.0
    teacher_lr: float = 1e-3
    teacher_batch_size: int = 8
    generated_images: int = 0
    generator: dict[str, Any] = field(default_factory=dict)
    generated_dir: str | None = None
    transfer_real: bool = True
    views: tuple[str, ...] = ("identity", "hflip")
    hidden_weight: float = 1.0
    logit_weight: float = 0.2
    kd_steps: int = 2000
    kd_minutes: float | None = 4.0
    kd_lr: float = 5e-4
    finetune_steps: int = 2000
    finetune_minutes: float | None = 4.0
    finetune_lr: float = 3e-4
    ce_weight: float = 0.2
    dice_weight: float = 0.8
    batch_size: int = 8
    warmup_steps: int = 30
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    val_fraction: float = 0.2
    split_seed: int = 0
    checkpoint_every: int = 50
    amp_bf16: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.views = tuple(self.views)
        bad = sorted(set(self.views) - set(VIEWS))
        if bad or not self.views:
            raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {list(self.views)}")
        if self.teacher_prompt not in ("auto", *PROMPT_MODES):
            raise ValueError(f"teacher_prompt must be auto, {' or '.join(PROMPT_MODES)}; got "
                             f"{self.teacher_prompt!r}")
        for key in ("teacher_steps", "generated_images", "kd_steps", "finetune_steps",
                    "teacher_lora_rank"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0")
        if self.finetune_steps == 0 and self.kd_steps == 0:
            raise ValueError("kd_steps and finetune_steps are both 0: nothing to train")
        self.student_config()  # fail early on bad student keys
        self.generator_config()

    def student_config(self) -> StudentConfig:
        return StudentConfig.from_dict(self.student)

    def generator_config(self) -> ImageGeneratorConfig:
        return ImageGeneratorConfig.from_dict({"seed": self.seed, **self.generator})

    @property
    def needs_teacher(self) -> bool:
        return self.kd_steps > 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TsKdConfig:
        check_keys(cls, data, "TS-KD")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> TsKdConfig:
        """Read a YAML or JSON file (``method: ts-kd`` is allowed and ignored)."""
        data = read_mapping(path)
        method = data.pop("method", "ts-kd")
        if method != "ts-kd":
            raise ValueError(f"config is for method {method!r}, not ts-kd")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["views"] = list(self.views)
        return d

    def fit_budget(self, max_minutes: float) -> None:
        """Scale the training stages' minute budgets down so that they sum to ``max_minutes``.

        Only stages that run count (teacher fine-tuning, generator, KD, fine-tuning); a
        stage without a budget gets an equal share of what the others leave.
        """
        stages: list[tuple[str, str]] = []
        if self.needs_teacher and self.teacher_lora_rank > 0 and self.teacher_steps > 0:
            stages.append(("self", "teacher_minutes"))
        if self.needs_teacher and self.generated_images > 0 and not self.generated_dir:
            stages.append(("generator", "minutes"))
        if self.kd_steps > 0:
            stages.append(("self", "kd_minutes"))
        if self.finetune_steps > 0:
            stages.append(("self", "finetune_minutes"))

        def get(owner: str, key: str) -> float | None:
            return getattr(self, key) if owner == "self" else self.generator.get(key)

        def put(owner: str, key: str, value: float) -> None:
            if owner == "self":
                setattr(self, key, value)
            else:
                self.generator = {**self.generator, key: value}

        known = [get(o, k) for o, k in stages]
        total_known = sum(v for v in known if v is not None)
        unset = [s for s, v in zip(stages, known) if v is None]
        for s in unset:
            put(*s, max(max_minutes - total_known, 0.0) / len(unset) if total_known < max_minutes
                else max_minutes / len(stages))
        total = sum(float(get(o, k) or 0.0) for o, k in stages)
        if total > max_minutes > 0:
            for o, k in stages:
                put(o, k, float(get(o, k) or 0.0) * max_minutes / total)
