"""Simulated annotation: how many prompts the app saves an annotator (NoC@85, NoC@90).

An annotator whose oracle is the ground-truth mask works through images with the app's own
code paths: the segmentation widget's ``core.segmenter.segment_image`` (the modality's
default model) and the correction panel's SAM backend (``core.sam.correction_backend``).
It sits above ``segmenter`` and ``sam``; nothing below it imports it.

Modules (one job each): ``clicks`` (the click rule and the box), ``guidance`` (uncertain
regions), ``proposers`` (the model's first mask), ``sam_annotator`` (prompting SAM),
``workflows`` (the policy on one image), ``noc`` (NoC and its summary), ``triage``,
``inputs`` (folders, split, checks), ``simulate`` (the job generator), ``report`` (files).

The annotator's policy, identical for every workflow
------------------------------------------------------
1. **First mask.** The annotator is shown a first mask: nothing for ``sam-first`` (an empty
   mask, Dice 0); the default student's STAPLE consensus for ``model-first`` and
   ``uncertainty-guided``; the teacher's for ``teacher-first``; for ``refined-first`` the
   app's zero-prompt proposal (``core.sam.refine_proposal.refine_consensus``): SAM's answer
   to a box around the student's consensus (+5%, the consensus as mask prompt where the SAM
   takes one), shown when it agrees with the consensus (Dice >= 0.5), else the consensus.
   The app's box is not the annotator's and counts no prompt.
2. **Accept.** When the current mask's Dice reaches the highest target (0.90 by default)
   the annotator accepts it and stops. With no prompt given, that image is "accepted with no
   prompt".
3. **Start over with a box.** Before the first prompt, a first mask with Dice below
   ``restart_below`` (default 0.5: more wrong than right) is discarded and the annotator
   draws a box around the lesion (its bounding box grown 5%), answered by SAM from scratch.
   The empty first mask of ``sam-first`` is always discarded this way, which is exactly
   "a box first". The box counts as one prompt and stays part of every later prompt.
4. **Click.** Otherwise, and after the box, each prompt is one click by the standard rule
   (``clicks.standard_click``): the centre (distance-transform maximum) of the largest
   connected error region, positive on missed lesion, negative on taken background. SAM gets
   all prompts so far plus a mask prompt: the first mask on the first click (as the
   correction panel sends its start mask), then the previous answer's low-res logits.
   **Undo to a box**: a click whose answer is worse (lower Dice) than the mask it
   corrected, while no box has been drawn yet, is undone and the annotator draws the box
   instead (the click and the box both count; the Dice after the undone click is the mask
   before it). Promptable models trained on boxes (LiteMedSAM) can answer a click plus a
   mask prompt with an empty mask; an annotator would not keep that. It cannot trigger in
   ``sam-first``, which starts with the box.
5. **Guidance** (``uncertainty-guided`` only, and only while the model's mask is being
   corrected, i.e. not after a box restart, whose mask the map does not describe): before
   each click the app proposes the most uncertain region not yet reviewed (a connected
   region of the uncertainty map above ``uncertainty_threshold``, ranked by summed
   uncertainty). The annotator looks there: if the region holds an error piece of at least
   ``min_error_pixels``, they click its centre (positive or negative per the oracle);
   otherwise the region is passed as reviewed (no prompt) and the next one is proposed.
   With no region left, the standard rule applies.
6. **Budget.** At most ``max_prompts`` prompts (default 20) per image.

Counting (``noc.py``): box and click count one prompt each; NoC@t is the first prompt count
with Dice >= t, 0 for an accepted first mask, ``max_prompts`` for an image that never gets
there (also counted in ``failed@t``). Model seconds per image: the first model's sampling,
plus SAM's image encoding (once per image, charged to every workflow that prompted, and
always to ``refined-first``, whose proposal needs it) and every decoder call.

Triage (``triage.py``): the images ranked by a per-image score (``triage.SCORES``; the default
``triage.DEFAULT_SCORE`` was chosen on training-split images), with the share of bad
consensus masks (Dice < 0.85) in the most uncertain 10 / 20 / 30%.
"""

from napari_lesion_diffkd.core.annotation_sim.noc import summarise_traces
from napari_lesion_diffkd.core.annotation_sim.simulate import (
    AnnotationModels,
    SimulationResult,
    simulate_annotation,
)
from napari_lesion_diffkd.core.annotation_sim.workflows import WORKFLOWS, Policy

__all__ = ["WORKFLOWS", "AnnotationModels", "Policy", "SimulationResult",
           "simulate_annotation", "summarise_traces"]
