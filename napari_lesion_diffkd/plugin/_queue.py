"""The project panel's data side (no Qt): the annotation queue and what opening an image loads.

Queue order: the stored ranking if the project has one, else image id. The stored ranking is
the annotation queue of the newest finished active-learning round
(``core.active_learning.rounds.annotation_queue``), else the ``ranking`` of the newest finished
``score`` job (``core.tasks.predict``: most uncertain first). Images it does not list
(labelled or added since) follow by id. Statuses: ``human`` (a person's label exists),
``pseudo`` (only model / pseudo labels), ``unlabelled``. The confidence badge comes from the
newest stored prediction's ``sample_disagreement`` (``_guidance.confidence_badge``).

:func:`load_for_viewing` runs in a worker thread and opens its own store: one SQLite
connection per thread (``core.store.project``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

SCORE_KEY = "sample_disagreement"


@dataclass(frozen=True)
class QueueRow:
    """One image of the queue: store id and name, its score (None if never scored), its
    status (``human`` | ``pseudo`` | ``unlabelled``) and its confidence badge (``high`` |
    ``medium`` | ``low``, ``""`` without a stored prediction)."""

    image_id: int
    name: str
    score: float | None
    status: str
    confidence: str = ""


def stored_ranking(store: Any) -> tuple[list[int], dict[int, float | None]] | None:
    """Image ids in stored annotation order and their scores (see the module docstring),
    or None when the project was never ranked."""
    from napari_lesion_diffkd.core.active_learning.rounds import annotation_queue

    entries = annotation_queue(store)
    if entries:
        return [e.image_id for e in entries], {e.image_id: e.score for e in entries}
    for job in reversed(store.jobs.list("done")):
        ranking = (job.result or {}).get("ranking") if job.type == "score" else None
        if ranking:
            ids = [int(r["id"]) for r in ranking]
            return ids, {int(r["id"]): r.get("score") for r in ranking}
    return None


def queue_rows(store: Any) -> list[QueueRow]:
    """The queue, in order (see module docstring). A handful of queries, any project size."""
    images = store.images()
    kinds: dict[int, set[str]] = {}
    for version in store.label_versions():
        kinds.setdefault(version.image_id, set()).add(version.kind)
    from napari_lesion_diffkd.plugin._guidance import confidence_badge

    latest_scores: dict[int, float | None] = {}
    for prediction in store.predictions():  # oldest first: the newest wins
        latest_scores[prediction.image_id] = prediction.scores.get(SCORE_KEY)
    badges = {i: confidence_badge(score) for i, score in latest_scores.items()}
    ranked = stored_ranking(store)
    order = [img.id for img in images]
    if ranked is not None:
        ids, scores = ranked
        known = set(order)
        first = [i for i in ids if i in known]
        order = first + [i for i in order if i not in set(first)]
        latest_scores.update({k: v for k, v in scores.items() if v is not None})
    by_id = {img.id: img for img in images}
    rows = []
    for image_id in order:
        found = kinds.get(image_id, set())
        status = "human" if found & {"human", "sam-assisted"} else \
            ("pseudo" if found else "unlabelled")
        rows.append(QueueRow(image_id, by_id[image_id].name, latest_scores.get(image_id),
                             status, badges.get(image_id, "")))
    return rows


@dataclass
class OpenedImage:
    """What the panel shows for one project image.

    Attributes:
        record: the :class:`core.store.ImageRecord`.
        layer: ``(data, kwargs, "image")`` from the plugin reader (scale = spacing, CT
            window for HU data); ``kwargs["name"]`` is the record's name.
        prediction: the newest cached prediction as a :class:`SegmentationResult` in the
            image's (Y, X) frame (STAPLE values are not stored: None), or None.
        prediction_model: ``name version`` of that prediction's model.
        label: the current label version's ids, (Y, X) / (Z, Y, X) uint8/uint16, or None.
        label_version: its :class:`core.store.LabelVersion`, or None.
    """

    record: Any
    layer: tuple[Any, dict[str, Any], str]
    prediction: Any = None
    prediction_model: str | None = None
    label: np.ndarray | None = None
    label_version: Any = None


def load_for_viewing(project: str | os.PathLike, image_id: int) -> OpenedImage:
    """Read an image, its newest prediction and its current label (worker thread)."""
    from napari_lesion_diffkd.core.segmenter import SegmentationResult
    from napari_lesion_diffkd.core.store import ProjectStore
    from napari_lesion_diffkd.plugin._reader import layer_tuple

    with ProjectStore(project) as store:
        record = store.image(image_id)
        loaded = store.read_image(record)
        data, kwargs, kind = layer_tuple(loaded)
        kwargs["name"] = record.name
        kwargs["metadata"] = {**kwargs["metadata"], "modality": record.modality
                              or kwargs["metadata"].get("modality"),
                              "project_image": {"project": str(store.root), "id": record.id}}
        opened = OpenedImage(record=record, layer=(data, kwargs, kind))
        predictions = store.predictions(record)
        if predictions:
            p = predictions[-1]
            samples = store.read_prediction(p, "samples").astype(bool)
            opened.prediction = SegmentationResult(
                samples=samples,
                probability=store.read_prediction(p, "probability"),
                consensus=store.read_prediction(p, "consensus").astype(bool),
                uncertainty=store.read_prediction(p, "uncertainty"),
                sensitivity=None, specificity=None, scores=dict(p.scores), seconds=0.0,
                settings={**p.settings, "model": f"{p.model_name} {p.model_version}"})
            opened.prediction_model = f"{p.model_name} {p.model_version}"
        version = store.current_label(record)
        if version is not None:
            opened.label = store.read_label(version)
            opened.label_version = version
    return opened
