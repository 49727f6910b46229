"""Sampler registry: name -> class, and builders from a name or a saved config.

Names: ``"ddpm"`` (:class:`DDPMSampler`), ``"ddim"`` (:class:`DDIMSampler`), ``"staged"``
(:class:`StagedSampler`, seed 004) and ``"one-step"`` (:class:`OneStepSampler`, seed 001).
All share the contract of :class:`~napari_lesion_diffkd.core.diffusion.sampling_common.Sampler`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from napari_lesion_diffkd.core.diffusion.ddim import DDIMSampler
from napari_lesion_diffkd.core.diffusion.ddpm import DDPMSampler
from napari_lesion_diffkd.core.diffusion.one_step import OneStepSampler
from napari_lesion_diffkd.core.diffusion.sampling_common import Sampler
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.diffusion.staged import StagedSampler

SAMPLERS: dict[str, type[Sampler]] = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "staged": StagedSampler,
    "one-step": OneStepSampler,
}


def build_sampler(
    name: str, schedule: NoiseSchedule, prediction_target: str = "epsilon", **kwargs: Any
) -> Sampler:
    """Build a sampler by registry name.

    Args:
        name: one of ``SAMPLERS`` (``"ddpm"``, ``"ddim"``, ``"staged"``, ``"one-step"``).
        schedule: the model's training noise schedule.
        prediction_target: what the network predicts.
        **kwargs: the sampler's options (e.g. ``num_steps=10`` for DDIM).

    Raises:
        ValueError: unknown name (the message lists the valid ones) or bad options.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid names: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](schedule, prediction_target, **kwargs)


def sampler_from_config(schedule: NoiseSchedule, config: Mapping[str, Any]) -> Sampler:
    """Rebuild a sampler from its :meth:`Sampler.to_config` dict (``_class_name`` + kwargs)."""
    by_class = {cls.__name__: cls for cls in SAMPLERS.values()}
    class_name = config.get("_class_name")
    if class_name not in by_class:
        raise ValueError(f"unknown sampler class {class_name!r}; known: {', '.join(by_class)}")
    return by_class[class_name].from_config(schedule, config)
