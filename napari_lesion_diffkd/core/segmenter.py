"""Segment one 2D image with a model bundle: K samples, consensus, uncertainty, scores.

This is the single path from an image array to results that the CLI, the napari widget and
the benchmarks share. It is a generator of :class:`JobEvent` (one per network call) that
returns a :class:`SegmentationResult`, so callers can show progress and cancel between steps.

Frames: ``image`` is (Y, X) gray or (Y, X, 3) RGB in its own pixel frame; every returned map
is in that same (Y, X) frame. The model runs at its square input size; its continuous x0
outputs are resized back (bilinear) before thresholding at 0, so masks follow the input's
shape exactly.

Large images (longer side above ``max(1024, 4 S)``): samples, fusion (STAPLE) and
uncertainty are computed at a working shape whose longer side is ``4 S``
(``core.data.preprocess.working_shape``; S = the model's input size, 128 or 256 px: finer
detail than that is not in the model's output), then the
probability and uncertainty maps are upsampled bilinearly to the input's shape and the
consensus is the upsampled probability thresholded as the fusion does. The K sample masks
stay at the working shape (``SegmentationResult.samples``; ``full_samples()`` upsamples them
nearest-neighbour, which the CLI's ``predict`` files and the store use), so a 4000 x 3000
image costs about what a 512 px one does (docs/benchmarks.md, "Large images").
``SegmentationResult.working_shape`` / ``working_note`` say when this happened.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_lesion_diffkd.core.bundle import ModelBundle
from napari_lesion_diffkd.core.config_bounds import MAX_SAMPLES, check_int, check_sampling_args
from napari_lesion_diffkd.core.data.finite import fill_nonfinite, nonfinite_warning
from napari_lesion_diffkd.core.data.preprocess import (
    prepare_image,
    resize_maps,
    upsample_masks,
    working_shape,
)
from napari_lesion_diffkd.core.diffusion.sampling_common import sample_seeds  # re-exported
from napari_lesion_diffkd.core.jobs import JobEvent

FUSION_METHODS = ("staple", "mean", "majority")


@dataclass
class SegmentationResult:
    """Results for one image, all in the input's (Y, X) pixel frame.

    Attributes:
        samples: (K, y, x) bool, the K sampled masks at the working shape: the input's
            (Y, X) unless ``working_shape`` is set (a large image; :meth:`full_samples`
            gives them at (Y, X)).
        probability: (Y, X) float32 in [0, 1], the fused foreground probability
            (STAPLE posterior, or the mean of the samples mapped to [0, 1]).
        consensus: (Y, X) bool, the fused mask.
        uncertainty: (Y, X) float32 in [0, 1], 0 = all samples sure and agreeing (by
            default the entropy, in bits, of the samples' mean soft probability).
        sensitivity, specificity: (K,) per-sample STAPLE estimates (None for other fusions).
        scores: per-image scores for ranking (``sample_disagreement``, ``boundary_entropy``,
            ``mean_entropy``).
        seconds: wall time of sampling + fusion + uncertainty (model loading excluded).
        settings: the model name, K, sampler, steps, fusion and seed used.
        warnings: one line per thing the caller should know about the input, e.g. NaN/Inf
            pixels that were replaced by the finite minimum (``core/data/finite.py``).
        working_shape: the (y, x) shape samples, fusion and uncertainty were computed at
            when smaller than the input's (a large image; the maps were then upsampled),
            else None.
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
    warnings: list[str] = field(default_factory=list)
    working_shape: tuple[int, int] | None = None

    @property
    def working_note(self) -> str:
        """One line for the user when the maps were computed at a reduced size, else ""."""
        if self.working_shape is None:
            return ""
        y, x = self.consensus.shape[-2:]
        return (f"large image: samples, fusion and uncertainty computed at "
                f"{self.working_shape[1]}x{self.working_shape[0]} px and upsampled to "
                f"{x}x{y} (finer detail is not in the model's output)")

    def full_samples(self) -> np.ndarray:
        """(K, Y, X) bool samples at the input's shape (upsampled nearest-neighbour when
        they were computed at a working shape)."""
        return upsample_masks(self.samples, tuple(self.consensus.shape[-2:]))


def build_bundle_sampler(bundle: ModelBundle, sampler: str | None, num_steps: int | None):
    """The bundle's default sampler, or the one named, with ``num_steps`` where it applies."""
    from napari_lesion_diffkd.core.diffusion.samplers import build_sampler

    defaults = dict(bundle.config.get("sampler", {}))
    name = sampler or defaults.get("name", "ddim")
    steps = num_steps if num_steps is not None else defaults.get("num_steps")
    kwargs: dict[str, Any] = {}
    if name == defaults.get("name", "ddim"):
        # The bundle's own sampler keeps its stored options (e.g. the staged sampler's heads).
        kwargs.update({k: v for k, v in defaults.items()
                       if k not in ("name", "num_samples", "num_steps")})
    if name == "ddim" and steps is not None:
        kwargs["num_steps"] = int(steps)
    elif name != "ddim" and num_steps is not None:
        raise ValueError(f"--steps applies to the ddim sampler only (sampler {name!r} has a "
                         "fixed step count)")
    return build_sampler(name, bundle.schedule, bundle.prediction_target, **kwargs)


def segment_image(
    bundle: ModelBundle,
    image: np.ndarray,
    num_samples: int | None = None,
    num_steps: int | None = None,
    sampler: str | None = None,
    fusion: str = "staple",
    seed: int = 0,
    uncertainty: str = "entropy",
    backend: str = "torch",
    working_max_side: int | None = None,
) -> Generator[JobEvent, None, SegmentationResult]:
    """Sample K masks for ``image`` and fuse them.

    Args:
        bundle: a loaded model (network on its device, eval mode).
        image: (Y, X) or (Y, X, 3) array, any numeric dtype (see ``prepare_image``).
        num_samples: K (default: the bundle's).
        num_steps: sampler steps (DDIM only; default: the bundle's).
        sampler: ``ddim`` | ``ddpm`` | ``staged`` | ``one-step`` (default: the bundle's).
        fusion: ``staple`` | ``mean`` | ``majority``.
        seed: same seed, same result.
        uncertainty: pixel map kind, ``entropy`` | ``variance`` | ``mutual_information``
            (see :func:`~napari_lesion_diffkd.core.ensemble.uncertainty.uncertainty_map`).
            The entropy is taken of the mean *soft* probability (x0 + 1) / 2 of the K
            samples, not of the hard votes: with K hard votes most wrong pixels tie at zero
            uncertainty, while the soft values still rank them (error-detection AUROC on
            PH2 validation, K = 8: 0.83 soft vs 0.72 hard for the teacher, 0.88 vs 0.68 for
            the student; see docs/benchmarks.md).
        backend: ``torch`` (the bundle's network) or ``onnxruntime`` (the network exported
            to ONNX on first use, cached by weights hash, ``core/onnx``; CPU only). The
            sampler, seeds, fusion and uncertainty code are the same for both.
        working_max_side: the longest side samples, fusion and uncertainty are computed at
            (None: ``4 S`` for images longer than ``max(1024, 4 S)``, see the module
            docstring; 0: always the input's full size).

    Yields:
        A progress event per network call.

    Returns:
        :class:`SegmentationResult`.
    """
    from napari_lesion_diffkd.core.ensemble.fusion import fuse_samples
    from napari_lesion_diffkd.core.ensemble.uncertainty import image_scores, uncertainty_map

    if fusion not in FUSION_METHODS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSION_METHODS}")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"expected a 2D image (Y, X) or (Y, X, 3); got shape {image.shape} "
            "(segment volumes slice by slice)"
        )
    # NaN/Inf pixels: the documented fill (finite minimum) and a warning, never a silent
    # empty mask; an all-NaN image is a ValueError.
    image, n_filled = fill_nonfinite(image)
    warnings = [nonfinite_warning(n_filled, image.size)] if n_filled else []
    check_sampling_args(num_samples, num_steps, prefix="num_")
    network = select_network(bundle, backend)
    if bundle.config.get("objective") == "segmentation":
        result = yield from _segment_deterministic(bundle, image, network, backend)
        result.warnings = warnings
        return result
    k = int(num_samples or bundle.config.get("sampler", {}).get("num_samples", 8))
    check_int("num_samples", k, 1, MAX_SAMPLES)
    the_sampler = build_bundle_sampler(bundle, sampler, num_steps)
    start = time.perf_counter()
    device = _device(bundle, backend)
    cond = prepare_image(image, bundle.input_size, bundle.image_channels)[None].to(device)
    x0 = yield from the_sampler.sample(network, cond, k, seeds=sample_seeds(seed, k))
    full = tuple(int(v) for v in image.shape[:2])
    work = working_shape(full, bundle.input_size, working_max_side)
    with torch.no_grad():
        x0_work = resize_maps(x0[:, :, 0].float().cpu(), work)  # (1, K, y, x)
        fused = fuse_samples(x0_work, method=fusion)
        unc = uncertainty_map(x0_work, kind=uncertainty, soft=True)
        scores = image_scores(x0_work, consensus=fused.consensus)
        probability = fused.probability[0].cpu().float()
        consensus = fused.consensus[0].cpu()
        unc = unc[0].cpu().float()
        samples = (x0_work[0] > 0).numpy()
        if work != full:  # back to the input's shape for display and files
            # Both maps in one interpolation call (about 20% cheaper than two).
            both = resize_maps(torch.stack([probability, unc]), full).clamp_(0.0, 1.0)
            probability, unc = both[0], both[1]
            # The fusion's own rule: STAPLE's MAP label is posterior >= 0.5, the others > 0.5.
            consensus = probability >= 0.5 if fusion == "staple" else probability > 0.5
    seconds = time.perf_counter() - start
    sens = None if fused.sensitivity is None else fused.sensitivity[0].cpu().numpy()
    spec = None if fused.specificity is None else fused.specificity[0].cpu().numpy()
    return SegmentationResult(
        samples=samples,
        probability=probability.numpy().astype(np.float32, copy=False),
        consensus=consensus.numpy().astype(bool, copy=False),
        uncertainty=unc.numpy().astype(np.float32, copy=False),
        sensitivity=sens,
        specificity=spec,
        scores={name: float(v[0]) for name, v in scores.items()},
        seconds=seconds,
        settings={
            "model": bundle.name,
            "num_samples": k,
            "sampler": the_sampler.to_config(),
            "fusion": fusion,
            "seed": seed,
            "uncertainty": uncertainty,
            "backend": backend,
            **({"working_shape": list(work)} if work != full else {}),
        },
        warnings=warnings,
        working_shape=work if work != full else None,
    )


def select_network(bundle: ModelBundle, backend: str = "torch") -> Any:
    """``bundle.network`` (torch) or its ONNX Runtime stand-in (``core.onnx.driver``).

    Raises:
        ValueError: unknown backend, or a model the ONNX exporter cannot handle.
    """
    if backend == "torch":
        return bundle.network
    if backend != "onnxruntime":
        raise ValueError(f"unknown backend {backend!r}; choose torch or onnxruntime")
    from napari_lesion_diffkd.core.onnx.driver import onnx_network
    from napari_lesion_diffkd.core.onnx.export import OnnxExportError

    try:
        return onnx_network(bundle)
    except (OnnxExportError, ImportError) as exc:
        raise ValueError(f"backend onnxruntime unavailable for {bundle.name}: {exc}") from exc


def _device(bundle: ModelBundle, backend: str) -> torch.device:
    # ONNX Runtime runs on the CPU here, whatever device the torch bundle sits on.
    if backend == "onnxruntime":
        return torch.device("cpu")
    return next(bundle.network.parameters()).device


def _segment_deterministic(
    bundle: ModelBundle, image: np.ndarray, network: Any = None, backend: str = "torch"
) -> Generator[JobEvent, None, SegmentationResult]:
    """A plain segmentation network (the baseline): one mask, uncertainty = entropy of its
    own foreground probability."""
    from napari_lesion_diffkd.core.ensemble.uncertainty import binary_entropy

    start = time.perf_counter()
    network = bundle.network if network is None else network
    device = _device(bundle, backend)
    cond = prepare_image(image, bundle.input_size, bundle.image_channels)[None].to(device)
    with torch.no_grad():
        logits = network(cond)
    yield JobEvent("progress", step=1, total=1, message="segmenting")
    prob = resize_maps(torch.sigmoid(logits[:, 0].float().cpu()), image.shape[:2])[0]
    mask = (prob > 0.5).numpy()
    return SegmentationResult(
        samples=mask[None], probability=prob.numpy().astype(np.float32), consensus=mask,
        uncertainty=binary_entropy(prob).numpy().astype(np.float32),
        sensitivity=None, specificity=None, scores={}, seconds=time.perf_counter() - start,
        settings={"model": bundle.name, "num_samples": 1, "sampler": None,
                  "fusion": None, "seed": None, "backend": backend},
    )
