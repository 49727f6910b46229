"""Job types: what a job process runs (the layer above the store: store <- tasks <-
active_learning <- job_runner). Each is a generator of :class:`JobEvent` that
returns a JSON-able result dict, like every long operation in core.

========================  ==============================================================
type                      config keys (JSON object)
========================  ==============================================================
``train``                 ``train_config`` (YAML/JSON path or a dict of ``TrainConfig``
                          fields), ``overrides`` (dict of fields), ``data`` (dataset
                          folders, comma separated; default: the project's human labels,
                          exported once into the job folder), ``init_model`` (fine-tune:
                          start from this model's weights), ``register`` (default true:
                          record the result as the next version of its model name)
``distill``               as ``train`` plus ``teacher`` (required); ``student_config`` is
                          accepted for ``train_config``
``predict``               ``model`` (project tag ``name@vN`` / ``name``, registered name or
                          bundle folder), ``images`` (``"unlabelled"`` default, ``"all"`` or
                          a list of names / ids), ``num_samples``, ``num_steps``,
                          ``sampler``, ``fusion``, ``seed``, ``uncertainty``, ``reuse``
                          (default true: keep a stored prediction with the same settings)
``pseudo-label``          as ``predict``; also saves each consensus as a ``pseudo`` label
                          (never for an image that has a human label)
``score``                 as ``predict``; the result ranks the images by ``score_key``
                          (default ``sample_disagreement``), most uncertain first
``sam-finetune``          train or LoRA-fine-tune a promptable SAM: ``sam_config``,
                          ``overrides``, ``data`` (default: the human labels), ``register``
                          (keys: ``core/tasks/sam.py``)
``loop-round``            one round of the active-learning loop: fine-tune the teacher,
                          pseudo-label, distil the student, score, re-rank the annotation
                          queue (keys: ``core/active_learning/loop.py``)
========================  ==============================================================

Every type also takes ``device`` (``auto`` default, ``cpu``, ``cuda``, ``cuda:1``, ``mps``)
and ``threads`` (torch CPU threads).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_lesion_diffkd.core.jobs import JobEvent

if TYPE_CHECKING:
    from napari_lesion_diffkd.core.store.project import ProjectStore
    from napari_lesion_diffkd.core.store.records import JobRecord

TaskResult = Generator[JobEvent, None, dict[str, Any]]


@dataclass
class TaskContext:
    """What a job type gets: the open store, its row, its own folder
    (``<project>/jobs/<id>``, kept across re-runs so checkpoints survive) and the device."""

    store: ProjectStore
    job: JobRecord
    work_dir: Path
    device: str


def _train(ctx: TaskContext) -> TaskResult:
    from napari_lesion_diffkd.core.tasks.train import run_train

    return run_train(ctx)


def _predict(ctx: TaskContext) -> TaskResult:
    from napari_lesion_diffkd.core.tasks.predict import run_predict

    return run_predict(ctx)


def _sam_finetune(ctx: TaskContext) -> TaskResult:
    from napari_lesion_diffkd.core.tasks.sam import run_sam_finetune

    return run_sam_finetune(ctx)


#: Job type -> function(ctx) returning the job's generator. The active-learning layer above
#: adds ``loop-round`` (see :func:`core.job_runner.job_types`); this layer must not import it.
TASKS: dict[str, Callable[[TaskContext], TaskResult]] = {
    "train": _train,
    "distill": _train,
    "predict": _predict,
    "pseudo-label": _predict,
    "score": _predict,
    "sam-finetune": _sam_finetune,
}


def resolve_job_device(config: dict[str, Any]) -> str:
    """The concrete device a job's config asks for, as the key of its device claim
    (``cpu``, ``cuda:0``, ``mps``): ``auto`` and a bare ``cuda`` are resolved here."""
    import torch

    from napari_lesion_diffkd.core.registry import resolve_device

    device = resolve_device(str(config.get("device", "auto")))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)
