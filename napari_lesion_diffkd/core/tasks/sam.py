"""The ``sam-finetune`` job type: train or LoRA-fine-tune a promptable SAM in a job process.

Config keys (JSON object): ``sam_config`` (YAML/JSON path of a ``SamTrainConfig``, relative
paths against the project folder, or a dict of its fields), ``overrides`` (dict of fields,
e.g. ``max_steps``, ``max_minutes``, ``lora_rank``, ``base``), ``data`` (dataset folders;
default: the project's human labels, exported once into the job folder, as for ``train``),
``register`` (default true), plus ``device`` / ``threads``.

``base: medsam-lite`` fine-tunes LiteMedSAM on the project's labels the same way (the Jobs
panel starts from ``training.medsam_lite_start_config()``: frozen encoder, embeddings cached
in the job's run folder, so a resumed job re-encodes nothing); the registered version stores
only its trained tensors and names medsam-lite by SHA-256.
"""

from __future__ import annotations

from typing import Any

from napari_lesion_diffkd.core.store.errors import InvalidInputError
from napari_lesion_diffkd.core.tasks import TaskContext, TaskResult
from napari_lesion_diffkd.core.tasks.common import apply_threads
from napari_lesion_diffkd.core.tasks.train import _resolve_path, prepare_run


def _sam_config(ctx: TaskContext):
    from napari_lesion_diffkd.core.sam.training import SamTrainConfig

    raw = ctx.job.config.get("sam_config")
    if raw is None:
        raise InvalidInputError("sam-finetune needs 'sam_config' (a config file or a dict)")
    try:
        if isinstance(raw, dict):
            config = SamTrainConfig.from_dict(dict(raw))
        else:
            config = SamTrainConfig.from_file(_resolve_path(str(raw), ctx.store.root))
        for key, value in (ctx.job.config.get("overrides") or {}).items():
            if not hasattr(config, key):
                raise ValueError(f"unknown SAM training key {key!r}")
            setattr(config, key, value)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"sam_config: {exc}") from exc
    return config


def run_sam_finetune(ctx: TaskContext) -> TaskResult:
    """Train as configured, resuming from the job's checkpoint if one exists; register the
    bundle as the next version of its name. Returns the trainer's summary plus ``model``
    (``name@vN``) and ``path``."""
    from napari_lesion_diffkd.core.jobs import JobEvent
    from napari_lesion_diffkd.core.sam.training import CHECKPOINT_NAME, train_promptable

    apply_threads(ctx.job.config)
    config = _sam_config(ctx)
    records, run_dir, resume, provenance = yield from prepare_run(ctx, CHECKPOINT_NAME)
    summary = yield from train_promptable(config, records, run_dir, device=ctx.device,
                                          resume=resume, provenance=provenance)
    result: dict[str, Any] = dict(summary)
    result["path"] = str(run_dir)
    if ctx.job.config.get("register", True):
        model = ctx.store.register_model(config.name, run_dir, role="promptable",
                                         job_id=ctx.job.id,
                                         metrics={"best_val": summary.get("best_val")})
        result["model"] = model.tag
        yield JobEvent("log", message=f"registered {model.tag}")
    return result
