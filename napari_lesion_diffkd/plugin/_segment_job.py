"""The segmentation job the widgets run in a worker thread (no Qt, no napari).

One generator, :func:`segment_job`, covers the three scopes of the Segment widget:

* ``image``: a 2D image, (Y, X) gray or (Y, X, 3) RGB -> :class:`core.segmenter.SegmentationResult`;
* ``slice``: one slice of a volume: the caller passes that (Y, X) slice, same result;
* ``volume``: (Z, Y, X) (or (Z, Y, X, 3)) segmented slice by slice -> :class:`VolumeResult`.

Every network call yields a :class:`core.jobs.JobEvent`, so a Cancel (the worker closing the
generator between yields) stops within one network call, also inside a volume.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SegmentRequest:
    """What to run.

    Attributes:
        target: a registered model name or bundle folder (:attr:`ModelEntry.target`).
        device: ``auto`` | ``cuda`` | ``mps`` | ``cpu``.
        num_samples: K (ignored by deterministic baselines).
        sampler: sampler name or None for the bundle's default.
        num_steps: DDIM steps or None for the bundle's default.
        fusion: ``staple`` | ``mean`` | ``majority``.
        seed: the user seed (same seed, same masks).
        backend: ``torch`` | ``onnxruntime`` (CPU; exported to ONNX and cached on first
            use, see ``core/onnx``).
    """

    target: str
    device: str = "auto"
    num_samples: int = 8
    sampler: str | None = None
    num_steps: int | None = None
    fusion: str = "staple"
    seed: int = 0
    backend: str = "torch"

    @property
    def load_device(self) -> str:
        """Where the torch bundle goes: ONNX Runtime runs on the CPU, so its bundle does too."""
        return "cpu" if self.backend == "onnxruntime" else self.device

    def segment_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`core.segmenter.segment_image`."""
        return {"num_samples": self.num_samples, "num_steps": self.num_steps,
                "sampler": self.sampler, "fusion": self.fusion, "seed": self.seed,
                "backend": self.backend}


@dataclass
class VolumeResult:
    """A volume segmented slice by slice, every map in the volume's (Z, Y, X) frame.

    Attributes:
        samples: (K, Z, Y, X) bool. probability, uncertainty: (Z, Y, X) float32 in [0, 1].
        consensus: (Z, Y, X) bool.
        sensitivity, specificity: (Z, K) float per slice (None unless STAPLE fusion).
        scores: mean over slices of each per-slice score.
        seconds: wall time of all slices (model loading excluded).
        settings: the settings of the first slice (the same for every slice).
    """

    samples: np.ndarray
    probability: np.ndarray
    consensus: np.ndarray
    uncertainty: np.ndarray
    sensitivity: np.ndarray | None
    specificity: np.ndarray | None
    scores: dict[str, float]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


class BundleCache:
    """Loaded models by (target, device), shared across runs of one widget.

    Loading a student takes ~25 ms and a teacher ~60 ms here, but a volume calls the model
    once per slice: the bundle must not be reloaded per slice or per run.
    """

    def __init__(self) -> None:
        self._bundles: dict[tuple[str, str], Any] = {}

    def get(self, target: str, device: str) -> Any:
        """The loaded bundle (loads it on first use; call from the worker thread)."""
        from napari_lesion_diffkd.core.registry import load_model

        key = (target, device)
        if key not in self._bundles:
            self._bundles[key] = load_model(target, device=device)
        return self._bundles[key]

    def has(self, target: str, device: str) -> bool:
        """Whether ``target`` is loaded on ``device`` already."""
        return (target, device) in self._bundles

    def forget(self, target: str) -> None:
        """Drop every loaded copy of ``target`` (e.g. its folder was re-trained)."""
        for key in [k for k in self._bundles if k[0] == target]:
            del self._bundles[key]


def segment_job(request: SegmentRequest, image: np.ndarray, volume: bool, cache: BundleCache
                ) -> Generator[Any, None, Any]:
    """Load the model (cached) and segment ``image``.

    Args:
        request: model and sampling settings.
        image: (Y, X) / (Y, X, 3) for a 2D image or one slice; (Z, Y, X) / (Z, Y, X, 3) with
            ``volume=True``.
        volume: segment every slice of a volume.
        cache: loaded models.

    Yields:
        :class:`core.jobs.JobEvent` (a ``log`` while loading, then progress per network call;
        inside a volume the step counts network calls over all slices).

    Returns:
        :class:`core.segmenter.SegmentationResult` (2D) or :class:`VolumeResult`.
    """
    from napari_lesion_diffkd.core.jobs import JobEvent
    from napari_lesion_diffkd.core.segmenter import segment_image

    yield JobEvent("log", message=f"loading {request.target}")
    bundle = cache.get(request.target, request.load_device)
    if request.backend != "torch":
        from napari_lesion_diffkd.core.segmenter import select_network

        yield JobEvent("log", message=f"preparing {request.backend} (first use exports ONNX)")
        select_network(bundle, request.backend)
    if not volume:
        return (yield from segment_image(bundle, image, **request.segment_kwargs()))
    start = time.perf_counter()
    results = []
    depth = image.shape[0]
    for z in range(depth):
        gen = segment_image(bundle, np.asarray(image[z]), **request.segment_kwargs())
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                results.append(stop.value)
                break
            # Rescale the slice's own progress into the whole volume's.
            per_slice = max(event.total, 1)
            yield JobEvent("progress", step=z * per_slice + event.step,
                           total=depth * per_slice, message=f"slice {z + 1}/{depth}")
    return stack_results(results, time.perf_counter() - start)


def stack_results(results: list[Any], seconds: float) -> VolumeResult:
    """Stack per-slice :class:`SegmentationResult` s along a new Z axis (axis 1 for samples)."""
    first = results[0]
    sens = None if first.sensitivity is None else np.stack([r.sensitivity for r in results])
    spec = None if first.specificity is None else np.stack([r.specificity for r in results])
    keys = set.intersection(*(set(r.scores) for r in results)) if results else set()
    return VolumeResult(
        samples=np.stack([r.full_samples() if hasattr(r, "full_samples") else r.samples
                          for r in results], axis=1),
        probability=np.stack([r.probability for r in results]),
        consensus=np.stack([r.consensus for r in results]),
        uncertainty=np.stack([r.uncertainty for r in results]),
        sensitivity=sens, specificity=spec,
        scores={k: float(np.mean([r.scores[k] for r in results])) for k in sorted(keys)},
        seconds=seconds, settings=dict(first.settings),
    )
