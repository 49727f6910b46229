"""The small part every sampler shares: seeds and noise, the condition, network calls, events.

Conventions (the sampler contract, see :class:`Sampler`):

- Batch layout: the K samples of the N images run through the network together as one batch
  of B = N * K rows, *image-major*: row ``n * K + k`` is sample k of image n. Results are
  reshaped to (N, K, mask_channels, H, W) at the end.
- Seeds: sample k of every image draws all its noise from its own CPU ``torch.Generator``
  seeded with ``seeds[k]``, always as ``torch.randn((N, mask_channels, H, W))``. Hence K samples
  in one call equal K calls with one sample each (same seeds), and CPU/GPU get the same noise.
- Network: ``network(x_t, t, cond)`` with x_t (B, mask_channels, H, W) float32 and t (B,)
  float32 integer timesteps. A network with ``output_targets`` (e.g. ``("epsilon", "x0")``, a
  dual-decoder network as in seed 004) returns ``len(output_targets) * mask_channels`` channels,
  one block of ``mask_channels`` per head in that order; any other network returns
  ``mask_channels`` channels of the sampler's ``prediction_target``.
- Gradients are disabled only around the computations, never across a ``yield``: the consumer's
  code between events runs in its own grad mode.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping, Sequence
from typing import Any, ClassVar

import torch

from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.diffusion.targets import TARGETS, to_x0_and_eps
from napari_lesion_diffkd.core.jobs import JobEvent

#: Upper bound (exclusive) of seeds drawn from torch's global RNG when none are given.
SEED_BOUND = 2**31 - 1


# -- seeds and noise ------------------------------------------------------------------------------
def sample_seeds(seed: int, num_samples: int) -> list[int]:
    """Per-sample seeds derived from one user seed (disjoint for different user seeds)."""
    return [seed * 100_003 + k for k in range(num_samples)]


def resolve_seeds(seeds: Sequence[int] | None, num_samples: int) -> list[int]:
    """The K per-sample seeds: ``seeds`` checked, or K seeds drawn once from torch's global RNG.

    Drawing from the global RNG (instead of e.g. ``range(K)``) keeps repeated calls different
    while ``torch.manual_seed`` still makes a whole run reproducible.
    """
    if seeds is None:
        return [int(s) for s in torch.randint(0, SEED_BOUND, (num_samples,)).tolist()]
    seeds = [int(s) for s in seeds]
    if len(seeds) != num_samples:
        raise ValueError(f"need one seed per sample: got {len(seeds)} seeds, {num_samples} samples")
    return seeds


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample (CPU so that CPU and GPU runs draw the same numbers)."""
    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


def draw_noise(
    generators: Sequence[torch.Generator],
    per_sample_shape: tuple[int, int, int, int],
    device: torch.device,
) -> torch.Tensor:
    """Standard normal noise for the whole batch, image-major.

    Args:
        generators: the K per-sample generators; each draws ``per_sample_shape``.
        per_sample_shape: (N, mask_channels, H, W).
        device: where the result goes.

    Returns:
        (N * K, mask_channels, H, W) float32; row ``n * K + k`` comes from ``generators[k]``.
    """
    draws = [torch.randn(per_sample_shape, generator=g, dtype=torch.float32) for g in generators]
    n, c, h, w = per_sample_shape
    batch = torch.stack(draws, dim=1).reshape(n * len(generators), c, h, w)
    return batch.to(device)


# -- condition -------------------------------------------------------------------------------------
def repeat_batch(value: Any, repeats: int) -> Any:
    """Repeat every tensor in a (nested tuple/list/dict) structure ``repeats`` times along dim 0.

    ``repeat_interleave`` gives the image-major order (n0, n0, ..., n1, n1, ...). Non-tensor
    leaves are returned unchanged.
    """
    if isinstance(value, torch.Tensor):
        return value.repeat_interleave(repeats, dim=0)
    if isinstance(value, Mapping):
        return type(value)((k, repeat_batch(v, repeats)) for k, v in value.items())
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(repeat_batch(v, repeats) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(repeat_batch(v, repeats) for v in value)
    return value


@torch.no_grad()
def prepare_condition(network: Any, image: torch.Tensor, num_samples: int) -> Any:
    """The per-row condition for a batch of N * K rows.

    If the network has ``encode_condition`` the image features are computed once for the N
    images (they do not depend on x_t or t) and repeated; otherwise the image is repeated.
    """
    encode = getattr(network, "encode_condition", None)
    cond = encode(image) if callable(encode) else image
    return repeat_batch(cond, num_samples)


# -- network calls ---------------------------------------------------------------------------------
def timesteps_like(t: int, x: torch.Tensor) -> torch.Tensor:
    """(B,) float32 tensor filled with the integer timestep ``t`` on ``x``'s device."""
    return torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)


def network_heads(
    network: Any,
    x_t: torch.Tensor,
    t: int,
    cond: Any,
    default_target: str,
) -> dict[str, torch.Tensor]:
    """Call the network once and split its output into named heads.

    Args:
        network: callable ``(x_t, t, cond) -> output``, optional ``output_targets``.
        x_t: (B, mask_channels, H, W) float32.
        t: the timestep of every row.
        cond: the repeated condition from :func:`prepare_condition`.
        default_target: the target of a single-head network (the sampler's).

    Returns:
        ``{target: (B, mask_channels, H, W)}`` in the network's head order.
    """
    mask_channels = x_t.shape[1]
    with torch.no_grad():
        output = network(x_t, timesteps_like(t, x_t), cond)
    heads = getattr(network, "output_targets", None)
    if heads is None:
        heads = (default_target,)
    heads = tuple(heads)
    unknown = [h for h in heads if h not in TARGETS]
    if unknown or len(set(heads)) != len(heads):
        raise ValueError(f"bad network output_targets {heads}; each one of {TARGETS}, no repeats")
    expected = (x_t.shape[0], len(heads) * mask_channels, *x_t.shape[2:])
    if tuple(output.shape) != expected:
        raise ValueError(
            f"network output has shape {tuple(output.shape)}, expected {expected} "
            f"(heads {heads} x {mask_channels} mask channel(s))"
        )
    output = output.float()
    return {
        name: output[:, i * mask_channels : (i + 1) * mask_channels] for i, name in enumerate(heads)
    }


def estimate(
    heads: Mapping[str, torch.Tensor],
    prefer: Sequence[str],
    x_t: torch.Tensor,
    t: int,
    schedule: NoiseSchedule,
    clip_x0: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0_hat, eps_hat)`` from one head: the first of ``prefer`` that exists, else the first.

    With a single-head network ``prefer`` is irrelevant: the conversions of
    :func:`~napari_lesion_diffkd.core.diffusion.targets.to_x0_and_eps` supply both quantities.
    """
    name = next((p for p in prefer if p in heads), next(iter(heads)))
    with torch.no_grad():
        return to_x0_and_eps(name, heads[name], x_t, timesteps_like(t, x_t), schedule, clip_x0)


def estimate_mean(
    heads: Mapping[str, torch.Tensor],
    x_t: torch.Tensor,
    t: int,
    schedule: NoiseSchedule,
    clip_x0: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average ``(x0_hat, eps_hat)`` over all heads (each pair is consistent with x_t, and so is
    their mean, because ``x_t = a x0 + s eps`` is linear)."""
    pairs = [estimate(heads, (name,), x_t, t, schedule, clip_x0) for name in heads]
    x0 = torch.stack([p[0] for p in pairs]).mean(dim=0)
    eps = torch.stack([p[1] for p in pairs]).mean(dim=0)
    return x0, eps


# -- schedule helpers ------------------------------------------------------------------------------
def abar(schedule: NoiseSchedule, t: int) -> float:
    """``abar_t`` as a Python float (float64 precision); ``t = -1`` gives 1 (no noise)."""
    return 1.0 if t < 0 else float(schedule.alphas_cumprod[t])


def ddim_coefficients(
    schedule: NoiseSchedule, t: int, t_prev: int, eta: float
) -> tuple[float, float, float]:
    """DDIM (Song et al. 2021, eq. 12 and 16) update ``x_prev = a x0 + d eps + sigma z``.

    Returns:
        ``(a, d, sigma)`` with ``a = sqrt(abar_prev)``, ``d = sqrt(1 - abar_prev - sigma^2)`` and
        ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``.
    """
    ab_t, ab_prev = abar(schedule, t), abar(schedule, t_prev)
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)
    return math.sqrt(ab_prev), math.sqrt(max(1 - ab_prev - sigma**2, 0.0)), sigma


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (Python's ``round`` rounds halves to even)."""
    return int(math.floor(x + 0.5))


def progress(step: int, total: int, message: str, **values: float) -> JobEvent:
    """The event yielded after each network call (``step`` calls done out of ``total``)."""
    return JobEvent(kind="progress", step=step, total=total, message=message, values=values)


def to_samples(x0: torch.Tensor, num_images: int, num_samples: int) -> torch.Tensor:
    """(N * K, C, H, W) image-major -> (N, K, C, H, W) float32 clamped to [-1, 1]."""
    return x0.float().clamp(-1.0, 1.0).reshape(num_images, num_samples, *x0.shape[1:])


def inflate_spread(samples: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiply each image's sample deviations from their mean by ``factor``.

    Multiplicative ensemble inflation (as in ensemble data assimilation): sample k becomes
    ``mean + factor * (x_k - mean)``, the mean taken over the K samples of its image, then
    clamped to [-1, 1]. The K-sample mean is unchanged (up to the clamp) and K = 1 is
    returned as it is. Why: a one-call student that cannot tell which initial noise leads the
    teacher to which mask regresses towards the teacher's per-pixel vote fraction, so its K
    soft outputs differ less than the teacher's near-binary masks and, once thresholded,
    agree where the teacher's disagree. ``factor`` is fitted on training images
    (``core/distillation/spread_calibration.py``).

    Args:
        samples: (N, K, C, H, W) float x0 samples in [-1, 1].
        factor: > 0; 1 returns ``samples`` unchanged.

    Returns:
        (N, K, C, H, W) float32 in [-1, 1].
    """
    if factor <= 0:
        raise ValueError(f"spread inflation must be > 0, got {factor}")
    if factor == 1.0 or samples.shape[1] == 1:
        return samples
    mean = samples.mean(dim=1, keepdim=True)
    return (mean + factor * (samples - mean)).clamp(-1.0, 1.0)


# -- base class ------------------------------------------------------------------------------------
class Sampler:
    """Base of the samplers: config handling and the checks of :meth:`sample`.

    Subclasses implement :meth:`_generate` and list their constructor options in
    :meth:`_options`; ``schedule`` is never part of the config (it lives with the model).

    Args:
        schedule: the training noise schedule.
        prediction_target: what a single-head network predicts (``"epsilon"``, ``"v"``,
            ``"x0"``); for a network with ``output_targets`` it picks the head that
            one-head samplers use (if the network has it).
    """

    #: registry name (``samplers.SAMPLERS`` key)
    name: ClassVar[str] = ""

    def __init__(self, schedule: NoiseSchedule, prediction_target: str = "epsilon") -> None:
        if prediction_target not in TARGETS:
            raise ValueError(f"unknown prediction target {prediction_target!r}; one of {TARGETS}")
        self.schedule = schedule
        self.prediction_target = prediction_target

    # -- config -----------------------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        return {}

    def to_config(self) -> dict[str, Any]:
        """Constructor kwargs except the schedule, plus ``_class_name``; JSON-able."""
        return {
            "_class_name": type(self).__name__,
            "prediction_target": self.prediction_target,
            **self._options(),
        }

    @classmethod
    def from_config(cls, schedule: NoiseSchedule, config: Mapping[str, Any]) -> Sampler:
        """Rebuild from :meth:`to_config` output (keys starting with ``_`` are ignored)."""
        return cls(schedule, **{k: v for k, v in config.items() if not k.startswith("_")})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "_class_name")
        return f"{type(self).__name__}({args})"

    # -- sampling ---------------------------------------------------------------------------------
    @property
    def num_network_calls(self) -> int:
        """Network calls (= progress events) per :meth:`sample` call."""
        raise NotImplementedError

    def sample(
        self,
        network: Any,
        image: torch.Tensor,
        num_samples: int,
        seeds: Sequence[int] | None = None,
        mask_channels: int = 1,
    ) -> Generator[JobEvent, None, torch.Tensor]:
        """Draw ``num_samples`` masks per image; a job generator (see ``core/jobs.py``).

        The arguments are checked (and seeds drawn when None) at call time, before the first
        event; stop early with ``generator.close()``.

        Args:
            network: the denoiser ``(x_t, t, cond) -> prediction`` (eval mode is the caller's).
            image: (N, C, H, W) float32 preprocessed condition images.
            num_samples: K, samples per image.
            seeds: K ints, one per sample index (shared by all images); None draws K seeds
                from torch's global RNG.
            mask_channels: channels of the mask (1 for binary lesions).

        Returns:
            A generator yielding one ``JobEvent("progress")`` per network call and returning
            x0 estimates (N, K, mask_channels, H, W) float32 in [-1, 1] (> 0 is lesion) on
            ``image``'s device.
        """
        if image.dim() != 4:
            raise ValueError(f"image must be (N, C, H, W), got shape {tuple(image.shape)}")
        if num_samples < 1 or mask_channels < 1:
            raise ValueError("num_samples and mask_channels must be >= 1")
        seed_list = resolve_seeds(seeds, num_samples)
        return self._generate(network, image, num_samples, seed_list, mask_channels)

    def _start(
        self,
        network: Any,
        image: torch.Tensor,
        seeds: Sequence[int],
        mask_channels: int,
    ) -> tuple[list[torch.Generator], torch.Tensor, Any]:
        """Generators, initial noise x_T (N * K, mask_channels, H, W) and the repeated condition."""
        n, _, h, w = image.shape
        generators = make_generators(seeds)
        x_t = draw_noise(generators, (n, mask_channels, h, w), image.device)
        cond = prepare_condition(network, image, len(seeds))
        return generators, x_t, cond

    def _generate(
        self,
        network: Any,
        image: torch.Tensor,
        num_samples: int,
        seeds: list[int],
        mask_channels: int,
    ) -> Generator[JobEvent, None, torch.Tensor]:
        raise NotImplementedError
