"""TS-KD student bundles (``config.json`` + fp16 ``model.safetensors``) and prediction.

Same files, atomic writes and rule as ``core/bundle.py`` (nothing is unpickled), but the
network is a prompt-free :class:`ViTFPNStudent` without a noise schedule. ``config.json``:

* ``name``, ``kind`` = ``"ts-kd-student"``, ``role`` = ``"student"``, ``modality``;
* ``network``: ``{"_class_name": "ViTFPNStudent", "config": StudentConfig dict}``;
* ``input``: ``{"size": S, "channels": 3, "normalisation": ...}``; ``logits_size``;
* ``num_parameters``, ``size_mib_fp32``, ``metrics``, ``teacher``, ``provenance``,
  ``package_version``, ``torch_version``.

:func:`predict` maps an image in its own pixel frame to a mask in that frame.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_lesion_diffkd.core.weights_check import WeightsError, check_state_dict
from napari_lesion_diffkd import __version__
from napari_lesion_diffkd.core.bundle import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    BundleError,
    atomic_write_bytes,
    read_config,
)
from napari_lesion_diffkd.core.distillation.ts_kd.data import (
    image_to_item,
    logits_to_image,
    normalise_pad,
)
from napari_lesion_diffkd.core.distillation.ts_kd.student import StudentConfig, ViTFPNStudent

KIND = "ts-kd-student"
NORMALISATION = ("RGB uint8 (gray repeated), longest side resized to S (PIL bilinear), "
                 "(x - pixel_mean) / pixel_std, zero-padded bottom/right to S x S (as SAM)")


def size_mib(num_parameters: int, bytes_per_parameter: int = 4) -> float:
    """Parameter memory in MiB (seed 002 Table 7's "MB" are fp32 weights: 93.7M -> 357)."""
    return num_parameters * bytes_per_parameter / 2**20


@dataclass
class LoadedStudent:
    """A TS-KD student ready to predict.

    Attributes:
        network: the :class:`ViTFPNStudent` (eval mode, float32).
        config: the bundle's ``config.json`` dict. path: the bundle folder.
    """

    network: ViTFPNStudent
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


def save_student_bundle(folder: str | Path, network: ViTFPNStudent, config: dict[str, Any],
                        dtype: torch.dtype = torch.float16) -> Path:
    """Write the bundle; ``config`` gives name, modality, metrics, provenance, ..."""
    from safetensors.torch import save as save_tensors

    folder = Path(folder)
    n = sum(p.numel() for p in network.parameters())
    full = dict(config)
    full.setdefault("role", "student")
    full.update({
        "kind": KIND,
        "network": {"_class_name": type(network).__name__,
                    "config": network.config.to_dict()},
        "input": {"size": network.config.img_size, "channels": 3,
                  "normalisation": NORMALISATION},
        "logits_size": network.config.logits_size,
        "num_parameters": n,
        "size_mib_fp32": size_mib(n),
        "package_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    })
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in network.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, save_tensors(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(full, indent=2) + "\n").encode())
    return folder


def is_student_bundle(folder: str | Path) -> bool:
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and config.get("kind") == KIND  # a list config: no


def load_student_bundle(name_or_path: str | os.PathLike,
                        device: str | torch.device = "cpu") -> LoadedStudent:
    """Load a student bundle from a folder or a registered name (``core.registry``).

    Raises:
        BundleError: not a TS-KD student bundle, missing/corrupt weights, or weights that
            do not fit the config (the message says which).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from napari_lesion_diffkd.core.registry import UnknownModelError, resolve_model

    try:
        folder = resolve_model(name_or_path)
    except UnknownModelError as exc:
        raise BundleError(str(exc)) from None
    config = read_config(folder)
    if config.get("kind") != KIND:
        raise BundleError(f"{folder}: not a TS-KD student bundle (kind {config.get('kind')!r})")
    try:
        network = ViTFPNStudent(StudentConfig.from_dict(config["network"]["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{folder}: config cannot build the student ({exc})") from exc
    weights = folder / WEIGHTS_NAME
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{weights}: missing or unreadable weights ({exc})") from exc
    try:
        # Strict names/shapes, float and finite: NaN or int8 weights used to load silently.
        check_state_dict(state, network.state_dict(), str(weights))
        network.load_state_dict({k: v.float() for k, v in state.items()})
    except WeightsError as exc:
        raise BundleError(str(exc)) from None
    except RuntimeError as exc:
        raise BundleError(f"{weights}: weights do not fit the config ({exc})") from exc
    return LoadedStudent(network.to(device).eval(), config, folder)


@dataclass
class StudentPrediction:
    """``mask``: (Y, X) bool; ``probability``: (Y, X) float32 in [0, 1], image frame."""

    mask: np.ndarray
    probability: np.ndarray


@torch.no_grad()
def predict(student: LoadedStudent | ViTFPNStudent, image: np.ndarray,
            device: str | torch.device | None = None) -> StudentPrediction:
    """Segment one image.

    Args:
        student: a loaded bundle or a bare network.
        image: (Y, X) gray or (Y, X, 3) RGB, any dtype (uint8 kept, others min-max scaled).

    Returns:
        The mask and the probability map in the image's own (Y, X) frame.
    """
    net = student.network if isinstance(student, LoadedStudent) else student
    cfg = net.config
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    item = image_to_item(np.asarray(image), cfg.img_size, "image")
    x = normalise_pad(item.image, cfg.img_size, cfg.pixel_mean, cfg.pixel_std)[None].to(dev)
    low = net(x)
    logits = logits_to_image(low, tuple(item.image.shape[-2:]), cfg.img_size,
                             tuple(np.asarray(image).shape[:2]))
    prob = torch.sigmoid(logits).cpu().numpy().astype(np.float32)
    return StudentPrediction(mask=prob > 0.5, probability=prob)
