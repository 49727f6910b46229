"""One simulated annotator working through one image in one workflow.

The policy (the same for every workflow; see the package docstring) in code:
:func:`annotate_image` shows the annotator a first mask, lets them accept it, start over
with a box, or click, and records the Dice after every prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_lesion_diffkd.core.annotation_sim.clicks import lesion_box, region_click, standard_click
from napari_lesion_diffkd.core.annotation_sim.guidance import RegionQueue, uncertain_regions
from napari_lesion_diffkd.core.annotation_sim.proposers import Proposal
from napari_lesion_diffkd.core.annotation_sim.sam_annotator import SamAnnotator
from napari_lesion_diffkd.core.metrics import dice

#: Workflows, in report order. ``sam-first`` shows no model mask; the others show the
#: consensus of the default student (``model-first``, ``uncertainty-guided``) or teacher, or
#: the student's consensus refined by SAM with no user prompt (``refined-first``,
#: ``core.sam.refine_proposal``).
WORKFLOWS = ("sam-first", "model-first", "uncertainty-guided", "teacher-first",
             "refined-first")
#: Which first mask each workflow shows (None: none, the annotator starts empty).
FIRST_MASK = {"sam-first": None, "model-first": "student", "uncertainty-guided": "student",
              "teacher-first": "teacher", "refined-first": "refined"}


@dataclass(frozen=True)
class Policy:
    """The simulated annotator's rules, applied identically to every workflow.

    Attributes:
        targets: Dice targets, ascending; the annotator stops at the highest one.
        max_prompts: prompt budget per image (box and clicks count one each).
        restart_below: a first mask with Dice below this is discarded for a box (an empty
            first mask, Dice 0, always is: that is how ``sam-first`` starts).
        box_expand: the drawn box is the lesion's bounding box times this.
        uncertainty_threshold: entropy (bits) above which a pixel is uncertain.
        min_error_pixels: an error piece inside a proposed region smaller than this is
            not clicked (the region is passed as reviewed).
        undo_to_box: a click whose answer is worse (lower Dice) than the mask before it,
            while no box has been drawn, is undone and the annotator draws a box instead
            (both count). Never triggers in ``sam-first``, which starts with the box.
    """

    targets: tuple[float, ...] = (0.85, 0.90)
    max_prompts: int = 20
    restart_below: float = 0.5
    box_expand: float = 1.05
    uncertainty_threshold: float = 0.5
    min_error_pixels: int = 10
    undo_to_box: bool = True

    def check(self) -> Policy:
        """Return self after checking every field.

        Raises:
            ValueError: a value out of range, with the field's name.
        """
        from napari_lesion_diffkd.core.annotation_sim.noc import check_targets

        check_targets(self.targets)
        if not isinstance(self.max_prompts, int) or not 1 <= self.max_prompts <= 1000:
            raise ValueError(f"max_prompts must be an integer in [1, 1000], got "
                             f"{self.max_prompts!r}")
        if not 0.0 <= self.restart_below <= 1.0:
            raise ValueError(f"restart_below must lie in [0, 1], got {self.restart_below}")
        if not 1.0 <= self.box_expand <= 2.0:
            raise ValueError(f"box_expand must lie in [1, 2], got {self.box_expand}")
        if not 0.0 <= self.uncertainty_threshold < 1.0:
            raise ValueError("uncertainty_threshold must lie in [0, 1), got "
                             f"{self.uncertainty_threshold}")
        if self.min_error_pixels < 1:
            raise ValueError(f"min_error_pixels must be >= 1, got {self.min_error_pixels}")
        return self


@dataclass
class ImageTrace:
    """What happened on one image in one workflow.

    Attributes:
        dices: Dice after 0, 1, 2, ... prompts (``dices[0]``: the first mask shown).
        prompts: what each prompt was: ``box``, ``+`` (positive click), ``-`` (negative).
        reviews: uncertain regions the app proposed (with or without a click).
        restarted: the first mask was discarded for a box.
        undone: clicks undone because they made the mask worse (then a box followed).
        seconds: model wall time (proposal, SAM encoding and decoding) for this workflow.
    """

    dices: list[float] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    reviews: int = 0
    restarted: bool = False
    undone: int = 0
    seconds: float = 0.0


def check_workflows(names) -> tuple[str, ...]:
    """Known workflow names, deduplicated, in the order given.

    Raises:
        ValueError: an unknown name or an empty list.
    """
    out = tuple(dict.fromkeys(str(n).strip() for n in names if str(n).strip()))
    unknown = [n for n in out if n not in WORKFLOWS]
    if unknown or not out:
        raise ValueError(f"unknown workflow(s) {unknown or names!r}; choose from "
                         f"{', '.join(WORKFLOWS)}")
    return out


def annotate_image(workflow: str, gt: np.ndarray, annotator: SamAnnotator,
                   proposal: Proposal | None, policy: Policy) -> ImageTrace:
    """Play the annotator on one image.

    Args:
        workflow: one of :data:`WORKFLOWS`.
        gt: (Y, X) bool oracle (non-empty).
        annotator: a fresh :class:`SamAnnotator` on this image (its encoding is counted in
            the caller's seconds).
        proposal: the first model's answer (None for ``sam-first``).
        policy: the rules.

    Returns:
        The :class:`ImageTrace`; ``seconds`` holds only the SAM decoder time here.
    """
    gt = np.asarray(gt, dtype=bool)
    goal = max(policy.targets)
    trace = ImageTrace()
    if proposal is None:
        current = np.zeros_like(gt)
    else:
        current = np.asarray(proposal.mask, dtype=bool)
        if current.shape != gt.shape:
            raise ValueError(f"the model's mask {current.shape} does not match the ground "
                             f"truth {gt.shape}")
    trace.dices.append(dice(current, gt))
    queue = None
    if workflow == "uncertainty-guided" and proposal is not None \
            and proposal.uncertainty is not None:
        queue = RegionQueue(uncertain_regions(proposal.uncertainty,
                                              policy.uncertainty_threshold))
    start = current
    while trace.dices[-1] < goal and len(trace.prompts) < policy.max_prompts:
        if not trace.prompts and trace.dices[0] < policy.restart_below:
            trace.restarted = proposal is not None
            current = annotator.box(lesion_box(gt, policy.box_expand))
            trace.prompts.append("box")
            queue = None  # the map described the discarded mask
        else:
            click = None
            while queue is not None and click is None and len(queue):
                region = queue.next_region()
                trace.reviews += 1
                click = region_click(current, gt, region, policy.min_error_pixels)
            if click is None:
                click = standard_click(current, gt)
            if click is None:  # current == gt: cannot happen below the goal
                break
            before = current
            current = annotator.click(click, start=start if not trace.prompts else None)
            trace.prompts.append("+" if click.positive else "-")
            if policy.undo_to_box and "box" not in trace.prompts \
                    and dice(current, gt) < trace.dices[-1] \
                    and len(trace.prompts) < policy.max_prompts:
                # Worse than before: undo (the mask shown is the one before) and box it.
                trace.dices.append(trace.dices[-1])
                current = before
                trace.undone += 1
                current = annotator.box(lesion_box(gt, policy.box_expand))
                trace.prompts.append("box")
                queue = None
        trace.dices.append(dice(current, gt))
    trace.seconds = annotator.seconds
    return trace
