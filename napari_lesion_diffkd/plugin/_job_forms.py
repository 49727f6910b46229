"""Jobs panel form -> a store job (type + JSON config), no Qt.

The panel's kinds map onto the store's job types (``core.tasks``):

=============  ===========  ==========================================================
panel kind     store type   config built here
=============  ===========  ==========================================================
fine-tune      train        ``init_model`` = the picked model; ``train_config`` = the
                            given file, else the model's own training config (bundle
                            provenance), so the network matches the weights
train          train        ``train_config`` = the given file (from scratch)
distill        distill      ``teacher`` = the picked model, ``student_config`` = file
pseudo-label   pseudo-label ``model``, ``images``, ``num_samples``
score          score        ``model``, ``images``, ``num_samples``
loop round     loop-round   ``teacher`` = the picked model; ``student`` = the picked
                            student, or ``student_config`` = the given file (a new
                            student); ``threshold`` (confident pseudo labels:
                            ``sample_disagreement <= threshold``), ``num_samples``;
                            ``steps`` / ``minutes`` / ``overrides`` go to both models'
                            training (``teacher_overrides``, ``student_overrides``); see
                            ``core/active_learning/loop.py``
SAM fine-tune  sam-finetune ``sam_config`` = the picked SAM's own training config
                            (bundle provenance), else the ``SamTrainConfig`` defaults,
                            with ``base`` = the pick and ``lora_rank`` = the form's;
                            or the given file (see ``_sam_job_form.py``)
=============  ===========  ==========================================================

Training kinds train on the project's human labels unless ``data`` is given. ``steps``
shortens a run (validation, checkpoints and warm-up are clipped to fit); ``minutes`` sets
its wall-clock budget; ``overrides`` is any further ``TrainConfig`` (for SAM:
``SamTrainConfig``) field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOB_KINDS: dict[str, str] = {
    "fine-tune": "train",
    "distill": "distill",
    "pseudo-label": "pseudo-label",
    "score": "score",
    "train": "train",
    "loop round": "loop-round",
    "SAM fine-tune": "sam-finetune",
}
TRAINING_KINDS = ("fine-tune", "train", "distill", "SAM fine-tune")
#: Default confidence threshold of a loop round (``core/active_learning/loop.py``).
LOOP_THRESHOLD = 0.1


@dataclass
class JobForm:
    """What the user filled in.

    Attributes:
        kind: a key of :data:`JOB_KINDS`.
        model: the picked model's load target (name or bundle folder); unused by ``train``.
        config_path: YAML/JSON ``TrainConfig`` file (``train``/``distill``: required).
        steps: optimiser steps (0: the config's).
        minutes: wall-clock budget in minutes (0: the config's).
        images: ``unlabelled`` | ``all`` (pseudo-label / score).
        num_samples: K (pseudo-label / score; 0: the model's default).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``mps``.
        threads: torch CPU threads of the job process (0: torch's default).
        overrides: further ``TrainConfig`` fields.
        data: dataset folders (comma separated) instead of the project's human labels.
        student: loop round: the student's load target (ignored when ``config_path``
            gives a student config: a new student).
        threshold: loop round: the confidence threshold of pseudo labels.
        lora_rank: SAM fine-tune: 0 trains every parameter; > 0 LoRA adapters of this
            rank on q/v of the image encoder, base frozen.
    """

    kind: str
    model: str | None = None
    config_path: str | None = None
    steps: int = 0
    minutes: float = 0.0
    images: str = "unlabelled"
    num_samples: int = 0
    device: str = "auto"
    threads: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    student: str | None = None
    threshold: float = LOOP_THRESHOLD
    lora_rank: int = 0


def parse_overrides(text: str) -> dict[str, Any]:
    """``"lr: 0.0005, batch_size: 4"`` (or a YAML/JSON mapping) -> dict; ValueError if not."""
    import yaml

    text = text.strip()
    if not text:
        return {}
    try:
        value = yaml.safe_load(text if text.startswith("{") else "{" + text + "}")
    except yaml.YAMLError as exc:
        raise ValueError(f"overrides are not a YAML mapping: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("overrides must be a mapping such as 'lr: 0.0005, batch_size: 4'")
    return value


def build_job(form: JobForm) -> tuple[str, dict[str, Any]]:
    """The store job type and config for a form; ValueError with what is missing."""
    if form.kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {form.kind!r}; one of {sorted(JOB_KINDS)}")
    config: dict[str, Any] = {"device": form.device}
    if form.threads:
        config["threads"] = int(form.threads)
    if form.kind in ("pseudo-label", "score"):
        if not form.model:
            raise ValueError(f"a {form.kind} job needs a model")
        config.update(model=form.model, images=form.images)
        if form.num_samples:
            config["num_samples"] = int(form.num_samples)
        return JOB_KINDS[form.kind], config
    if form.kind == "loop round":
        return JOB_KINDS[form.kind], {**config, **_loop_config(form)}
    if form.kind == "SAM fine-tune":
        return JOB_KINDS[form.kind], {**config, **_sam_config(form)}
    base = _base_config(form)
    overrides = dict(short_run_overrides(base, form.steps))
    if form.minutes:
        overrides["max_minutes"] = float(form.minutes)
    overrides.update(form.overrides)
    config["overrides"] = overrides
    if form.data:
        config["data"] = form.data
    if form.kind == "fine-tune":
        config.update(train_config=form.config_path or base, init_model=form.model)
    elif form.kind == "distill":
        if not form.model:
            raise ValueError("a distill job needs a teacher model")
        config.update(teacher=form.model, student_config=form.config_path)
    else:
        config["train_config"] = form.config_path
    return JOB_KINDS[form.kind], config


def _loop_config(form: JobForm) -> dict[str, Any]:
    """The ``loop-round`` keys of a loop-round form (see the module docstring)."""
    if not form.model:
        raise ValueError("a loop round needs a teacher model")
    if not form.config_path and not form.student:
        raise ValueError("a loop round needs a student: pick one or give a student config")
    if not 0.0 <= form.threshold <= 1.0:
        raise ValueError(f"threshold {form.threshold} is outside [0, 1]")
    config: dict[str, Any] = {"teacher": form.model, "threshold": float(form.threshold)}
    if form.config_path:
        config["student_config"] = form.config_path
    else:
        config["student"] = form.student
    if form.num_samples:
        config["num_samples"] = int(form.num_samples)
    teacher_base = _model_train_config(form.model)
    student_base = _base_config(JobForm("fine-tune", model=form.student,
                                        config_path=form.config_path))
    for key, base in (("teacher_overrides", teacher_base), ("student_overrides", student_base)):
        overrides = dict(short_run_overrides(base, form.steps))
        if form.minutes:
            overrides["max_minutes"] = float(form.minutes)
        overrides.update(form.overrides)
        if overrides:
            config[key] = overrides
    if form.data:
        raise ValueError("a loop round trains on the project's labels only (no data folders)")
    return config


def _sam_config(form: JobForm) -> dict[str, Any]:
    """The ``sam-finetune`` keys of a SAM fine-tune form (see the module docstring)."""
    from napari_lesion_diffkd.plugin._sam_job_form import check_sam_config, sam_start_config

    if not form.model:
        raise ValueError("a SAM fine-tune job needs the SAM to start from")
    if form.lora_rank < 0:
        raise ValueError(f"LoRA rank {form.lora_rank} is negative (0: full fine-tune)")
    if form.config_path:
        fields = _read_config_file(form.config_path)
    else:
        fields = sam_start_config(form.model)
        if form.lora_rank and not str(fields["name"]).endswith("-lora"):
            # Adapters are a version of their own kind (a partial bundle that needs its
            # base, and cannot be fine-tuned again): say so in the name.
            fields["name"] = f"{fields['name']}-lora"
    fields.update(base=form.model, lora_rank=int(form.lora_rank))
    overrides = dict(short_run_overrides(fields, form.steps))
    if form.minutes:
        overrides["max_minutes"] = float(form.minutes)
    overrides.update(form.overrides)
    check_sam_config(fields, overrides)
    config: dict[str, Any] = {"sam_config": fields, "overrides": overrides}
    if form.data:
        config["data"] = form.data
    return config


def _read_config_file(path_text: str) -> dict[str, Any]:
    """A YAML/JSON config file as a dict; ValueError when missing or not a mapping."""
    import yaml

    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    value = yaml.safe_load(path.read_text()) or {}
    if not isinstance(value, dict):
        raise ValueError(f"config file {path} is not a mapping of fields")
    return value


def _model_train_config(model: str) -> dict[str, Any]:
    """A bundle's own training config (provenance), {} when it stores none."""
    from napari_lesion_diffkd.core.bundle import read_config
    from napari_lesion_diffkd.core.registry import resolve_model

    return dict((read_config(resolve_model(model)).get("provenance") or {})
                .get("train_config") or {})


def _base_config(form: JobForm) -> dict[str, Any]:
    """The TrainConfig fields the job will start from (to fit ``steps`` into them)."""
    if form.config_path:
        return _read_config_file(form.config_path)
    if form.kind != "fine-tune":
        raise ValueError(f"a {form.kind} job needs a config file (a TrainConfig YAML)")
    if not form.model:
        raise ValueError("a fine-tune job needs the model to start from")
    from napari_lesion_diffkd.core.bundle import read_config
    from napari_lesion_diffkd.core.registry import resolve_model

    cfg = read_config(resolve_model(form.model))
    base = (cfg.get("provenance") or {}).get("train_config")
    if not base:
        raise ValueError(f"{form.model} stores no training config: give a config file")
    return dict(base)


def short_run_overrides(base: dict[str, Any], steps: int) -> dict[str, Any]:
    """Overrides that make a run ``steps`` long and still validate, checkpoint and warm up
    within it (an interval longer than the run would never fire)."""
    if not steps:
        return {}
    out: dict[str, Any] = {"max_steps": int(steps)}
    for key in ("val_every", "checkpoint_every"):
        if int(base.get(key, steps)) > steps:
            out[key] = int(steps)
    if int(base.get("warmup_steps", 0)) > steps // 10:
        out["warmup_steps"] = max(1, steps // 10)
    return out
