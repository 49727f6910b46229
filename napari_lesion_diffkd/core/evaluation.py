"""Evaluate a model bundle on image/mask pairs at the images' own resolution.

Used to fill a bundle's validation metrics and its model card: each validation image is
segmented exactly as ``lesion-diffkd predict`` would (same sampler, K and fusion), and the
consensus is scored against the reference mask in the original pixel frame.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.bundle import ModelBundle
from napari_lesion_diffkd.core.data.datasets import PairRecord, read_pair
from napari_lesion_diffkd.core.jobs import JobEvent, run_to_completion


def _finite_stat(stat, values: list[float]) -> float:
    """``stat`` over the finite values (NaN if none)."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(stat(finite)) if finite else float("nan")


def evaluate_bundle(
    bundle: ModelBundle,
    records: Sequence[PairRecord],
    num_samples: int | None = None,
    fusion: str = "staple",
    seed: int = 0,
) -> Generator[JobEvent, None, dict[str, Any]]:
    """Segment and score every pair; yields one progress event per image.

    Returns:
        ``{"per_image": [{"id", "dice", "iou", "hd95", ...}], "mean": {...}, "median": {...},
        "seconds_per_image_median": float, "n": int}``. HD95 is in pixels of the original image
        (the shared datasets carry no physical spacing).
    """
    from napari_lesion_diffkd.core.metrics import all_metrics
    from napari_lesion_diffkd.core.segmenter import segment_image

    rows: list[dict[str, Any]] = []
    times = []
    for i, record in enumerate(records):
        image, mask = read_pair(record)
        start = time.perf_counter()
        result = run_to_completion(
            segment_image(bundle, image, num_samples=num_samples, fusion=fusion, seed=seed)
        )
        times.append(time.perf_counter() - start)
        metrics = all_metrics(result.consensus, mask)
        rows.append({"id": record.id, "dataset": record.dataset, **metrics,
                     "sample_disagreement": result.scores.get("sample_disagreement")})
        yield JobEvent("progress", step=i + 1, total=len(records), message=record.id)
    keys = [k for k in rows[0] if k not in ("id", "dataset")] if rows else []
    mean = {k: _finite_stat(np.mean, [r[k] for r in rows]) for k in keys}
    median = {k: _finite_stat(np.median, [r[k] for r in rows]) for k in keys}
    # An empty consensus has no surface: its HD95/ASSD are infinite. Such images are left out
    # of the distance means and counted here instead.
    mean["n_undefined_distance"] = sum(1 for r in rows if not np.isfinite(r["hd95"]))
    by_dataset: dict[str, dict[str, float]] = {}
    for name in sorted({r["dataset"] for r in rows}):
        sub = [r for r in rows if r["dataset"] == name]
        by_dataset[name] = {k: _finite_stat(np.mean, [r[k] for r in sub]) for k in keys}
        by_dataset[name]["n"] = len(sub)
    return {"per_image": rows, "mean": mean, "median": median, "by_dataset": by_dataset,
            "seconds_per_image_median": float(np.median(times)) if times else float("nan"),
            "n": len(rows)}


def gflops_per_image(bundle: ModelBundle, num_samples: int | None = None) -> float:
    """GFLOPs of one segmentation of one image at the model's working resolution: the
    default sampler drawing K samples (one forward pass for a plain segmentation network).

    Counted with ``torch.utils.flop_counter.FlopCounterMode``: 2 x the multiply-accumulates
    of convolutions and matrix products; element-wise operations are not counted. The input
    is a zero image (the count does not depend on its content).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler, sample_seeds

    device = next(bundle.network.parameters()).device
    image = torch.zeros(1, bundle.image_channels, bundle.input_size, bundle.input_size,
                        device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        if bundle.config.get("objective") == "segmentation":
            bundle.network(image)
        else:
            k = int(num_samples or bundle.config.get("sampler", {}).get("num_samples", 8))
            sampler = build_bundle_sampler(bundle, None, None)
            run_to_completion(sampler.sample(bundle.network, image, k, seeds=sample_seeds(0, k)))
    return counter.get_total_flops() / 1e9
