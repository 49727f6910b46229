"""Trajectory distillation: teach a one-call student the teacher's mask for each initial noise.

The teacher's default sampler is deterministic given its initial noise x_T (DDIM with eta = 0,
or UniSegDiff's staged sampler), so for an image g and a noise z it defines a map
``z -> teacher(g, z)``, a mask in [-1, 1]. The student learns that map in one call at
t = T - 1 (x0 prediction, as LEAF's one-step inference, seed 001 §2.3):

    student(x_T = z, t = T - 1, g)  ~  teacher(g, z)

Because every training target belongs to its own noise, K student samples from K noises
reproduce the *spread* of the teacher's K samples, not only their mean: the pixel variance
and the STAPLE consensus of the student follow the teacher's.

Noise bookkeeping. Sample ``m`` of training image ``i`` uses the seed
:func:`trajectory_seed` ``(base, i, m)``; the noise is drawn exactly as the samplers draw theirs
(one CPU generator per seed, ``sampling_common.draw_noise``), so targets can be cached as masks
only and the noise re-drawn at training time.

Targets are computed once per run (``M`` noises per training image) and cached in the run
folder (``teacher_targets.pt``: uint8 masks plus the facts they depend on); a resumed or
repeated run with the same teacher, images, size and seeds reuses them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import torch

from napari_lesion_diffkd.core.checkpoint_load import load_checkpoint
from napari_lesion_diffkd.core.diffusion.sampling_common import draw_noise, make_generators
from napari_lesion_diffkd.core.jobs import JobEvent

CACHE_NAME = "teacher_targets.pt"


def trajectory_seed(base: int, image_index: int, sample_index: int, per_image: int) -> int:
    """Seed of noise ``sample_index`` of training image ``image_index`` (disjoint per pair)."""
    return int(base) * 1_000_003 + image_index * per_image + sample_index


def trajectory_noise(
    seeds: Sequence[int], shape: tuple[int, int, int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Initial noises for ``seeds``, one per row: (len(seeds), C, H, W) float32.

    Row ``j`` equals what a sampler draws for an image with ``seeds=[seeds[j]]``.
    """
    c, h, w = shape
    gens = make_generators(seeds)
    return torch.cat([draw_noise([g], (1, c, h, w), torch.device(device)) for g in gens])


def _fingerprint(teacher: Any, images: torch.Tensor, per_image: int, base_seed: int) -> str:
    """Hash of everything the cached targets depend on: the teacher's weights and sampler,
    the images (their order included), M and the seed base."""
    digest = hashlib.sha256()
    digest.update(f"{per_image}|{base_seed}|{teacher.config.get('sampler')}|".encode())
    for tensor in teacher.network.state_dict().values():
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def compute_teacher_targets(
    teacher: Any,
    images: torch.Tensor,
    per_image: int,
    base_seed: int,
    cache_dir: str | Path | None = None,
) -> Generator[JobEvent, None, torch.Tensor]:
    """The teacher's masks for ``per_image`` noises of every image (cached on disk).

    Args:
        teacher: a :class:`~napari_lesion_diffkd.core.bundle.ModelBundle`; its default sampler
            (``config["sampler"]``) is used.
        images: (N, C, S, S) float32 in [-1, 1], the model-resolution training images, on the
            teacher's device.
        per_image: M, noises per image.
        base_seed: seed base of :func:`trajectory_seed` (one teacher call chain per image, its
            M samples batched).
        cache_dir: folder of the cache file; None: no cache.

    Returns:
        (N, M, 1, S, S) float32 targets in [-1, 1] (dequantised from the uint8 cache).
    """
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler

    n = images.shape[0]
    fingerprint = _fingerprint(teacher, images, per_image, base_seed)
    cache = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
    if cache is not None and cache.is_file():
        stored = load_checkpoint(cache, "cpu")  # a refused/corrupt cache: one clear error
        if stored.get("fingerprint") == fingerprint:
            yield JobEvent("log", message=f"teacher targets reused from {cache}")
            return stored["targets"].float() / 127.5 - 1
    sampler = build_bundle_sampler(teacher, None, None)
    out = []
    network = teacher.network.eval()
    for i in range(n):
        seeds = [trajectory_seed(base_seed, i, m, per_image) for m in range(per_image)]
        with torch.inference_mode():
            x0 = run_to_completion(sampler.sample(network, images[i : i + 1], per_image,
                                                  seeds=seeds))
        out.append(x0.cpu())  # (1, M, 1, S, S)
        yield JobEvent("progress", step=i + 1, total=n, message="teacher targets")
    targets = torch.cat(out).clamp(-1, 1)
    quantised = torch.round((targets + 1) * 127.5).to(torch.uint8)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"fingerprint": fingerprint, "teacher": str(teacher.name),
                    "per_image": per_image, "base_seed": base_seed, "targets": quantised}, tmp)
        tmp.replace(cache)
    return quantised.float() / 127.5 - 1


def flip_consistently(
    tensors: Sequence[torch.Tensor], generator: torch.Generator, vertical: bool
) -> list[torch.Tensor]:
    """Random left-right (and, if ``vertical``, up-down) flips applied identically to all of
    ``tensors`` (each (B, C, H, W)), per row. A flip of image, noise and teacher mask together is
    a valid training pair to the extent that the teacher is flip-equivariant; no interpolation."""
    b = tensors[0].shape[0]
    flip_x = torch.rand(b, generator=generator) < 0.5
    flip_y = (torch.rand(b, generator=generator) < 0.5) & vertical
    out = []
    for x in tensors:
        fx = flip_x.to(x.device)[:, None, None, None]
        fy = flip_y.to(x.device)[:, None, None, None]
        x = torch.where(fx, x.flip(-1), x)
        out.append(torch.where(fy, x.flip(-2), x))
    return out
