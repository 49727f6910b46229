"""One-step inference (seed 001, LEAF, §2.3; following SDSeg, Lin et al. MICCAI 2024).

"We initialize the segmentation map with standard Gaussian noise z_T ... we apply a single-step
reverse process": x_T is pure noise, the network is called once at the top timestep t = T - 1
and its prediction, converted to x0 (LEAF trains x0-prediction, §2.2), is the result. With
``num_samples`` K, K different noises give K samples (LEAF reports a single run and its
stability over 10 seeds, Table 4).

Optionally the K samples of an image have their spread around their mean inflated by a
fitted factor (``spread_inflation``, see :func:`~.sampling_common.inflate_spread`): a
trajectory-distilled student's samples then vary where the teacher's do.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch

from napari_lesion_diffkd.core.diffusion.sampling_common import (
    Sampler,
    estimate,
    inflate_spread,
    network_heads,
    progress,
    to_samples,
)
from napari_lesion_diffkd.core.jobs import JobEvent


class OneStepSampler(Sampler):
    """x0_hat = network(x_T, T - 1), converted to x0 and clamped to [-1, 1]; one network call.

    Args:
        schedule: the training noise schedule.
        prediction_target: what the network predicts (``"x0"`` in LEAF; ``"epsilon"``/``"v"``
            are converted, though the eps conversion divides by the tiny ``sqrt(abar_{T-1})``).
        spread_inflation: factor on each sample's deviation from the mean of its image's K
            samples (1 = off; K = 1 is never changed). Because it uses all K samples, sample k
            depends on K: the same seed gives the same sample only at the same K.
    """

    name = "one-step"

    def __init__(self, schedule: Any, prediction_target: str = "epsilon",
                 spread_inflation: float = 1.0) -> None:
        super().__init__(schedule, prediction_target)
        spread_inflation = float(spread_inflation)
        if not spread_inflation > 0:
            raise ValueError(f"spread_inflation must be > 0, got {spread_inflation}")
        self.spread_inflation = spread_inflation

    def _options(self) -> dict[str, Any]:
        return {"spread_inflation": self.spread_inflation} if self.spread_inflation != 1.0 else {}

    @property
    def num_network_calls(self) -> int:
        return 1

    def _generate(
        self,
        network: Any,
        image: torch.Tensor,
        num_samples: int,
        seeds: list[int],
        mask_channels: int,
    ) -> Generator[JobEvent, None, torch.Tensor]:
        _, x_t, cond = self._start(network, image, seeds, mask_channels)
        t = self.schedule.num_timesteps - 1
        heads = network_heads(network, x_t, t, cond, self.prediction_target)
        x0, _ = estimate(heads, (self.prediction_target,), x_t, t, self.schedule, clip_x0=True)
        yield progress(1, 1, f"one-step (t={t})", t=float(t))
        return inflate_spread(to_samples(x0, image.shape[0], num_samples), self.spread_inflation)
