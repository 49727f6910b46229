"""Number of prompts to a Dice target (NoC), and its summaries.

Convention (the standard one of interactive segmentation, e.g. RITM, SimpleClick, SAM's
interactive evaluation), applied identically to every workflow:

* a trace is the Dice after 0, 1, 2, ... prompts: ``dices[0]`` is the mask the annotator is
  first shown (the model's consensus; an empty mask, Dice 0, when no model runs first);
* every prompt counts one: a box counts one, a click counts one; reviewing an uncertain
  region without clicking is not a prompt (it is counted separately as a review);
* ``NoC@t`` of an image is the smallest k with ``dices[k] >= t`` (0 when the first mask is
  accepted as is); an image that never reaches ``t`` within ``max_prompts`` prompts counts as
  ``max_prompts`` (and as a failure);
* NoC@t of a set of images is the mean over the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def target_key(target: float) -> str:
    """``0.85 -> "85"`` (the suffix of ``noc@85``); ``0.875 -> "87.5"``."""
    value = round(float(target) * 100, 6)
    return str(int(value)) if value == int(value) else f"{value:g}"


def check_targets(targets: Sequence[float]) -> tuple[float, ...]:
    """Sorted unique Dice targets, each in (0, 1].

    Raises:
        ValueError: an empty list or a value outside (0, 1].
    """
    values = tuple(sorted({float(t) for t in targets}))
    if not values:
        raise ValueError("give at least one Dice target")
    bad = [t for t in values if not (0.0 < t <= 1.0) or not np.isfinite(t)]
    if bad:
        raise ValueError(f"Dice targets must lie in (0, 1]; got {bad}")
    return values


def prompts_to_target(dices: Sequence[float], target: float) -> int | None:
    """Smallest k with ``dices[k] >= target``, or None when the trace never reaches it."""
    for k, d in enumerate(dices):
        if d >= target:
            return k
    return None


def noc(dices: Sequence[float], target: float, max_prompts: int) -> int:
    """NoC of one trace: :func:`prompts_to_target`, or ``max_prompts`` on failure."""
    k = prompts_to_target(dices, target)
    return int(max_prompts) if k is None or k > max_prompts else int(k)


def summarise_traces(traces: Sequence[Sequence[float]], targets: Sequence[float],
                     max_prompts: int) -> dict[str, float]:
    """Mean NoC, failure share and no-prompt share per target over a set of traces.

    Args:
        traces: one Dice trace per image (see the module docstring).
        targets: Dice targets, e.g. (0.85, 0.90).
        max_prompts: the prompt budget (failures count this much).

    Returns:
        ``{"noc@85": mean, "failed@85": share never reaching it, "no_prompt@85": share
        accepted with no prompt, ... per target, "no_prompt": the share at the highest
        target, "images": n}``; NaN values when ``traces`` is empty.
    """
    targets = check_targets(targets)
    n = len(traces)
    out: dict[str, float] = {}
    for t in targets:
        key = target_key(t)
        reached = [prompts_to_target(tr, t) for tr in traces]
        reached = [None if k is None or k > max_prompts else k for k in reached]
        counts = [max_prompts if k is None else k for k in reached]
        out[f"noc@{key}"] = float(np.mean(counts)) if n else float("nan")
        out[f"failed@{key}"] = (sum(k is None for k in reached) / n) if n else float("nan")
        out[f"no_prompt@{key}"] = (sum(k == 0 for k in reached) / n) if n else float("nan")
    out["no_prompt"] = out[f"no_prompt@{target_key(targets[-1])}"]
    out["images"] = n
    return out
