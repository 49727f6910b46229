"""How well a SAM answers prompts on labelled images: box Dice, click gain, latency.

For every (image, ground truth) pair, in the image's own pixel frame:

* **box**: the lesion's tight bounding box grown by 5% (width and height x 1.05, about its
  centre) -> Dice of the returned mask;
* **click correction**, for each degradation (default: erosion by 30% of the equivalent
  radius, and a shift by 20% of the box size): the degraded mask is the "bad" mask a user
  starts from (Dice *before*); one positive click goes to the centre (distance-transform
  maximum) of the largest connected region of missed lesion, and the model gets that click
  plus the bad mask as a mask prompt (Dice *after*; gain = after - before);
* **timing**: wall time of each prompt -> mask call with the embedding cached, and of each
  image encoding.

Multi-component lesions (CT) are scored as one mask: the box covers all components.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_lesion_diffkd.core.data.datasets import PairRecord, read_pair
from napari_lesion_diffkd.core.metrics import dice
from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy
from napari_lesion_diffkd.core.sam.prompts import bad_mask, expand_box, largest_error_click
from napari_lesion_diffkd.core.sam.sam_bundle import LoadedSam
from napari_lesion_diffkd.core.sam.session import PromptSession

#: Default degradations for the click test: (mode, strength), see ``prompts.bad_mask``.
DEFAULT_BAD_MASKS: tuple[tuple[str, float], ...] = (("erode", 0.3), ("shift", 0.2))


def evaluate_image(session: PromptSession, image: np.ndarray, gt: np.ndarray,
                   box_expand: float = 1.05,
                   bad_masks: Sequence[tuple[str, float]] = DEFAULT_BAD_MASKS,
                   use_mask_prompt: bool = True, key: Any = None,
                   clip_to_box: bool = True) -> dict[str, float]:
    """Scores for one image (see module docstring). ``gt`` is (Y, X) bool, non-empty.
    ``clip_to_box``: the box answer keeps no pixel outside the box (``PromptSession.predict``)."""
    gt = np.asarray(gt, dtype=bool)
    session.set_image(image, key=key)
    row: dict[str, float] = {"encode_ms": 1000 * session.last_encode_seconds}
    times: list[float] = []
    box = mask_to_xyxy(gt)
    if box is None:
        raise ValueError("evaluate_image needs a ground truth with a lesion")
    res = session.predict(box_xyxy=expand_box(box, box_expand, gt.shape), clip_to_box=clip_to_box)
    times.append(res.seconds)
    row["box_dice"] = dice(res.mask, gt)
    row["box_score"] = res.score
    for mode, strength in bad_masks:
        bad = bad_mask(gt, mode, strength)
        before = dice(bad, gt)
        click = largest_error_click(bad, gt, positive_only=True)
        if click is None:
            after = before
        else:
            res = session.predict(points_xy=np.array([[click[0], click[1]]]),
                                  point_labels=np.array([1]),
                                  mask=bad if use_mask_prompt else None)
            times.append(res.seconds)
            after = dice(res.mask, gt)
        row[f"{mode}_before"] = before
        row[f"{mode}_after"] = after
        row[f"{mode}_gain"] = after - before
    row["prompt_ms"] = 1000 * float(np.mean(times))
    return row


def _summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {"n": 0}
    out: dict[str, float] = {"n": len(rows)}
    for key in rows[0]:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        if key in ("prompt_ms", "encode_ms"):
            out[f"{key}_median"] = float(np.median(values))
            out[f"{key}_p90"] = float(np.percentile(values, 90))
        else:
            out[key] = float(values.mean())
    return out


@torch.no_grad()
def evaluate_prompts(
    model: nn.Module | LoadedSam | PromptSession,
    records: Sequence[PairRecord] | Sequence[tuple],
    box_expand: float = 1.05,
    bad_masks: Sequence[tuple[str, float]] = DEFAULT_BAD_MASKS,
    use_mask_prompt: bool = True,
    device: str | torch.device = "cpu",
    clip_to_box: bool = True,
) -> dict[str, Any]:
    """Box Dice, click gain and prompt latency over labelled images.

    Args:
        model: a ``Sam``, a :class:`LoadedSam` or an existing :class:`PromptSession`.
        records: dataset records (read with ``datasets.read_pair``), or tuples
            ``(image, mask)`` / ``(image, mask, dataset_name)`` already in memory; images
            with an empty mask are skipped (no box, no lesion to click).
        box_expand: box growth factor (1.05 = 5% larger).
        bad_masks: degradations for the click test.
        use_mask_prompt: give the bad mask to the model with the click (else click only).
        clip_to_box: clip the box answers to the box (the app's default; False: the raw
            decoder mask, as ``SamPredictor`` returns it).

    Returns:
        ``{"all": summary, "per_dataset": {name: summary}, "rows": [per-image dict]}``;
        a summary has ``n``, ``box_dice``, ``box_score``, ``<mode>_before/after/gain`` and
        ``prompt_ms_median/p90``, ``encode_ms_median/p90``.
    """
    session = model if isinstance(model, PromptSession) else PromptSession(
        model, device=device, cache_size=1)
    rows: list[dict[str, Any]] = []
    for i, item in enumerate(records):
        if isinstance(item, PairRecord):
            image, gt = read_pair(item)
            name, dataset = item.id, item.dataset
        else:
            image, gt = item[0], item[1]
            name, dataset = str(i), (str(item[2]) if len(item) > 2 else "pairs")
        if not np.any(gt):
            continue
        row = evaluate_image(session, image, gt, box_expand, bad_masks, use_mask_prompt,
                             key=("evaluate", dataset, name), clip_to_box=clip_to_box)
        rows.append({"id": name, "dataset": dataset, **row})
    numeric = [{k: v for k, v in r.items() if k not in ("id", "dataset")} for r in rows]
    per_dataset = {
        d: _summarise([n for n, r in zip(numeric, rows) if r["dataset"] == d])
        for d in sorted({r["dataset"] for r in rows})
    }
    return {"all": _summarise(numeric), "per_dataset": per_dataset, "rows": rows}
