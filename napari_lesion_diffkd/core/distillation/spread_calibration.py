"""Fit a one-call student's spread inflation to its teacher, on training images.

A trajectory-distilled student maps each initial noise to the teacher's mask for that noise
(``trajectory.py``). Where the teacher's noise-to-mask map is too irregular to learn, the
student's soft output for every noise falls back towards the teacher's per-pixel vote
fraction: its K soft samples then sit on the same side of the threshold, and its hard samples
agree exactly where the teacher's disagree (on CT, the teacher's pixel-variance map is
reproduced with correlation 0.74 by the teacher itself under other noises, but only 0.51 by
the student under the same noises; docs/benchmarks.md).

The one-step sampler can multiply each sample's deviation from its image's K-sample mean by a
factor (``OneStepSampler(spread_inflation=...)``, ``sampling_common.inflate_spread``; the
multiplicative inflation of ensemble data assimilation). This module picks that factor: on
training images of the student (never its validation split) it draws K teacher samples and
K raw student samples from the *same* K noises, and for each candidate factor measures the
mean per-image Pearson correlation of the two hard-mask pixel-variance maps at the working
resolution (``uncertainty_eval.variance_correlation``). The factor with the highest mean wins
(ties: the smaller). The Dice between the student's and the teacher's majority votes is
reported beside it, so a factor that buys spread with accuracy is visible.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_lesion_diffkd.core.jobs import JobEvent, run_to_completion

#: Candidate factors; 1 (no inflation) is always tried.
DEFAULT_GRID: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)


@dataclass(frozen=True)
class SpreadCalibration:
    """The fitted factor and what every candidate scored.

    Attributes:
        factor: the chosen ``spread_inflation``.
        correlation: per candidate factor, the mean over images of the hard pixel-variance
            correlation with the teacher (images where either map is constant left out).
        majority_dice: per candidate factor, the mean Dice between the student's and the
            teacher's majority-vote masks.
        num_images: training images used; ``num_defined``: those with a defined correlation.
        num_samples: K.
    """

    factor: float
    correlation: dict[float, float]
    majority_dice: dict[float, float]
    num_images: int
    num_defined: int
    num_samples: int
    image_ids: list[str] = field(default_factory=list)

    def to_config(self) -> dict[str, Any]:
        """JSON-able record for the bundle's provenance."""
        return {
            "factor": self.factor,
            "num_images": self.num_images,
            "num_defined": self.num_defined,
            "num_samples": self.num_samples,
            "candidates": [{"factor": f, "variance_correlation": round(self.correlation[f], 4),
                            "majority_dice_vs_teacher": round(self.majority_dice[f], 4)}
                           for f in sorted(self.correlation)],
            "image_ids": list(self.image_ids),
        }


def _check(teacher: Any, student: Any, num_samples: int, grid: Sequence[float]) -> list[float]:
    """The sorted candidate factors; raises ValueError on unusable inputs."""
    if student.config.get("sampler", {}).get("name") != "one-step":
        raise ValueError(f"{student.name}: spread inflation applies to one-step students; its "
                         f"sampler is {student.config.get('sampler', {}).get('name')!r}")
    if (teacher.input_size, teacher.image_channels) != (student.input_size,
                                                        student.image_channels):
        raise ValueError(f"{teacher.name} and {student.name} take different inputs "
                         f"({teacher.input_size} px x {teacher.image_channels} vs "
                         f"{student.input_size} px x {student.image_channels})")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (a spread needs two samples), got "
                         f"{num_samples}")
    factors = sorted({float(f) for f in grid} | {1.0})
    if any(not (f > 0 and math.isfinite(f)) for f in factors):
        raise ValueError(f"inflation factors must be finite and > 0, got {list(grid)}")
    return factors


def _majority_dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dice of the majority votes of two (K, H, W) bool stacks (1 when both are empty)."""
    ma, mb = a.float().mean(0) > 0.5, b.float().mean(0) > 0.5
    total = int(ma.sum() + mb.sum())
    return 1.0 if total == 0 else 2.0 * int((ma & mb).sum()) / total


def calibrate_spread_inflation(
    teacher: Any,
    student: Any,
    images: torch.Tensor,
    num_samples: int = 8,
    grid: Sequence[float] = DEFAULT_GRID,
    seed: int = 0,
    image_ids: Sequence[str] | None = None,
) -> Generator[JobEvent, None, SpreadCalibration]:
    """Pick the student's spread inflation factor; a job generator (see ``core/jobs.py``).

    Args:
        teacher, student: loaded :class:`~napari_lesion_diffkd.core.bundle.ModelBundle`\\ s;
            the teacher runs its default sampler, the student the one-step sampler without
            inflation (whatever its bundle says), both at the same input size.
        images: (N, C, S, S) float32 in [-1, 1], prepared *training* images of the student.
        num_samples: K samples per image and model (>= 2).
        grid: candidate factors (> 0); 1 is always added.
        seed: image i uses the per-sample seeds ``sample_seeds(seed + i, K)``, the same for
            both models (so sample k of both starts from the same noise).
        image_ids: names of the images, stored in the result.

    Yields:
        A progress event per teacher network call (the student's one call per image is not
        counted); stop early with ``close()``.

    Returns:
        :class:`SpreadCalibration`.

    Raises:
        ValueError: a student without the one-step sampler, different input sizes, K < 2, bad
            factors, no images, or teacher samples that agree on every pixel of every image.
    """
    from napari_lesion_diffkd.core.diffusion.samplers import build_sampler
    from napari_lesion_diffkd.core.diffusion.sampling_common import inflate_spread, progress
    from napari_lesion_diffkd.core.ensemble.uncertainty_eval import variance_correlation
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler, sample_seeds

    factors = _check(teacher, student, num_samples, grid)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected (N, C, S, S) training images, got shape "
                         f"{tuple(images.shape)}")
    teacher_sampler = build_bundle_sampler(teacher, None, None)
    raw_student = build_sampler("one-step", student.schedule, student.prediction_target)
    calls = teacher_sampler.num_network_calls
    n = images.shape[0]
    corr: dict[float, list[float]] = {f: [] for f in factors}
    dice: dict[float, list[float]] = {f: [] for f in factors}
    for i in range(n):
        image = images[i : i + 1]
        seeds = sample_seeds(seed + i, num_samples)
        t_gen = teacher_sampler.sample(teacher.network, image.to(_device(teacher)),
                                       num_samples, seeds=seeds)
        # The samplers run the networks under no_grad themselves; no grad-mode context is
        # held open across this generator's yields (it would leak into the caller).
        try:
            event = next(t_gen)
            while True:
                yield progress(i * calls + event.step, n * calls,
                               f"image {i + 1}/{n}: teacher {event.message}")
                event = next(t_gen)
        except StopIteration as stop:
            t_x0 = stop.value
        finally:
            t_gen.close()  # also when this generator is closed mid-image
        s_x0 = run_to_completion(raw_student.sample(
            student.network, image.to(_device(student)), num_samples, seeds=seeds))
        t_hard = (t_x0[0, :, 0] > 0).cpu()
        for f in factors:
            s_hard = (inflate_spread(s_x0.float(), f)[0, :, 0] > 0).cpu()
            corr[f].append(variance_correlation(s_hard, t_hard))
            dice[f].append(_majority_dice(s_hard, t_hard))
    defined = [j for j, c in enumerate(corr[1.0]) if math.isfinite(c)]
    means = {f: float(np.nanmean(v)) if any(math.isfinite(c) for c in v) else float("nan")
             for f, v in corr.items()}
    if not any(math.isfinite(m) for m in means.values()):
        raise ValueError("the teacher's (or the student's) samples agree on every pixel of "
                         "every image: there is no spread to calibrate against")
    best = max(factors, key=lambda f: (means[f] if math.isfinite(means[f]) else -2.0, -f))
    return SpreadCalibration(
        factor=best, correlation=means,
        majority_dice={f: float(np.mean(v)) for f, v in dice.items()},
        num_images=n, num_defined=len(defined), num_samples=num_samples,
        image_ids=list(image_ids or []),
    )


def _device(bundle: Any) -> torch.device:
    return next(bundle.network.parameters()).device


def write_calibrated_bundle(
    student: Any,
    calibration: SpreadCalibration,
    out: str | Path,
    teacher_name: str,
    command: str | None = None,
) -> Path:
    """Copy the student's bundle to ``out`` with ``sampler.spread_inflation`` set.

    The weights are copied byte for byte; ``config.json`` gains the factor in ``sampler`` and
    ``provenance.spread_calibration`` (the candidates' scores, the teacher, the images, the
    command). The source bundle is never changed.

    Raises:
        ValueError: ``out`` is the student's own folder.
    """
    from napari_lesion_diffkd.core.bundle import CONFIG_NAME, WEIGHTS_NAME, atomic_write_bytes

    out = Path(out)
    source = Path(student.path) if student.path is not None else None
    if source is None or not (source / WEIGHTS_NAME).is_file():
        raise ValueError(f"{student.name}: its bundle folder is unknown; cannot copy weights")
    if out.resolve() == source.resolve():
        raise ValueError(f"{out}: the output must be a new folder, not the student's own")

    config = json.loads((source / CONFIG_NAME).read_text())
    config["sampler"] = {**config.get("sampler", {}), "spread_inflation": calibration.factor}
    provenance = dict(config.get("provenance") or {})
    provenance["spread_calibration"] = {**calibration.to_config(), "teacher": teacher_name,
                                        "student_source": str(source), "command": command}
    config["provenance"] = provenance
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{WEIGHTS_NAME}.copy"
    shutil.copyfile(source / WEIGHTS_NAME, tmp)
    tmp.replace(out / WEIGHTS_NAME)
    atomic_write_bytes(out / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
    return out
