"""Model bundles on disk: ``config.json`` + ``model.safetensors`` (+ ``README.md`` model card).

A bundle folder holds everything needed to rebuild and run a model without unpickling
anything: the network's class name and constructor kwargs, the noise schedule, the
prediction target, the input convention, the default sampler, validation metrics and the
training provenance (data, split, command, package and torch versions).
Weights are stored as fp16 safetensors to keep committed defaults small; they are cast back
to float32 on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_lesion_diffkd import __version__
from napari_lesion_diffkd.core.config_bounds import ConfigBoundsError, check_bundle_config
from napari_lesion_diffkd.core.data.writers import atomic_write_bytes  # re-exported
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.networks.registry import build_network, network_config
from napari_lesion_diffkd.core.weights_check import WeightsError, check_state_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


class BundleError(RuntimeError):
    """A model bundle is missing, incomplete or inconsistent (message says which and why)."""


@dataclass
class ModelBundle:
    """A loaded model: network (eval mode) + schedule + the bundle's config dict.

    ``config`` keys: ``name``, ``modality``, ``role``, ``network``, ``schedule``,
    ``prediction_target``, ``input`` (``size``, ``channels``), ``sampler`` (``name``,
    ``num_steps``, ``num_samples``), ``metrics``, ``provenance``, ``package_version``.
    """

    network: nn.Module
    schedule: NoiseSchedule
    config: dict[str, Any]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.path.name if self.path else "unnamed"))

    @property
    def input_size(self) -> int:
        return int(self.config["input"]["size"])

    @property
    def image_channels(self) -> int:
        return int(self.config["input"]["channels"])

    @property
    def prediction_target(self) -> str:
        return str(self.config["prediction_target"])

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


def save_bundle(
    folder: str | Path,
    network: nn.Module,
    schedule: NoiseSchedule,
    config: dict[str, Any],
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a bundle folder (created if needed). ``config`` network/schedule keys are filled in.

    Returns:
        The bundle folder.
    """
    from safetensors.torch import save as save_tensors

    folder = Path(folder)
    full = dict(config)
    full["network"] = network_config(network)
    full["schedule"] = schedule.to_config()
    full["package_version"] = __version__
    full["torch_version"] = torch.__version__.split("+")[0]
    tensors = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in network.state_dict().items()
    }
    atomic_write_bytes(folder / WEIGHTS_NAME, save_tensors(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(full, indent=2) + "\n").encode())
    return folder


def read_config(folder: str | Path) -> dict[str, Any]:
    """Read a bundle's ``config.json`` (raises :class:`BundleError` with the reason)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise BundleError(f"{folder}: not a model bundle (no {CONFIG_NAME})")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and huge-integer literals.
        raise BundleError(f"{path}: unreadable config ({exc})") from exc
    if not isinstance(config, dict):
        # Every caller does config.get(...): a list here was an AttributeError traceback.
        raise BundleError(f"{path}: the config must be a JSON object, got a JSON "
                          f"{type(config).__name__}")
    return config


def load_bundle(folder: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Rebuild the network from a bundle folder and load its weights (float32, eval mode).

    Raises:
        BundleError: one line saying what is wrong: no/unreadable/non-object config, a
            config value out of bounds (``core/config_bounds.py``), a config that cannot
            build the network, missing or corrupt weights, or a tensor that is missing,
            unexpected, of another shape, not floating point, or not finite
            (``core/weights_check.py``).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise BundleError(f"{folder}: weights file {WEIGHTS_NAME} is missing")
    try:
        # Bounds first: an absurd width or size must not be allocated to find out.
        check_bundle_config(config)
    except ConfigBoundsError as exc:
        raise BundleError(f"{folder / CONFIG_NAME}: {exc}") from exc
    try:
        network = build_network(config["network"])
        schedule = NoiseSchedule.from_config(config["schedule"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"{folder}: config cannot build the model ({exc})") from exc
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{weights}: corrupt or unreadable weights ({exc})") from exc
    try:
        # Strict names, shapes, float dtypes and finite values, one line naming the tensor.
        check_state_dict(state, network.state_dict(), str(weights))
    except WeightsError as exc:
        raise BundleError(str(exc)) from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise BundleError(f"{weights}: weights do not match the config's network ({exc})") from exc
    network.to(device).eval()
    if torch.device(device).type == "cpu":
        # channels_last convolutions batch far better on CPU: K = 8 samples cost ~0.6x of
        # the contiguous layout's time (docs/benchmarks.md, sampling section).
        network.to(memory_format=torch.channels_last)
    return ModelBundle(network=network, schedule=schedule, config=config, path=folder)
