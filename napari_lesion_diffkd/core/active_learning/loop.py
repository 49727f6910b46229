"""One round of the semi-supervised active-learning loop over a project store: the job type
``loop-round`` (``lesion-diffkd loop`` submits and runs rounds).

A round runs five steps in order, inline in its job's process; every output carries the
round's job id (models and predictions ``job_id``, pseudo labels authored ``job:<id>``):

1. ``teacher``: fine-tune the current teacher on the human labels (a ``train`` job's work
   with ``init_bundle``), registered as the next version of its name;
2. ``pseudo-label``: the new teacher segments every unlabelled image (K samples, STAPLE
   consensus, uncertainty, stored as predictions) and each consensus becomes a ``pseudo``
   label, never on an image with a human label (the ``pseudo-label`` job's work);
3. ``student``: distil the student from the new teacher on the human labels plus the
   *confident* pseudo labels; a ``trajectory`` student also gets the other unlabelled
   images as teacher-only targets (``student_unlabelled``), as ``distill --unlabeled``;
4. ``score``: the new student scores every unlabelled image (the ``score`` job's work);
5. ``queue``: a query strategy orders all scored unlabelled images, stored with the round
   number as the project's annotation queue (``core/active_learning/rounds.py``).

Confidence rule
    A pseudo label is *confident* when the teacher's per-image score ``score_key``
    (default ``sample_disagreement`` = 1 - mean pairwise Dice of the K samples, in [0, 1])
    is ``<= threshold`` (default 0.1: the samples agree with a mean Dice of at least 0.9)
    and its consensus covers at least ``min_foreground`` of the image (default 0, off; an
    all-empty set of samples scores 0, so raise it where every image has a lesion).

Queue order
    The scored images are ordered batch by batch: :func:`.strategies.select_batch` picks
    ``batch_size`` images from those not yet placed, until all are placed. For
    ``uncertainty`` this is simply descending score (ties in image order); for
    ``uncertainty-diversity`` every batch is a spread-out set among the most uncertain
    left; ``random`` gives a random permutation (seeded by ``seed`` and the round).

Stopping and re-running
    The round is a generator of :class:`JobEvent` and can be stopped at any event. A
    finished step is recorded in the round's row (``loop_rounds.steps``) after its outputs
    are committed and is skipped on a re-run of the same job; an unfinished step continues:
    training from its checkpoint (or, if the model was already registered, not at all),
    pseudo-labelling and scoring from the first image without a stored prediction.

Config keys of a ``loop-round`` job (all optional, relative paths are relative to the
project folder):

========================  ==============================================================
``teacher``               starting teacher: project tag, registered name or bundle folder
                          (default: the newest project model with role ``teacher``)
``teacher_config``        TrainConfig file or dict for fine-tuning (default: the starting
                          teacher's own training config, from its bundle)
``teacher_overrides``     TrainConfig fields to change (e.g. ``max_steps``)
``student``               starting student (default: with ``student_config``, a new one;
                          without, the newest project model with role ``student``)
``student_config``        TrainConfig of the student (default: the starting student's)
``student_overrides``     TrainConfig fields to change
``student_unlabelled``    true (default): the unconfident unlabelled images train a
                          trajectory student on the teacher's masks only
``num_samples``           K for pseudo-labelling and scoring (default: each model's own)
``pseudo_label``          predict settings of that step: ``num_samples``, ``num_steps``,
                          ``sampler``, ``fusion``, ``seed``, ``uncertainty``
``scoring``               the same for the scoring step
``threshold``             the confidence rule above (default 0.1)
``score_key``             the confidence rule's and the strategies' score
                          (default ``sample_disagreement``)
``min_foreground``        the confidence rule's minimum mask fraction (default 0.0)
``strategy``              ``random`` | ``uncertainty`` (default) | ``uncertainty-diversity``
``batch_size``            queue batch size (default 10)
``seed``                  seed of the ``random`` strategy (default 0)
``device``, ``threads``   as for every job
========================  ==============================================================

A model's name is its training config's ``name``; each round starts from the newest
project version of that name when there is one (so round 2 fine-tunes round 1's models),
else from ``teacher`` / ``student`` (an explicit ``name@vN`` always wins).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_lesion_diffkd.core.active_learning.strategies import STRATEGIES, select_batch
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.store.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np

    from napari_lesion_diffkd.core.store.project import ProjectStore
    from napari_lesion_diffkd.core.tasks import TaskContext, TaskResult
    from napari_lesion_diffkd.core.tasks.common import ModelRef

#: The per-image scores a stored prediction carries (``ensemble.uncertainty.image_scores``).
SCORE_KEYS = ("sample_disagreement", "boundary_entropy", "mean_entropy", "mean_variance",
              "mean_mutual_information")
PREDICT_KEYS = ("num_samples", "num_steps", "sampler", "fusion", "seed", "uncertainty")
STEPS = ("teacher", "pseudo-label", "student", "score", "queue")
_MODEL_KEYS = ("teacher", "teacher_config", "teacher_overrides", "student", "student_config",
               "student_overrides")
_KEYS = {*_MODEL_KEYS, "student_unlabelled", "num_samples", "pseudo_label", "scoring",
         "threshold", "score_key", "min_foreground", "strategy", "batch_size", "seed",
         "device", "threads"}

StepResult = Generator[JobEvent, None, tuple[dict[str, Any], dict[str, Any]]]


@dataclass(frozen=True)
class LoopSettings:
    """The loop-specific part of a ``loop-round`` config (see the module docstring)."""

    strategy: str = "uncertainty"
    threshold: float = 0.1
    score_key: str = "sample_disagreement"
    min_foreground: float = 0.0
    student_unlabelled: bool = True
    batch_size: int = 10
    seed: int = 0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LoopSettings:
        """Check a whole ``loop-round`` config and return its loop settings.

        Raises:
            InvalidInputError: unknown key or a bad value (the message names it).
        """
        unknown = sorted(set(config) - _KEYS)
        if unknown:
            raise InvalidInputError(f"loop-round: unknown config keys {unknown}; known: "
                                    f"{sorted(_KEYS)}")
        for key in ("pseudo_label", "scoring", "teacher_overrides", "student_overrides"):
            if not isinstance(config.get(key) or {}, dict):
                raise InvalidInputError(f"loop-round: {key} must be an object")
        for key in ("pseudo_label", "scoring"):
            bad = sorted(set(config.get(key) or {}) - set(PREDICT_KEYS))
            if bad:
                raise InvalidInputError(f"loop-round: {key} keys {bad}; known: {PREDICT_KEYS}")
        values = {f.name: config[f.name] for f in dataclasses.fields(cls)
                  if config.get(f.name) is not None}
        if not isinstance(values.get("student_unlabelled", True), bool):
            raise InvalidInputError("loop-round: student_unlabelled must be true or false")
        try:  # numbers may come as text (e.g. from a YAML string)
            settings = cls(**{k: type(getattr(cls, k))(v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"loop-round: bad value: {exc}") from exc
        if settings.strategy not in STRATEGIES:
            raise InvalidInputError(f"loop-round: unknown strategy {settings.strategy!r}; "
                                    f"choose one of {STRATEGIES}")
        if settings.score_key not in SCORE_KEYS:
            raise InvalidInputError(f"loop-round: unknown score_key {settings.score_key!r}; "
                                    f"choose one of {SCORE_KEYS}")
        if settings.threshold < 0 or not 0 <= settings.min_foreground <= 1:
            raise InvalidInputError("loop-round: need threshold >= 0, 0 <= min_foreground <= 1")
        if settings.batch_size < 1:
            raise InvalidInputError("loop-round: batch_size must be >= 1")
        return settings


def run_loop_round(ctx: TaskContext) -> TaskResult:
    """Run (or continue) the round of job ``ctx.job`` (see the module docstring).

    Returns:
        ``{"round", "teacher", "student", "pseudo_labels", "confident", "teacher_only",
        "queue", "queue_top", "strategy", "threshold", "score_key", "steps"}``; ``steps``
        maps each step to its record (model tags, counts, ``seconds``).
    """
    from napari_lesion_diffkd.core.data.writers import atomic_write
    from napari_lesion_diffkd.core.active_learning import rounds

    settings = LoopSettings.from_config(ctx.job.config)
    rnd = rounds.start_round(ctx.store, ctx.job.id, settings.strategy)
    done = dict(rnd.steps)
    yield JobEvent("log", message=f"round {rnd.round} (job {ctx.job.id}) on {ctx.device}: "
                                  f"strategy {settings.strategy}, confident when "
                                  f"{settings.score_key} <= {settings.threshold}")
    steps: dict[str, Callable[..., StepResult]] = {
        "teacher": _teacher_step, "pseudo-label": _pseudo_step, "student": _student_step,
        "score": _score_step, "queue": _queue_step}
    for index, name in enumerate(STEPS):
        tag = f"{index + 1}/{len(STEPS)} {name}"
        if name in done:
            yield JobEvent("log", message=f"{tag}: done by an earlier attempt, skipped")
            continue
        start = time.monotonic()
        record, details = yield from _tagged(steps[name](ctx, rnd.round, settings, done), tag)
        record["seconds"] = round(time.monotonic() - start, 2)
        entries = details.pop("entries", None)
        # The artifact first, then the row: a recorded step always has its artifact.
        artifact = ctx.work_dir / "steps" / f"{name}.json"
        text = json.dumps({**record, **details}, indent=1, default=str).encode()
        atomic_write(artifact, lambda fh, data=text: fh.write(data))
        if entries is not None:  # the queue, this record and finished_at in one transaction
            rounds.finish_round(ctx.store, rnd.round, entries, name, record)
        else:
            rounds.record_step(ctx.store, rnd.round, name, record)
        done[name] = record
        yield JobEvent("checkpoint", step=index + 1, total=len(STEPS), message=str(artifact))
        yield JobEvent("log", message=f"{tag}: " + ", ".join(
            f"{k} {v}" for k, v in record.items()
            if k != "settings_key" and not isinstance(v, (list, dict))))
    queue = done["queue"]
    return {"round": rnd.round, "teacher": done["teacher"]["model"],
            "student": done["student"]["model"],
            "pseudo_labels": done["pseudo-label"]["pseudo_labels"],
            "confident": done["pseudo-label"]["confident"],
            "teacher_only": done["pseudo-label"]["teacher_only"],
            "queue": queue["images"], "queue_top": queue["top"],
            "strategy": settings.strategy, "threshold": settings.threshold,
            "score_key": settings.score_key, "steps": done}


def _tagged(gen: Generator[JobEvent, None, Any], tag: str) -> Generator[JobEvent, None, Any]:
    """Pass ``gen``'s events on with ``tag`` before their message (a checkpoint event's
    message is its file and stays as it is); closing this closes ``gen``."""
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if event.kind != "checkpoint":
                event = dataclasses.replace(event, message=f"{tag}: {event.message}")
            yield event
    finally:
        gen.close()


def _sub_context(ctx: TaskContext, job_type: str, config: dict[str, Any],
                 folder: str | None = None) -> TaskContext:
    """The context a step hands to a job type's function: same job id (so its outputs name
    the round's job), the step's type and config, its own folder under the job's."""
    from napari_lesion_diffkd.core.tasks import TaskContext

    common = {k: ctx.job.config[k] for k in ("device", "threads") if k in ctx.job.config}
    job = dataclasses.replace(ctx.job, type=job_type, config={**common, **config})
    work_dir = ctx.work_dir / folder if folder else ctx.work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    return TaskContext(store=ctx.store, job=job, work_dir=work_dir, device=ctx.device)


def _predict_settings(config: dict[str, Any], key: str) -> dict[str, Any]:
    settings = {"num_samples": config["num_samples"]} if config.get("num_samples") else {}
    return {**settings, **(config.get(key) or {})}


# --------------------------------------------------------------------- models


def _newest_with_role(store: ProjectStore, role: str) -> ModelRef | None:
    from napari_lesion_diffkd.core.tasks.common import ModelRef

    found = [m for m in store.models() if m.role == role]
    return ModelRef(found[-1].path, found[-1].name, f"v{found[-1].version}") if found else None


def _train_fields(store: ProjectStore, source: Any, start: ModelRef | None,
                  what: str) -> dict[str, Any]:
    """TrainConfig fields from a file / dict, else from ``start``'s bundle provenance."""
    import yaml

    from napari_lesion_diffkd.core.bundle import read_config
    from napari_lesion_diffkd.core.training.config import TrainConfig

    if isinstance(source, dict):
        return dict(source)
    if source:
        path = Path(str(source)).expanduser()
        path = path if path.is_absolute() else store.root / path
        if not path.is_file():
            raise InvalidInputError(f"loop-round: {what}_config {path}: no such file")
        return dict(yaml.safe_load(path.read_text()) or {})  # YAML is a superset of JSON
    if start is None:
        raise InvalidInputError(f"loop-round: no {what}: give {what} (a model) or "
                                f"{what}_config")
    saved = read_config(start.path).get("provenance", {}).get("train_config")
    if not saved:
        raise InvalidInputError(f"loop-round: {start.name} has no training config in its "
                                f"bundle; give {what}_config")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in saved.items() if k in known}


def _plan_model(ctx: TaskContext, what: str) -> tuple[dict[str, Any], Path | None]:
    """``what`` = teacher | student: its training fields (overrides applied) and the
    bundle it starts from (see the module docstring), or None for a fresh student."""
    from napari_lesion_diffkd.core.tasks.common import resolve_job_model

    cfg, store = ctx.job.config, ctx.store
    ref, source = cfg.get(what), cfg.get(f"{what}_config")
    if ref:
        start = resolve_job_model(store, str(ref))
    elif what == "teacher" or not source:  # a student config alone means a new student
        start = _newest_with_role(store, what)
    else:
        start = None
    fields = _train_fields(store, source, start, what)
    fields.update(cfg.get(f"{what}_overrides") or {})
    fields["name"] = str(fields.get("name") or (start.name if start else what))
    fields["role"] = what
    latest = store.find_model(fields["name"])
    if latest is not None and not (ref and "@v" in str(ref)):
        return fields, latest.path
    return fields, None if start is None else start.path


# --------------------------------------------------------------------- steps


def _teacher_step(ctx: TaskContext, round_no: int, settings: LoopSettings,
                  done: dict[str, Any]) -> StepResult:
    from napari_lesion_diffkd.core.active_learning.rounds import train_step

    fields, init = _plan_model(ctx, "teacher")
    if init is None:
        raise InvalidInputError("loop-round: no teacher to fine-tune; give teacher (a "
                                "registered name, bundle folder or project model)")
    fields.update(init_bundle=str(init), teacher=None)
    sub = _sub_context(ctx, "train", {"train_config": fields}, "teacher")
    return (yield from train_step(sub)), {}


def _pseudo_step(ctx: TaskContext, round_no: int, settings: LoopSettings,
                 done: dict[str, Any]) -> StepResult:
    from napari_lesion_diffkd.core.tasks.predict import run_predict

    store, teacher = ctx.store, done["teacher"]["model"]
    config = {**_predict_settings(ctx.job.config, "pseudo_label"), "model": teacher,
              "images": "unlabelled", "score_key": settings.score_key}
    result = yield from run_predict(_sub_context(ctx, "pseudo-label", config))
    author = f"job:{ctx.job.id}"
    labels = {v.image_id: v for v in store.label_versions(kind="pseudo") if v.author == author}
    scores = {p.image_id: p.scores.get(settings.score_key)
              for p in store.predictions(settings_key=result["settings_key"])}
    confident, teacher_only = [], []
    for image_id, version in sorted(labels.items()):  # image order
        if store.current_label(image_id).is_human:  # labelled meanwhile: no longer a target
            continue
        score = scores.get(image_id)
        foreground = float((store.read_label(version) > 0).mean())
        entry = {"image": store.image(image_id).name, "id": image_id, "score": score,
                 "foreground": foreground, "label": version.id}
        ok = (score is not None and score <= settings.threshold
              and foreground >= settings.min_foreground)
        (confident if ok else teacher_only).append(entry)
    record = {"teacher": teacher, "images": result["images"], "predicted": result["predicted"],
              "reused": result["reused"], "pseudo_labels": len(labels),
              "confident": len(confident), "teacher_only": len(teacher_only),
              "threshold": settings.threshold, "score_key": settings.score_key,
              "min_foreground": settings.min_foreground,
              "settings_key": result["settings_key"]}
    return record, {"confident_images": confident, "teacher_only_images": teacher_only}


def _student_step(ctx: TaskContext, round_no: int, settings: LoopSettings,
                  done: dict[str, Any]) -> StepResult:
    from napari_lesion_diffkd.core.store.records import HUMAN_KINDS
    from napari_lesion_diffkd.core.active_learning import rounds

    store = ctx.store
    pseudo = json.loads((ctx.work_dir / "steps" / "pseudo-label.json").read_text())
    human: dict[int, Any] = {}
    for version in store.label_versions():  # oldest first: the newest human label wins
        if version.kind in HUMAN_KINDS:
            human[version.image_id] = version
    items = [(store.image(i), v) for i, v in sorted(human.items())]
    items += [(store.image(e["id"]), store.label(e["label"]))
              for e in pseudo["confident_images"] if e["id"] not in human]
    data = ctx.work_dir / "student" / "data"
    pairs = rounds.write_dataset(store, data, items)
    extra = [store.image(e["id"]) for e in pseudo["teacher_only_images"]
             if e["id"] not in human] if settings.student_unlabelled else []
    fields, init = _plan_model(ctx, "student")
    if init is not None:
        fields["init_bundle"] = str(init)
    sub = _sub_context(ctx, "distill", {"train_config": fields, "data": [str(data)],
                                        "teacher": done["teacher"]["model"]}, "student")
    result = yield from rounds.train_step(sub, rounds.teacher_only_records(data, extra))
    record = {**result, "teacher": done["teacher"]["model"], "pairs": pairs,
              "human_labels": len(human), "pseudo_labels": len(items) - len(human)}
    return record, {}


def _score_step(ctx: TaskContext, round_no: int, settings: LoopSettings,
                done: dict[str, Any]) -> StepResult:
    from napari_lesion_diffkd.core.tasks.predict import run_predict

    student = done["student"]["model"]
    config = {**_predict_settings(ctx.job.config, "scoring"), "model": student,
              "images": "unlabelled", "score_key": settings.score_key}
    result = yield from run_predict(_sub_context(ctx, "score", config))
    ranking = [{k: r[k] for k in ("image", "id", "score", "prediction")}
               for r in result["ranking"]]
    record = {"student": student, "images": result["images"], "predicted": result["predicted"],
              "reused": result["reused"], "score_key": settings.score_key,
              "settings_key": result["settings_key"]}
    return record, {"ranking": ranking}


def _queue_step(ctx: TaskContext, round_no: int, settings: LoopSettings,
                done: dict[str, Any]) -> StepResult:
    import numpy as np

    store = ctx.store
    scored = json.loads((ctx.work_dir / "steps" / "score.json").read_text())["ranking"]
    unlabelled = {image.id for image in store.unlabelled_images()}
    rows = sorted((r for r in scored if r["id"] in unlabelled), key=lambda r: r["id"])
    if settings.strategy != "random" and any(r["score"] is None for r in rows):
        raise InvalidInputError(f"the student gives no {settings.score_key} score: the "
                                f"{settings.strategy!r} strategy needs a sampling model")
    scores = np.array([r["score"] or 0.0 for r in rows], dtype=np.float64)
    embeddings = None
    if settings.strategy == "uncertainty-diversity":
        embeddings = yield from _embeddings(ctx, done["student"]["model"], [r["id"] for r in rows])
    rng = np.random.default_rng([settings.seed, round_no])
    order = queue_order(settings.strategy, scores, embeddings, settings.batch_size, rng)
    ranked = [rows[i] for i in order]
    yield JobEvent("progress", step=1, total=1, message=f"{len(ranked)} images ordered")
    record = {"strategy": settings.strategy, "images": len(ranked),
              "batch_size": settings.batch_size, "top": [r["image"] for r in ranked[:10]]}
    return record, {"order": [r["image"] for r in ranked],
                    "entries": [(r["id"], r["score"]) for r in ranked]}


def queue_order(strategy: str, scores: np.ndarray, embeddings: np.ndarray | None,
                batch_size: int, rng: np.random.Generator) -> list[int]:
    """Indices of all ``len(scores)`` images in annotation order (see "Queue order").

    Args:
        scores: (N,) float64, higher = less certain.
        embeddings: (N, D) float32 for ``uncertainty-diversity``, else unused.
    """
    remaining = list(range(len(scores)))
    order: list[int] = []
    while remaining:
        picked = select_batch(strategy, remaining, batch_size, rng, scores=scores[remaining],
                              embeddings=None if embeddings is None else embeddings[remaining])
        order += [int(i) for i in picked]
        taken = set(picked)
        remaining = [i for i in remaining if i not in taken]
    return order


def _embeddings(ctx: TaskContext, model: str,
                image_ids: list[int]) -> Generator[JobEvent, None, np.ndarray]:
    """(N, D) float32 image embeddings by the student (``scoring.image_embedding``)."""
    import numpy as np

    from napari_lesion_diffkd.core.active_learning.scoring import image_embedding
    from napari_lesion_diffkd.core.bundle import load_bundle
    from napari_lesion_diffkd.core.data.preprocess import prepare_image
    from napari_lesion_diffkd.core.tasks.common import resolve_job_model

    bundle = load_bundle(resolve_job_model(ctx.store, model).path, ctx.device)
    rows = []
    for i, image_id in enumerate(image_ids):
        pixels = ctx.store.read_image(image_id).data
        x = prepare_image(pixels, bundle.input_size, bundle.image_channels)[None]
        rows.append(image_embedding(bundle, x.to(ctx.device)).cpu().numpy())
        yield JobEvent("progress", step=i + 1, total=len(image_ids), message="embedding")
    return np.concatenate(rows) if rows else np.zeros((0, 1), np.float32)
