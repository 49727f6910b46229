"""Teacher vs student on one image (no Qt): both results, their latencies, parameter counts
and the Dice between their consensus masks. Runs in a worker thread."""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_lesion_diffkd.plugin._segment_job import BundleCache, SegmentRequest


@dataclass
class ModelRun:
    """One model's side of the comparison.

    Attributes:
        label: the model's picker label.
        params: number of network parameters.
        load_seconds: loading time (0 when it was cached).
        seconds: segmentation latency: sampling + fusion + uncertainty (model loading
            excluded), i.e. what a user waits for once the model is loaded and warm.
        warmup_seconds: the warm-up run made right after loading (0 when it was cached):
            a model's first call pays one-off costs (kernel selection, allocations) that
            would otherwise inflate the first latency several-fold.
        result: the :class:`core.segmenter.SegmentationResult` ((Y, X) maps).
    """

    label: str
    params: int
    load_seconds: float
    seconds: float
    result: Any
    warmup_seconds: float = 0.0


@dataclass
class CompareResult:
    """Both runs, in the order asked, and ``dice``: Dice of their consensus masks (1.0 when
    both are empty)."""

    runs: list[ModelRun]
    dice: float


def compare_job(requests: Sequence[tuple[str, SegmentRequest]], image: np.ndarray,
                cache: BundleCache) -> Generator[Any, None, CompareResult]:
    """Segment ``image`` ((Y, X) or (Y, X, 3)) with each model in turn.

    Args:
        requests: ``(label, request)`` per model (teacher first, then student).
        image: the 2D image or slice.
        cache: loaded models, shared with later runs.

    Yields:
        :class:`core.jobs.JobEvent`: a log per model, then its progress events.

    A model loaded by this call is first warmed up: the same request on a blank image of
    the model's input size (the network sees S x S whatever the image, so every network
    shape is the real one), so that ``seconds`` is the steady-state latency.
    """
    from napari_lesion_diffkd.core.jobs import JobEvent
    from napari_lesion_diffkd.core.metrics import dice
    from napari_lesion_diffkd.core.segmenter import segment_image

    runs = []
    for label, request in requests:
        yield JobEvent("log", message=f"loading {label}")
        cached = cache.has(request.target, request.device)
        start = time.perf_counter()
        bundle = cache.get(request.target, request.device)
        load_seconds = 0.0 if cached else time.perf_counter() - start
        warmup_seconds = 0.0
        if not cached:
            yield JobEvent("log", message=f"warming up {label}")
            start = time.perf_counter()
            blank = np.zeros((bundle.input_size, bundle.input_size)
                             + tuple(image.shape[2:]), image.dtype)
            yield from segment_image(bundle, blank, **request.segment_kwargs())
            warmup_seconds = time.perf_counter() - start
        yield JobEvent("log", message=f"segmenting with {label}")
        result = yield from segment_image(bundle, image, **request.segment_kwargs())
        runs.append(ModelRun(label, bundle.num_parameters, load_seconds, result.seconds,
                             result, warmup_seconds))
    agreement = dice(runs[0].result.consensus, runs[1].result.consensus) if len(runs) == 2 \
        else float("nan")
    from napari_lesion_diffkd.plugin._layers import prepare_display

    for run in runs:  # the consensus outlines, here rather than on the GUI thread
        prepare_display(run.result)
    return CompareResult(runs, float(agreement))
