"""``predict``, ``pseudo-label`` and ``score`` jobs: :func:`core.segmenter.segment_image`
over the project's images, results stored in the project.

Per 2D image (volumes are skipped with a log line), in order: reuse a stored prediction with the same model, version and requested
settings (``reuse``, default true), else segment and store one; for ``pseudo-label`` save
the consensus as a ``pseudo`` label authored ``job:<id>`` unless the image has a human label
or already has this job's pseudo label. Each image is committed on its own, so a killed or
cancelled run continues where it stopped (nothing is redone).
"""

from __future__ import annotations

from typing import Any

from napari_lesion_diffkd.core.store.errors import InvalidInputError
from napari_lesion_diffkd.core.store.records import ImageRecord
from napari_lesion_diffkd.core.store.results import settings_key
from napari_lesion_diffkd.core.tasks import TaskContext, TaskResult
from napari_lesion_diffkd.core.tasks.common import apply_threads, resolve_job_model

DEFAULT_SCORE = "sample_disagreement"


def _select_images(ctx: TaskContext) -> list[ImageRecord]:
    which = ctx.job.config.get("images", "unlabelled")
    if which == "unlabelled":
        return ctx.store.unlabelled_images()
    if which == "all":
        return ctx.store.images()
    if isinstance(which, list):
        return [ctx.store.image(ref) for ref in which]
    raise InvalidInputError(f"images must be 'unlabelled', 'all' or a list, got {which!r}")


def _request(config: dict[str, Any], bundle: Any) -> dict[str, Any]:
    """The segment_image settings asked for, defaults filled from the bundle, so that the
    same request always gives the same settings key."""
    defaults = bundle.config.get("sampler", {})
    sampler = config.get("sampler") or defaults.get("name", "ddim")
    steps = config.get("num_steps")
    if steps is None and sampler == defaults.get("name", "ddim"):
        steps = defaults.get("num_steps")
    return {"num_samples": int(config.get("num_samples") or defaults.get("num_samples", 8)),
            "num_steps": steps, "sampler": sampler,
            "fusion": config.get("fusion", "staple"), "seed": int(config.get("seed", 0)),
            "uncertainty": config.get("uncertainty", "entropy")}


def run_predict(ctx: TaskContext) -> TaskResult:
    """Run the job (see module docstring). Returns counts, and for ``score`` the ranking
    ``[{"image", "id", "score", "scores", "prediction"}, ...]`` most uncertain first."""
    from napari_lesion_diffkd.core.bundle import load_bundle
    from napari_lesion_diffkd.core.jobs import JobEvent, run_to_completion
    from napari_lesion_diffkd.core.segmenter import segment_image

    cfg, store, job = ctx.job.config, ctx.store, ctx.job
    apply_threads(cfg)
    if not cfg.get("model"):
        raise InvalidInputError(f"{job.type} job {job.id}: config needs a model")
    ref = resolve_job_model(store, str(cfg["model"]))
    bundle = load_bundle(ref.path, ctx.device)
    request = _request(cfg, bundle)
    key = settings_key(ref.name, ref.version, request)
    images = _select_images(ctx)
    yield JobEvent("log", message=f"{job.type}: {len(images)} images with {ref.name} "
                                  f"{ref.version} on {ctx.device}")
    author = f"job:{job.id}"
    counts = {"images": len(images), "predicted": 0, "reused": 0, "pseudo_labels": 0,
              "skipped_3d": 0}
    ranking: list[dict[str, Any]] = []
    for i, image in enumerate(images):
        if len(image.shape) != 2:  # the segmenters are 2D; volumes are not sliced here
            counts["skipped_3d"] += 1
            yield JobEvent("log", step=i + 1, total=len(images),
                           message=f"{image.name}: skipped, a {image.shape} volume")
            continue
        stored = store.predictions(image, settings_key=key) if cfg.get("reuse", True) else []
        if stored:
            prediction = stored[-1]
            counts["reused"] += 1
        else:
            pixels = store.read_image(image).data
            result = run_to_completion(segment_image(bundle, pixels, **request))
            prediction = store.save_prediction(image, result, ref.name, ref.version,
                                               job_id=job.id, request=request)
            counts["predicted"] += 1
        if job.type == "pseudo-label" and _wants_pseudo(store, image, author):
            store.save_label(image, store.read_prediction(prediction, "consensus"),
                             kind="pseudo", author=author, model_name=ref.name,
                             model_version=ref.version, note=f"prediction {prediction.id}")
            counts["pseudo_labels"] += 1
        score_key = cfg.get("score_key", DEFAULT_SCORE)
        ranking.append({"image": image.name, "id": image.id, "prediction": prediction.id,
                        "score": prediction.scores.get(score_key), "scores": prediction.scores})
        yield JobEvent("progress", step=i + 1, total=len(images), message=image.name,
                       values={k: float(v) for k, v in prediction.scores.items()})
    result_dict: dict[str, Any] = {**counts, "model": ref.name, "model_version": ref.version,
                                   "settings_key": key}
    if job.type == "score":
        ranking.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))
        result_dict["score_key"] = cfg.get("score_key", DEFAULT_SCORE)
        result_dict["ranking"] = ranking
    return result_dict


def _wants_pseudo(store: Any, image: ImageRecord, author: str) -> bool:
    """No human label (it would win anyway) and not already labelled by this job."""
    versions = store.label_versions(image)
    return not any(v.is_human for v in versions) and not any(
        v.kind == "pseudo" and v.author == author for v in versions)
