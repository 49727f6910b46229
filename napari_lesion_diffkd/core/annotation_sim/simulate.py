"""The simulation job: every image, every workflow, one annotator; a cancellable generator.

:func:`simulate_annotation` yields a :class:`~napari_lesion_diffkd.core.jobs.JobEvent` after
every model call (forwarded from the segmenter) and after every (image, workflow), and returns
a :class:`SimulationResult`; stop it between yields with ``gen.close()`` (or
``jobs.run_to_completion(should_stop=...)``). It writes nothing (``report.py`` does).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.annotation_sim.noc import noc, summarise_traces, target_key
from napari_lesion_diffkd.core.annotation_sim.proposers import Proposal, Proposer
from napari_lesion_diffkd.core.annotation_sim.sam_annotator import SamAnnotator
from napari_lesion_diffkd.core.annotation_sim.triage import (
    DEFAULT_SCORE,
    SCORES,
    triage_shares,
    with_refine_scores,
)
from napari_lesion_diffkd.core.annotation_sim.workflows import (
    FIRST_MASK,
    Policy,
    annotate_image,
    check_workflows,
)
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.metrics import dice
from napari_lesion_diffkd.core.sam.refine_proposal import refine_consensus

#: Consensus masks below this Dice count as bad in the triage report.
TRIAGE_BELOW = 0.85


@dataclass
class AnnotationModels:
    """The models the simulated annotator uses.

    Attributes:
        sam: a ``core.sam.correction_backend.SamCorrection`` (the correction panel's backend).
        students: dataset name -> proposer of the modality's default model (always run:
            it feeds ``model-first``, ``uncertainty-guided`` and the triage).
        teachers: dataset name -> teacher proposer (needed for ``teacher-first`` only).
        names: model names for the report (``{"sam": .., "student:<dataset>": ..}``).
    """

    sam: Any
    students: dict[str, Proposer]
    teachers: dict[str, Proposer] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class SimulationResult:
    """Everything measured.

    Attributes:
        rows: one dict per (image, workflow) (the CSV rows, see :func:`trace_row`).
        summary: ``{workflow: {"noc@85": .., "failed@85": .., "no_prompt": .., "images": ..,
            "seconds_per_image": .., ["datasets": {name: {...}}]}}``.
        triage: ``{dataset: triage_shares(...) + {"score": name, "candidates": {score:
            triage_shares(...)} for every ``triage.SCORES``, "refined_shown": share of images
            where refined-first showed SAM's mask, "refined_dice": mean Dice of SAM's refined
            mask, "per_image": {"dice": [...], score: [...]}}}``.
        skipped: ``(dataset, id, reason)`` of images not simulated (no lesion in the mask).
        settings: policy, workflows and model names.
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    triage: dict[str, Any]
    skipped: list[tuple[str, str, str]]
    settings: dict[str, Any]


def _forward(gen: Generator[JobEvent, None, Any], step: int, total: int,
             message: str) -> Generator[JobEvent, None, Any]:
    """Drive a model's generator, re-labelling its events with the simulation's progress."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        yield JobEvent("progress", step=step, total=total, message=f"{message}: {event.message}")


def trace_row(dataset: str, image_id: str, workflow: str, trace, policy: Policy) -> dict:
    """The CSV row of one trace: ids, Dice first/final, prompts, NoC and reach per target."""
    row: dict[str, Any] = {
        "dataset": dataset, "id": image_id, "workflow": workflow,
        "first_dice": round(trace.dices[0], 4), "final_dice": round(trace.dices[-1], 4),
        "prompts": len(trace.prompts), "boxes": trace.prompts.count("box"),
        "positive_clicks": trace.prompts.count("+"), "negative_clicks": trace.prompts.count("-"),
        "reviews": trace.reviews, "restarted": int(trace.restarted), "undone": trace.undone,
    }
    for t in policy.targets:
        key = target_key(t)
        row[f"noc@{key}"] = noc(trace.dices, t, policy.max_prompts)
        row[f"reached@{key}"] = int(any(d >= t for d in trace.dices))
    row["seconds"] = round(trace.seconds, 4)
    row["dice_trace"] = ";".join(f"{d:.4f}" for d in trace.dices)
    row["prompt_trace"] = "".join("B" if p == "box" else p for p in trace.prompts)
    return row


def _summary(rows: list[dict], traces: dict, workflows, policy: Policy) -> dict[str, Any]:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))

    def block(selected: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = summarise_traces([traces[i] for i in selected], policy.targets,
                                               policy.max_prompts)
        sub = [rows[i] for i in selected]
        n = max(1, len(sub))
        out["seconds_per_image"] = sum(r["seconds"] for r in sub) / n
        out["restarted"] = sum(r["restarted"] for r in sub) / n
        out["undone_to_box"] = sum(r["undone"] > 0 for r in sub) / n
        out["reviews_per_image"] = sum(r["reviews"] for r in sub) / n
        out["first_dice"] = sum(r["first_dice"] for r in sub) / n
        return out

    summary: dict[str, Any] = {}
    for w in workflows:
        mine = [i for i, r in enumerate(rows) if r["workflow"] == w]
        summary[w] = block(mine)
        if len(datasets) > 1:
            summary[w]["datasets"] = {
                d: block([i for i in mine if rows[i]["dataset"] == d]) for d in datasets}
    return summary


def simulate_annotation(records: Sequence, models: AnnotationModels,
                        workflows: Sequence[str], policy: Policy,
                        triage_score: str = DEFAULT_SCORE,
                        ) -> Generator[JobEvent, None, SimulationResult]:
    """Simulate the annotator on every record in every workflow.

    Args:
        records: ``core.data.datasets.PairRecord`` list (``inputs.collect_records``).
        models: :class:`AnnotationModels` with a student proposer for every dataset (and a
            teacher for every dataset when ``teacher-first`` is asked).
        workflows: names from ``workflows.WORKFLOWS``.
        policy: the annotator's rules (checked here).
        triage_score: the per-image score used for ranking, one of ``triage.SCORES`` (the
            student's, or from its SAM-refined consensus).

    Yields:
        Progress events (``step`` = images done).

    Returns:
        :class:`SimulationResult`.

    Raises:
        ValueError: unknown workflow, bad policy, a missing proposer, an unreadable pair.
    """
    from napari_lesion_diffkd.core.data.datasets import read_pair

    workflows = check_workflows(workflows)
    policy.check()
    if triage_score not in SCORES:
        raise ValueError(f"unknown triage score {triage_score!r}; choose from "
                         f"{', '.join(SCORES)}")
    for r in records:
        if r.dataset not in models.students:
            raise ValueError(f"no model for dataset {r.dataset!r}")
        if "teacher-first" in workflows and r.dataset not in models.teachers:
            raise ValueError(f"teacher-first needs a teacher for dataset {r.dataset!r}")
    rows: list[dict[str, Any]] = []
    traces: dict[int, list[float]] = {}
    skipped: list[tuple[str, str, str]] = []
    triage_in: dict[str, dict[str, list[float]]] = {}
    refined_dice: dict[str, list[tuple[str, float]]] = defaultdict(list)
    total = len(records)
    for i, rec in enumerate(records):
        image, gt = read_pair(rec)
        label = f"{rec.dataset}/{rec.id}"
        if not gt.any():
            skipped.append((rec.dataset, rec.id, "no lesion in the mask"))
            yield JobEvent("log", step=i + 1, total=total, message=f"{label}: skipped, empty mask")
            continue
        key = (rec.dataset, rec.id)
        proposals: dict[str, Proposal] = {}
        proposals["student"] = yield from _forward(models.students[rec.dataset](image, key),
                                                   i, total, label)
        if "teacher-first" in workflows:
            proposals["teacher"] = yield from _forward(models.teachers[rec.dataset](image, key),
                                                       i, total, label)
        for p in proposals.values():
            if np.asarray(p.mask).shape != gt.shape:
                raise ValueError(f"{label}: the model's mask {np.asarray(p.mask).shape} does "
                                 f"not match the image {gt.shape}")
        student = proposals["student"]
        # The app encodes an image for SAM as soon as it is shown (prefetch); every workflow
        # that prompts on it is charged that encoding once, and refined-first always (its
        # proposal needs the embedding).
        encode_seconds = SamAnnotator(models.sam, image, key).encode()
        memo: dict = {}  # box-started prompt chains, shared by this image's workflows
        t0 = time.perf_counter()
        refined = refine_consensus(models.sam, image, student.mask, key)
        refine_seconds = time.perf_counter() - t0
        proposals["refined"] = Proposal(
            mask=refined.mask, uncertainty=None, model=student.model,
            scores=with_refine_scores(student.scores, refined.disagreement),
            seconds=student.seconds + encode_seconds + refine_seconds)
        image_scores = proposals["refined"].scores
        per = triage_in.setdefault(rec.dataset, {"dice": []})
        per["dice"].append(dice(student.mask, gt))
        for name in SCORES:
            per.setdefault(name, []).append(float(image_scores.get(name, float("nan"))))
        refined_dice[rec.dataset].append((refined.source, dice(refined.refined, gt)))
        for w in workflows:
            first = FIRST_MASK[w]
            proposal = None if first is None else proposals[first]
            annotator = SamAnnotator(models.sam, image, key, memo=memo)
            trace = annotate_image(w, gt, annotator, proposal, policy)
            if trace.prompts and w != "refined-first":  # refined-first paid it already
                trace.seconds += encode_seconds
            if proposal is not None:
                trace.seconds += proposal.seconds
            traces[len(rows)] = trace.dices
            rows.append(trace_row(rec.dataset, rec.id, w, trace, policy))
            yield JobEvent("progress", step=i + 1 if w == workflows[-1] else i, total=total,
                           message=f"{label}: {w} {len(trace.prompts)} prompt(s), "
                                   f"Dice {trace.dices[-1]:.3f}")
    triage = {}
    for d, per in triage_in.items():
        sources = [src for src, _ in refined_dice[d]]
        triage[d] = {"score": triage_score, "below": TRIAGE_BELOW,
                     **triage_shares(per[triage_score], per["dice"], TRIAGE_BELOW),
                     "candidates": {name: triage_shares(per[name], per["dice"], TRIAGE_BELOW)
                                    for name in SCORES},
                     "refined_shown": sources.count("refined") / max(1, len(sources)),
                     "refined_dice": float(np.mean([v for _, v in refined_dice[d]])),
                     "per_image": per}
    settings = {"workflows": list(workflows), "targets": list(policy.targets),
                "max_prompts": policy.max_prompts, "restart_below": policy.restart_below,
                "undo_to_box": policy.undo_to_box,
                "box_expand": policy.box_expand,
                "uncertainty_threshold": policy.uncertainty_threshold,
                "min_error_pixels": policy.min_error_pixels, "models": dict(models.names),
                "triage_score": triage_score}
    return SimulationResult(rows=rows, summary=_summary(rows, traces, workflows, policy),
                            triage=triage, skipped=skipped, settings=settings)
