"""The model's first answer on an image, as the segmentation widget produces it.

A *proposer* is a callable ``(image, key) -> Generator[JobEvent, None, Proposal]``: the
widget's path is ``core.segmenter.segment_image`` with the model's own defaults (K, sampler,
STAPLE fusion, entropy uncertainty, seed 0). Tests may pass any callable of that shape (e.g.
one returning the ground truth).

The default model of a modality is the one the app's model picker offers first: the
registered bundle of that modality with role ``student`` (else ``teacher``, else
``baseline``), ties by name (``plugin/_catalog.ROLE_PREFERENCE``; core cannot import it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field

import numpy as np

from napari_lesion_diffkd.core.jobs import JobEvent

#: Roles in the order the app's model picker prefers them for a modality.
ROLE_PREFERENCE = ("student", "teacher", "baseline")


@dataclass
class Proposal:
    """A model's answer on one image, in the image's (Y, X) frame.

    Attributes:
        mask: (Y, X) bool consensus. uncertainty: (Y, X) float32 in [0, 1] or None.
        scores: per-image uncertainty scores (``sample_disagreement`` ...), may be empty.
        seconds: model wall time. model: the model's name.
    """

    mask: np.ndarray
    uncertainty: np.ndarray | None = None
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    model: str = ""


Proposer = Callable[[np.ndarray, Hashable], Generator[JobEvent, None, Proposal]]


def default_model_name(modality: str, role: str | None = None) -> str:
    """The registered model the app starts a modality with (or the one of ``role``).

    Raises:
        LookupError: no registered model of that modality (and role).
    """
    from napari_lesion_diffkd.core.registry import list_models

    rows = [r for r in list_models() if r["modality"] == modality]
    roles = (role,) if role else ROLE_PREFERENCE
    for wanted in roles:
        names = sorted(r["name"] for r in rows if r["role"] == wanted)
        if names:
            return names[0]
    raise LookupError(f"no registered {role or 'segmentation'} model for modality "
                      f"{modality!r}; pass one with --model/--teacher")


def segmenter_proposer(bundle, num_samples: int | None = None, seed: int = 0) -> Proposer:
    """A proposer running ``segment_image`` on a loaded ``ModelBundle`` (widget defaults)."""
    from napari_lesion_diffkd.core.segmenter import segment_image

    def propose(image: np.ndarray, key: Hashable) -> Generator[JobEvent, None, Proposal]:
        start = time.perf_counter()
        result = yield from segment_image(bundle, image, num_samples=num_samples, seed=seed)
        return Proposal(mask=np.asarray(result.consensus, dtype=bool),
                        uncertainty=np.asarray(result.uncertainty, dtype=np.float32),
                        scores=dict(result.scores), seconds=time.perf_counter() - start,
                        model=bundle.name)

    return propose
