"""The simulated annotator (core/annotation_sim): click rule, NoC, guidance, triage, and the
job on real PH2 images with the real lesion-sam-tiny (3 images, at most 3 prompts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_lesion_diffkd.core.annotation_sim.clicks import lesion_box, region_click, standard_click
from napari_lesion_diffkd.core.annotation_sim.guidance import RegionQueue, uncertain_regions
from napari_lesion_diffkd.core.annotation_sim.noc import noc, summarise_traces
from napari_lesion_diffkd.core.annotation_sim.triage import triage_shares
from napari_lesion_diffkd.core.annotation_sim.workflows import Policy, check_workflows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _disk(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


# -- the click rule ---------------------------------------------------------------------------
def test_missed_lesion_gets_a_positive_click_at_its_centre() -> None:
    gt = _disk((60, 80), (30, 50), 12)
    pred = np.zeros_like(gt)
    click = standard_click(pred, gt)
    assert click is not None and click.positive and click.label == 1
    assert (click.row, click.col) == (30, 50)  # napari (row, col): the disk's centre


def test_taken_background_gets_a_negative_click_inside_it() -> None:
    gt = _disk((60, 80), (30, 20), 8)
    extra = np.zeros_like(gt)
    extra[10:50, 55:75] = True  # a larger false-positive block
    click = standard_click(gt | extra, gt)
    assert click is not None and not click.positive
    assert extra[click.row, click.col]
    assert abs(click.row - 29.5) <= 1 and abs(click.col - 64.5) <= 1


def test_the_largest_error_region_wins_and_thin_slivers_are_hit_inside() -> None:
    gt = np.zeros((50, 50), dtype=bool)
    gt[5:45, 5:45] = True
    pred = gt.copy()
    pred[10:12, 10:40] = False       # a thin missed sliver, 60 px
    pred[30:35, 30:35] = False       # a small missed square, 25 px
    click = standard_click(pred, gt)
    assert click.positive and 10 <= click.row <= 11 and 10 <= click.col < 40
    assert standard_click(gt, gt) is None


def test_region_click_looks_only_inside_the_region() -> None:
    gt = _disk((60, 60), (30, 30), 15)
    pred = gt.copy()
    pred[0:10, 0:10] = True          # false positive far from the lesion
    pred[28:33, 40:46] = False       # a hole inside the lesion (the region's error)
    region = np.zeros_like(gt)
    region[25:36, 36:50] = True
    click = region_click(pred, gt, region)
    assert click is not None and click.positive and region[click.row, click.col]
    assert region_click(pred, gt, region, min_pixels=1000) is None
    assert region_click(gt, gt, region) is None
    with pytest.raises(ValueError):
        region_click(pred, gt, region[:10])


def test_lesion_box_is_a_napari_rectangle_around_the_lesion() -> None:
    gt = np.zeros((40, 100), dtype=bool)
    gt[10:20, 60:90] = True
    box = lesion_box(gt)
    assert box.shape == (4, 2)
    rows, cols = box[:, 0], box[:, 1]
    assert rows.min() <= 10 and rows.max() >= 19 and cols.min() <= 60 and cols.max() >= 89
    assert rows.max() < 40 and cols.max() < 100  # (row, col), clipped to the image
    with pytest.raises(ValueError):
        lesion_box(np.zeros((5, 5), dtype=bool))


# -- NoC ----------------------------------------------------------------------------------------
def test_noc_counts_prompts_to_the_target_and_failures_as_the_budget() -> None:
    assert noc([0.92], 0.90, 20) == 0                   # accepted as shown
    assert noc([0.0, 0.86, 0.91], 0.85, 20) == 1        # the box counts one
    assert noc([0.0, 0.86, 0.91], 0.90, 20) == 2
    assert noc([0.0, 0.5, 0.6], 0.90, 20) == 20          # never: the budget
    s = summarise_traces([[0.92], [0.0, 0.86, 0.91], [0.0, 0.5, 0.6]], (0.85, 0.90), 20)
    assert s["noc@85"] == pytest.approx((0 + 1 + 20) / 3)
    assert s["noc@90"] == pytest.approx((0 + 2 + 20) / 3)
    assert s["failed@90"] == pytest.approx(1 / 3) and s["failed@85"] == pytest.approx(1 / 3)
    assert s["no_prompt"] == pytest.approx(1 / 3) and s["images"] == 3


def test_policy_and_workflows_are_checked() -> None:
    with pytest.raises(ValueError, match="targets"):
        Policy(targets=(1.5,)).check()
    with pytest.raises(ValueError, match="max_prompts"):
        Policy(max_prompts=0).check()
    with pytest.raises(ValueError, match="unknown workflow"):
        check_workflows(["sam-first", "draw-it-myself"])
    assert check_workflows(["model-first", "sam-first", "model-first"]) == (
        "model-first", "sam-first")


# -- guidance and triage -----------------------------------------------------------------------
def test_uncertain_regions_are_ranked_by_summed_uncertainty_and_shown_once() -> None:
    u = np.zeros((40, 40), dtype=np.float32)
    u[2:6, 2:6] = 0.95     # small, very uncertain: sum 15.2
    u[20:30, 20:30] = 0.6  # large, less uncertain: sum 60
    u[35, 35] = np.nan
    regions = uncertain_regions(u, 0.5)
    assert len(regions) == 2 and regions[0][25, 25] and regions[1][3, 3]
    queue = RegionQueue(regions)
    assert queue.next_region()[25, 25] and queue.next_region()[3, 3]
    assert queue.next_region() is None and queue.reviewed == 2
    assert uncertain_regions(u, 0.99) == []


def test_triage_counts_bad_masks_in_the_most_uncertain_fractions() -> None:
    scores = [0.9, 0.1, 0.8, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.05]
    dices = [0.5, 0.95, 0.6, 0.9, 0.9, 0.9, 0.9, 0.9, 0.7, 0.8]
    t = triage_shares(scores, dices, below=0.85)
    assert t["bad"] == 4 and t["images"] == 10
    assert t["top10"] == pytest.approx(1 / 4)   # image 0
    assert t["top20"] == pytest.approx(2 / 4)   # images 0, 2
    assert t["top30"] == pytest.approx(3 / 4)   # images 0, 2, 8
    assert np.isnan(triage_shares([0.1], [0.99])["top30"])


# -- the job on real images --------------------------------------------------------------------
@pytest.fixture(scope="module")
def sam_backend():
    from napari_lesion_diffkd.core.sam.correction_backend import load_correction_backend

    return load_correction_backend("lesion-sam-tiny", device="cpu")


@pytest.fixture(scope="module")
def ph2_records(data_root: Path) -> list:
    from napari_lesion_diffkd.core.annotation_sim.inputs import collect_records

    return collect_records([data_root / "ph2_dermoscopy"], "validation", images=3)


def _perfect_proposer(records):
    """A fake segmenter returning each image's ground truth, with a flat uncertainty map."""
    from napari_lesion_diffkd.core.annotation_sim.proposers import Proposal
    from napari_lesion_diffkd.core.data.datasets import read_pair

    truth = {(r.dataset, r.id): read_pair(r)[1] for r in records}

    def propose(image, key):
        yield from ()
        mask = truth[key]
        return Proposal(mask=mask, uncertainty=np.zeros(mask.shape, np.float32),
                        scores={"sample_disagreement": 0.0}, model="oracle")

    return propose


def _models(records, backend, proposer):
    from napari_lesion_diffkd.core.annotation_sim import AnnotationModels

    d = records[0].dataset
    return AnnotationModels(sam=backend, students={d: proposer}, teachers={d: proposer},
                            names={"sam": "lesion-sam-tiny"})


def test_a_perfect_model_needs_no_prompt(ph2_records, sam_backend) -> None:
    from napari_lesion_diffkd.core.annotation_sim import Policy, simulate_annotation
    from napari_lesion_diffkd.core.jobs import run_to_completion

    policy = Policy(max_prompts=3)
    models = _models(ph2_records, sam_backend, _perfect_proposer(ph2_records))
    result = run_to_completion(simulate_annotation(
        ph2_records, models, ("sam-first", "model-first", "uncertainty-guided",
                              "teacher-first"), policy))
    for w in ("model-first", "uncertainty-guided", "teacher-first"):
        s = result.summary[w]
        assert s["no_prompt"] == 1.0 and s["noc@85"] == 0 and s["noc@90"] == 0
        assert s["failed@90"] == 0 and s["images"] == 3
    sam_first = result.summary["sam-first"]
    assert sam_first["no_prompt"] == 0 and 1 <= sam_first["noc@85"] <= 3  # a box at least
    assert len(result.rows) == 12 and {r["workflow"] for r in result.rows} == set(result.summary)
    assert all(r["prompt_trace"].startswith("B") for r in result.rows
               if r["workflow"] == "sam-first")
    assert result.triage["ph2_dermoscopy"]["bad"] == 0


def test_the_default_student_with_real_sam_on_real_images(ph2_records, sam_backend) -> None:
    from napari_lesion_diffkd.core.annotation_sim import Policy, simulate_annotation
    from napari_lesion_diffkd.core.annotation_sim.model_setup import build_models
    from napari_lesion_diffkd.core.jobs import run_to_completion

    models = build_models(ph2_records, sam_backend, "lesion-sam-tiny")
    assert models.names["student:ph2_dermoscopy"] == "dermoscopy-student"
    policy = Policy(max_prompts=3)
    result = run_to_completion(simulate_annotation(
        ph2_records, models, ("sam-first", "uncertainty-guided"), policy))
    for r in result.rows:
        trace = [float(v) for v in r["dice_trace"].split(";")]
        assert len(trace) == r["prompts"] + 1 <= policy.max_prompts + 1
        assert r["noc@90"] == next((k for k, d in enumerate(trace) if d >= 0.9), 3)
        assert r["seconds"] > 0
    from napari_lesion_diffkd.core.annotation_sim.triage import DEFAULT_SCORE, SCORES

    triage = result.triage["ph2_dermoscopy"]
    assert triage["images"] == 3 and triage["score"] == DEFAULT_SCORE
    assert set(triage["candidates"]) == set(SCORES)
    assert len(triage["per_image"]["refine_disagreement"]) == 3


def test_the_job_stops_between_yields(ph2_records, sam_backend) -> None:
    from napari_lesion_diffkd.core.annotation_sim import Policy, simulate_annotation
    from napari_lesion_diffkd.core.jobs import Cancelled, run_to_completion

    seen = []
    gen = simulate_annotation(ph2_records, _models(ph2_records, sam_backend,
                                                   _perfect_proposer(ph2_records)),
                              ("sam-first",), Policy(max_prompts=3))
    with pytest.raises(Cancelled):
        run_to_completion(gen, on_event=seen.append, should_stop=lambda: len(seen) >= 1)
    assert len(seen) == 1 and seen[0].step <= 1
    with pytest.raises(StopIteration):
        next(gen)  # closed: nothing more runs


def test_a_model_mask_of_the_wrong_size_is_refused(ph2_records, sam_backend) -> None:
    from napari_lesion_diffkd.core.annotation_sim import Policy, simulate_annotation
    from napari_lesion_diffkd.core.annotation_sim.proposers import Proposal
    from napari_lesion_diffkd.core.jobs import run_to_completion

    def wrong(image, key):
        yield from ()
        return Proposal(mask=np.zeros((7, 7), dtype=bool))

    with pytest.raises(ValueError, match="does not match"):
        run_to_completion(simulate_annotation(
            ph2_records, _models(ph2_records, sam_backend, wrong), ("model-first",),
            Policy(max_prompts=3)))


# -- refined-first: the consensus refined by SAM with no prompt ---------------------------------
@pytest.fixture(scope="module")
def ph2_case(ph2_records):
    """One real PH2 validation image and its ground truth: (image, gt, key)."""
    from napari_lesion_diffkd.core.data.datasets import read_pair

    rec = ph2_records[0]
    image, gt = read_pair(rec)
    return image, gt, ("ph2", rec.id)


def test_refining_an_eroded_consensus_brings_it_closer_to_the_truth(ph2_case,
                                                                    sam_backend) -> None:
    from napari_lesion_diffkd.core.metrics import dice
    from napari_lesion_diffkd.core.sam.prompts import equivalent_radius, erode_mask
    from napari_lesion_diffkd.core.sam.refine_proposal import refine_consensus

    image, gt, key = ph2_case
    eroded = erode_mask(gt, 0.3 * equivalent_radius(gt))  # a too-small consensus
    assert 0.3 < dice(eroded, gt) < 0.9
    out = refine_consensus(sam_backend, image, eroded, key)
    assert out.mask.shape == gt.shape and out.mask.dtype == bool
    assert out.box is not None and out.box.shape == (4, 2)
    assert out.source == "refined" and np.array_equal(out.mask, out.refined)
    assert dice(out.mask, gt) >= dice(eroded, gt) + 0.05
    assert out.agreement == pytest.approx(dice(eroded, out.refined))
    assert np.isfinite(out.sam_score)


class _NoSam:
    """A backend that must not be asked (nothing to refine)."""

    def propose(self, request):
        raise AssertionError("SAM was asked about an empty consensus")


def test_an_empty_consensus_is_shown_as_is_and_ranks_first() -> None:
    from napari_lesion_diffkd.core.sam.refine_proposal import refine_consensus

    empty = np.zeros((30, 40), dtype=bool)
    out = refine_consensus(_NoSam(), np.zeros((30, 40, 3), np.uint8), empty, "k")
    assert out.source == "consensus" and not out.mask.any() and out.box is None
    assert out.disagreement == 1.0
    with pytest.raises(ValueError, match="does not match the image"):
        refine_consensus(_NoSam(), np.zeros((30, 40), np.uint8), empty[:10], "k")


class _FarAway:
    """A backend answering every request with a mask elsewhere (SAM on another object)."""

    def __init__(self, answer):
        self.answer, self.last = answer, None

    def propose(self, request):
        assert request.box is not None and not len(request.points)
        return self.answer


def test_a_refined_mask_that_disagrees_is_not_shown() -> None:
    from napari_lesion_diffkd.core.sam.refine_proposal import refine_consensus

    consensus = np.zeros((40, 40), dtype=bool)
    consensus[5:15, 5:15] = True
    other = np.zeros_like(consensus)
    other[25:35, 25:35] = True
    out = refine_consensus(_FarAway(other), np.zeros((40, 40), np.uint8), consensus, "k")
    assert out.source == "consensus" and np.array_equal(out.mask, consensus)
    assert out.agreement == 0.0 and np.isnan(out.sam_score)


def test_refine_disagreement_ranks_a_corrupted_consensus_above_a_good_one(
        ph2_case, sam_backend) -> None:
    from napari_lesion_diffkd.core.annotation_sim.triage import with_refine_scores
    from napari_lesion_diffkd.core.sam.refine_proposal import refine_consensus

    image, gt, key = ph2_case
    corrupted = gt.copy()
    h, w = gt.shape
    # A false-positive block in the image corner farthest from the lesion.
    rows, cols = np.nonzero(gt)
    r0 = 0 if rows.mean() > h / 2 else h - h // 5
    c0 = 0 if cols.mean() > w / 2 else w - w // 5
    corrupted[r0:r0 + h // 5, c0:c0 + w // 5] = True
    good = refine_consensus(sam_backend, image, gt, key)
    bad = refine_consensus(sam_backend, image, corrupted, key)
    assert bad.disagreement > good.disagreement + 0.1
    scores = with_refine_scores({"sample_disagreement": 0.2}, bad.disagreement)
    assert scores["refine_disagreement"] == pytest.approx(bad.disagreement)
    assert scores["combined_disagreement"] == pytest.approx((0.2 + bad.disagreement) / 2)


def test_refined_first_never_needs_more_prompts_than_sam_first_when_it_restarts(
        ph2_records, sam_backend) -> None:
    """With restart at the target, refined-first is "accept or box": per image it needs
    0 prompts or exactly what sam-first needs (same box, same clicks)."""
    from napari_lesion_diffkd.core.annotation_sim import Policy, simulate_annotation
    from napari_lesion_diffkd.core.annotation_sim.model_setup import build_models
    from napari_lesion_diffkd.core.jobs import run_to_completion

    models = build_models(ph2_records, sam_backend, "lesion-sam-tiny")
    sam_backend.session.clear_cache()
    before = sam_backend.session.encode_count
    result = run_to_completion(simulate_annotation(
        ph2_records, models, ("sam-first", "refined-first"),
        Policy(max_prompts=3, restart_below=0.9)))
    # One encoding per image, shared by the refinement and every workflow.
    assert sam_backend.session.encode_count - before == len(ph2_records)
    rows = {(r["id"], r["workflow"]): r for r in result.rows}
    for rec in ph2_records:
        mine, theirs = rows[(rec.id, "refined-first")], rows[(rec.id, "sam-first")]
        assert mine["noc@90"] in (0, theirs["noc@90"])
        if mine["noc@90"]:
            assert mine["prompt_trace"] == theirs["prompt_trace"]
        assert mine["first_dice"] > 0.5  # the student's consensus, refined, on PH2
    assert result.summary["refined-first"]["noc@90"] <= result.summary["sam-first"]["noc@90"]
    assert 0 <= result.triage["ph2_dermoscopy"]["refined_shown"] <= 1


def test_each_image_is_encoded_once_and_replayed_chains_match(ph2_records,
                                                              sam_backend) -> None:
    """All workflows and the refinement share one encoding per image; a box-started chain
    replayed from the memo gives the same masks as decoding it again."""
    from napari_lesion_diffkd.core.annotation_sim.clicks import lesion_box, standard_click
    from napari_lesion_diffkd.core.annotation_sim.sam_annotator import SamAnnotator
    from napari_lesion_diffkd.core.data.datasets import read_pair

    image, gt = read_pair(ph2_records[1])
    sam_backend.session.clear_cache()
    before = sam_backend.session.encode_count
    memo: dict = {}
    answers = []
    for use_memo in (memo, memo, None):
        a = SamAnnotator(sam_backend, image, "img", memo=use_memo)
        first = a.box(lesion_box(gt))
        second = a.click(standard_click(first, gt))
        answers.append((first, second, a.seconds))
    assert sam_backend.session.encode_count - before == 1
    assert len(memo) == 2  # the box, then box + click
    for first, second, seconds in answers[1:]:
        assert np.array_equal(first, answers[0][0]) and np.array_equal(second, answers[0][1])
        assert seconds > 0  # replayed decoder time is still charged


def test_an_unknown_triage_score_is_refused(ph2_records, sam_backend) -> None:
    from napari_lesion_diffkd.core.annotation_sim import Policy, simulate_annotation
    from napari_lesion_diffkd.core.jobs import run_to_completion

    with pytest.raises(ValueError, match="unknown triage score"):
        run_to_completion(simulate_annotation(
            ph2_records, _models(ph2_records, sam_backend, _perfect_proposer(ph2_records)),
            ("sam-first",), Policy(max_prompts=3), triage_score="vibes"))


def test_the_training_split_is_disjoint_from_validation(data_root: Path) -> None:
    from napari_lesion_diffkd.core.annotation_sim.inputs import collect_records

    folder = [data_root / "ph2_dermoscopy"]
    train = {r.id for r in collect_records(folder, "train")}
    val = {r.id for r in collect_records(folder, "validation")}
    everything = {r.id for r in collect_records(folder, "all")}
    assert train and val and not train & val and train | val == everything
    with pytest.raises(ValueError, match="unknown split"):
        collect_records(folder, "test")


def test_the_cli_spells_the_core_triage_scores() -> None:
    from napari_lesion_diffkd.cli import simulate_annotation as cli
    from napari_lesion_diffkd.core.annotation_sim.triage import DEFAULT_SCORE, SCORES
    from napari_lesion_diffkd.core.annotation_sim.workflows import WORKFLOWS

    assert cli.TRIAGE_SCORES == SCORES and cli.DEFAULT_TRIAGE_SCORE == DEFAULT_SCORE
    assert tuple(cli.WORKFLOW_NAMES.split(",")) == WORKFLOWS
