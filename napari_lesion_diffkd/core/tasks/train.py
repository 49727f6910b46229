"""``train`` and ``distill`` jobs: the trainer of ``core.training`` on project or folder data.

Everything a re-run needs to continue *exactly* is fixed by the first run and kept in the
job folder: ``train_config.json`` (the resolved config: overrides applied, teacher and
fine-tuning bundle as folders), ``data/`` (the exported human labels, with a ``.complete``
marker) and ``run/`` (the trainer's ``checkpoint.pt``, log and, at the end, the bundle). A
re-run finds ``run/checkpoint.pt`` and resumes from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from napari_lesion_diffkd.core.store.errors import InvalidInputError
from napari_lesion_diffkd.core.tasks import TaskContext, TaskResult
from napari_lesion_diffkd.core.tasks.common import apply_threads, resolve_job_model

CONFIG_SNAPSHOT = "train_config.json"
DONE_MARKER = ".complete"
CARD_NAME = "README.md"
#: Below this many validation images a model card warns that its Dice is unreliable (the
#: plugin's catalogue uses the same number).
FEW_VAL_IMAGES = 10


def _resolve_path(value: str, root: Path) -> Path:
    """A path from a job config: relative paths are relative to the project folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def _fresh_config(ctx: TaskContext) -> dict[str, Any]:
    """The run's TrainConfig fields from the job config (first run only)."""
    import yaml

    cfg = ctx.job.config
    source = cfg.get("train_config", cfg.get("student_config"))
    if source is None:
        raise InvalidInputError(f"{ctx.job.type} job {ctx.job.id}: config needs train_config "
                                "(a YAML/JSON file or a dict of TrainConfig fields)")
    if isinstance(source, dict):
        fields = dict(source)
    else:
        path = _resolve_path(str(source), ctx.store.root)
        if not path.is_file():
            raise InvalidInputError(f"train_config {path}: no such file")
        fields = yaml.safe_load(path.read_text()) or {}  # YAML is a superset of JSON
    fields.update(cfg.get("overrides") or {})
    if ctx.job.type == "distill":
        if not cfg.get("teacher"):
            raise InvalidInputError(f"distill job {ctx.job.id}: config needs a teacher")
        fields["teacher"] = str(resolve_job_model(ctx.store, str(cfg["teacher"])).path)
    if cfg.get("init_model"):
        fields["init_bundle"] = str(resolve_job_model(ctx.store, str(cfg["init_model"])).path)
    return fields


def _load_config(ctx: TaskContext):
    """The snapshot of an earlier attempt, else a fresh config saved as the snapshot."""
    from napari_lesion_diffkd.core.data.writers import atomic_write
    from napari_lesion_diffkd.core.training.config import TrainConfig

    snapshot = ctx.work_dir / CONFIG_SNAPSHOT
    if snapshot.is_file():
        return TrainConfig.from_file(snapshot)
    try:
        config = TrainConfig.from_dict(_fresh_config(ctx))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{ctx.job.type} job {ctx.job.id}: bad config: {exc}") from exc
    text = json.dumps(config.to_dict(), indent=2) + "\n"

    def _write(fh: BinaryIO) -> None:
        fh.write(text.encode())

    atomic_write(snapshot, _write)
    return config


def _data_folders(ctx: TaskContext) -> list[Path]:
    """The config's ``data`` folders, or the project's human labels exported once."""
    from napari_lesion_diffkd.core.store.transfer import export_labels

    data = ctx.job.config.get("data")
    if data:
        items = data if isinstance(data, list) else str(data).split(",")
        return [_resolve_path(str(d).strip(), ctx.store.root) for d in items if str(d).strip()]
    folder = ctx.work_dir / "data"
    if not (folder / DONE_MARKER).is_file():  # first run, or an export cut short: redo it
        shutil.rmtree(folder, ignore_errors=True)
        if export_labels(ctx.store, folder, which="human", images="link") == 0:
            raise InvalidInputError("the project has no human labels to train on")
        (folder / DONE_MARKER).write_text("")
    return [folder]


def prepare_run(ctx: TaskContext, checkpoint_name: str):
    """What every training job type needs: the pairs to train on (config ``data`` or the
    project's human labels), its run folder ``<job>/run``, whether a checkpoint there makes
    this a resume (said in the log), and the provenance to store in the bundle.

    A generator (it yields that log event); returns ``(records, run_dir, resume, provenance)``.
    """
    from napari_lesion_diffkd.core.jobs import JobEvent
    from napari_lesion_diffkd.core.training.cli_driver import collect_records

    folders = _data_folders(ctx)
    try:
        records = collect_records(",".join(str(f) for f in folders))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"training data: {exc}") from exc
    run_dir = ctx.work_dir / "run"
    resume = (run_dir / checkpoint_name).is_file()
    if resume:
        yield JobEvent("log", message=f"resuming from {run_dir / checkpoint_name}")
    elif ctx.job.attempts > 1:
        yield JobEvent("log", message="no checkpoint was saved: training starts again "
                       "from step 0")
    provenance = {"project": str(ctx.store.root), "job_id": ctx.job.id,
                  "job_type": ctx.job.type, "data": [str(f) for f in folders]}
    return records, run_dir, resume, provenance


def run_train(ctx: TaskContext) -> TaskResult:
    """Train (or distil) as the job config says; resume from the job's checkpoint if one
    exists; register the bundle as a new model version. Returns the trainer's summary plus
    ``model`` (``name@vN``) and ``path``."""
    from napari_lesion_diffkd.core.jobs import JobEvent
    from napari_lesion_diffkd.core.training.trainer import CHECKPOINT_NAME, train

    apply_threads(ctx.job.config)
    config = _load_config(ctx)
    records, run_dir, resume, provenance = yield from prepare_run(ctx, CHECKPOINT_NAME)
    summary = yield from train(config, records, run_dir, device=ctx.device, resume=resume,
                               provenance=provenance)
    result: dict[str, Any] = {k: v for k, v in summary.items() if k != "val_records"}
    result["path"] = str(run_dir)
    n_val = len(summary.get("val_records") or [])
    result["n_val"] = n_val
    if ctx.job.config.get("register", True):
        model = ctx.store.register_model(
            config.name, run_dir, role=config.role, job_id=ctx.job.id,
            metrics={"model_resolution_dice": summary.get("best_val_dice"), "n_val": n_val})
        result["model"] = model.tag
        yield JobEvent("log", message=f"registered {model.tag}")
        _write_card(run_dir, model.tag, config, summary, n_val)
    if n_val < FEW_VAL_IMAGES:
        yield JobEvent("log", message=f"validation Dice is from only {n_val} image(s): "
                       "label more images (or groups) for a score to rely on")
    return result


def model_card(tag: str, config: Any, summary: dict[str, Any], n_val: int) -> str:
    """A fine-tuned model's card: what it was trained from and on, and its validation
    score with the size of the validation set (a warning below FEW_VAL_IMAGES)."""
    dice = summary.get("best_val_dice")
    lines = [f"# {tag}", "",
             f"{config.role.capitalize()} for **{config.modality}**, trained by a project job"
             + (f" from `{Path(str(config.init_bundle)).name}`" if config.init_bundle else "")
             + f": {summary.get('steps')} steps.", "",
             "| | |", "|---|---|",
             f"| validation Dice (model resolution) | "
             f"{'-' if dice is None or dice < 0 else f'{dice:.3f}'} |",
             f"| validation images | {n_val} |", ""]
    if n_val < FEW_VAL_IMAGES:
        lines += [f"**Warning:** the validation Dice comes from only {n_val} image"
                  f"{'s' if n_val != 1 else ''}. It is not comparable with a registered "
                  f"model's score on dozens of images; label more images (from more "
                  f"patients / groups) before relying on it.", ""]
    return "\n".join(lines)


def _write_card(run_dir: Path, tag: str, config: Any, summary: dict[str, Any],
                n_val: int) -> None:
    try:
        (run_dir / CARD_NAME).write_text(model_card(tag, config, summary, n_val))
    except OSError:
        pass  # the card is a courtesy: the model is registered and usable without it
