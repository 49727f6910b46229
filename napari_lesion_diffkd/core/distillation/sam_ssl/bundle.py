"""The trained student as a bundle folder: ``config.json`` + fp16 ``model.safetensors``.

Same file names, atomic writes and no-pickle rule as ``core/bundle.py``, but a SAM-SSL
student has no noise schedule and no sampler: one forward pass gives the mask and the SDF,
so it has its own ``kind`` (``"sam-ssl-student"``) and loader. ``config.json`` keys: ``name``,
``kind``, ``role``, ``modality``, ``network`` (``_class_name`` + constructor kwargs),
``input`` (size, channels, normalisation), ``outputs``, ``num_parameters``, ``metrics``,
``provenance``, ``package_version``, ``torch_version``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
from napari_lesion_diffkd.core.data.preprocess import prepare_image, resize_maps
from napari_lesion_diffkd.core.distillation.sam_ssl.network import DualTaskNet, count_parameters

KIND = "sam-ssl-student"
NORMALISATION = ("preprocess.prepare_image: square bilinear resize to S (aspect ratio not "
                 "kept), [0, 1] (uint8 / 255, other dtypes min-max) mapped to [-1, 1]")


@dataclass
class LoadedStudent:
    """A loaded dual-task student (eval mode) and its bundle config."""

    network: DualTaskNet
    config: dict[str, Any]
    path: Path | None = None

    @property
    def input_size(self) -> int:
        return int(self.config["input"]["size"])

    @property
    def channels(self) -> int:
        return int(self.config["input"]["channels"])


@dataclass(frozen=True)
class StudentPrediction:
    """One image's prediction, in the image's own (Y, X) frame.

    Attributes:
        probability: (Y, X) float32 lesion probability in [0, 1].
        mask: (Y, X) bool, ``probability >= 0.5``.
        sdf: (Y, X) float32 normalised signed distance in [-1, 1] (positive inside).
    """

    probability: np.ndarray
    mask: np.ndarray
    sdf: np.ndarray


def save_student(folder: str | Path, net: DualTaskNet, config: dict[str, Any],
                 input_size: int, channels: int) -> Path:
    """Write the bundle (``config`` gives name, modality, metrics, provenance, ...)."""
    from safetensors.torch import save as save_tensors

    folder = Path(folder)
    full = dict(config)
    full.setdefault("role", "student")
    full.update({
        "kind": KIND,
        "network": {"_class_name": "DualTaskNet", **net.config()},
        "input": {"size": int(input_size), "channels": int(channels),
                  "normalisation": NORMALISATION},
        "outputs": {"mask_logits": "(B, 1, S, S) lesion logits",
                    "sdf": "(B, 1, S, S) normalised signed distance, tanh, positive inside"},
        "num_parameters": count_parameters(net),
        "package_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    })
    tensors = {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype)
               .contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, save_tensors(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(full, indent=2) + "\n").encode())
    return folder


def load_student(folder: str | Path, device: str | torch.device = "cpu") -> LoadedStudent:
    """Rebuild the student from a bundle folder (float32, eval mode).

    Raises:
        BundleError: not a SAM-SSL student bundle, missing files or mismatching weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    if config.get("kind") != KIND:
        raise BundleError(f"{folder}: not a {KIND} bundle (kind {config.get('kind')!r})")
    kwargs = {k: v for k, v in (config.get("network") or {}).items() if k != "_class_name"}
    try:
        net = DualTaskNet(**kwargs)
        state = load_file(str(folder / WEIGHTS_NAME))
        # Strict names/shapes, float and finite: NaN or int8 weights used to load silently.
        check_state_dict(state, net.state_dict(), str(folder / WEIGHTS_NAME))
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in state.items()})
    except WeightsError as exc:
        raise BundleError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{folder}: config cannot build the network ({exc})") from exc
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise BundleError(f"{folder}: unreadable or mismatching weights ({exc})") from exc
    return LoadedStudent(net.to(device).eval(), config, folder)


@torch.no_grad()
def predict_student(student: LoadedStudent, image: np.ndarray) -> StudentPrediction:
    """Segment one image ((Y, X) gray or (Y, X, C), any dtype) in its own pixel frame."""
    image = np.asarray(image)
    device = next(student.network.parameters()).device
    x = prepare_image(image, student.input_size, student.channels)[None].to(device)
    logits, sdf = student.network(x)
    hw = (int(image.shape[0]), int(image.shape[1]))
    prob = resize_maps(torch.sigmoid(logits.float())[0, 0].cpu(), hw).numpy()
    sdf_full = resize_maps(sdf.float()[0, 0].cpu(), hw).numpy()
    return StudentPrediction(prob.astype(np.float32), prob >= 0.5, sdf_full.astype(np.float32))
