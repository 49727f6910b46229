"""Per-image uncertainty scores and embeddings of many images, for ranking the annotation queue.

Works at the model's working resolution on preprocessed tensors (no resizing back), so that
scoring a pool of hundreds of images takes seconds with a fast student.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch
import torch.nn.functional as F

from napari_lesion_diffkd.core.bundle import ModelBundle
from napari_lesion_diffkd.core.jobs import JobEvent

SCORE_KINDS = ("sample_disagreement", "boundary_entropy", "mean_entropy")


def image_embedding(bundle: ModelBundle, images: torch.Tensor) -> torch.Tensor:
    """One vector per image: the network's deepest image features, averaged over space.

    Uses ``network.encode_condition`` when the network has one (the conditional UNets and
    the fast student), else a 16 x 16 thumbnail of the image itself.

    Args:
        images: (N, C, S, S) float32 prepared images.

    Returns:
        (N, D) float32, L2-normalised rows.
    """
    net = bundle.network
    with torch.no_grad():
        if hasattr(net, "encode_condition"):
            feats = net.encode_condition(images)
            deepest = min((f for f in feats if f.ndim == 4), key=lambda f: f.shape[-1])
            vec = deepest.float().mean(dim=(2, 3))
        else:
            vec = F.adaptive_avg_pool2d(images.float(), 16).flatten(1)
    return F.normalize(vec, dim=1)


def score_images(
    bundle: ModelBundle,
    images: torch.Tensor,
    num_samples: int = 8,
    kind: str = "sample_disagreement",
    seed: int = 0,
) -> Generator[JobEvent, None, tuple[np.ndarray, np.ndarray]]:
    """Uncertainty score and embedding of every image; one progress event per image.

    Each image is sampled on its own with the seeds of ``segment_image(..., seed=seed)``, so
    its score comes from the very samples the app shows for it (a sampler's noise depends
    on how many images share a call).

    Args:
        bundle: a diffusion model (K samples per image, default sampler).
        images: (N, C, S, S) float32 prepared images at the bundle's input size.
        num_samples: K.
        kind: one of :data:`SCORE_KINDS` (see ``ensemble.uncertainty.image_scores``).
        seed: sample seeds (the same K noises for every image).

    Returns:
        ``(scores (N,) float64, embeddings (N, D) float32)``; higher score = less certain.
    """
    from napari_lesion_diffkd.core.ensemble.uncertainty import image_scores
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler, sample_seeds

    if kind not in SCORE_KINDS:
        raise ValueError(f"unknown score {kind!r}; choose one of {SCORE_KINDS}")
    if bundle.config.get("objective") == "segmentation":
        raise ValueError(f"{bundle.name} draws no samples: scoring needs a diffusion model")
    sampler = build_bundle_sampler(bundle, None, None)
    seeds = sample_seeds(seed, num_samples)
    scores, embeddings = [], []
    for index in range(len(images)):
        part = images[index:index + 1]
        gen = sampler.sample(bundle.network, part, num_samples, seeds=seeds)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            x0 = stop.value
        scores.append(image_scores(x0[:, :, 0])[kind].double().cpu().numpy())
        embeddings.append(image_embedding(bundle, part).cpu().numpy())
        yield JobEvent("progress", step=index + 1, total=len(images),
                       message="scoring images")
    return np.concatenate(scores), np.concatenate(embeddings)
