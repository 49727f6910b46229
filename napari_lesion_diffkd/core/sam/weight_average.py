"""Average the weights of SAM bundles from one training lineage (a "uniform soup").

Two checkpoints of the same run, or of consecutive stages that continue one another, lie in
one basin of the loss; their weight average is often better than either (Wortsman et al.,
"Model soups", ICML 2022; Izmailov et al., "Averaging weights leads to wider optima", 2018).
``lesion-sam-tiny`` is the mean of its second and third training stages.

Only full bundles of the same architecture and the same validation split are averaged: a
bundle stored as a difference to a base (LoRA, decoder-only) or trained on another split
is refused, because the average would then have seen the other's validation images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from napari_lesion_diffkd.core.bundle import WEIGHTS_NAME, BundleError
from napari_lesion_diffkd.core.sam.architectures import TINY_ARCH, TinySamConfig
from napari_lesion_diffkd.core.sam.loading import sha256_file
from napari_lesion_diffkd.core.sam.sam_bundle import load_sam_bundle, save_sam_bundle


def average_sam_bundles(
    folders: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
    name: str | None = None,
    config_updates: dict[str, Any] | None = None,
    command: str | None = None,
) -> Path:
    """Write the weighted mean of several SAM bundles' weights as a new bundle.

    Args:
        folders: two or more SAM bundle folders (``config.json`` + ``model.safetensors``)
            with the same ``sam`` spec, no ``base`` and no LoRA.
        out: output bundle folder.
        weights: one non-negative weight per folder (normalised to sum 1); default equal.
        name: the new bundle's name; default the first bundle's.
        config_updates: keys set in the new config (e.g. ``{"test_time_flip": True}``).
        command: the command line that made it (``provenance.command``).

    Returns:
        ``out``. The config is the first bundle's, with ``provenance.averaged_from`` listing
        every input (folder, weights SHA-256, weight, its own training command and steps).

    Raises:
        BundleError: fewer than two bundles, a bundle stored against a base or with LoRA,
            different architectures, or different validation splits.
        ValueError: wrong number of weights, or weights that are negative or sum to 0.
    """
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise BundleError("averaging needs at least two SAM bundles")
    if weights is None:
        weights = [1.0] * len(folders)
    if len(weights) != len(folders) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need {len(folders)} non-negative weights with a positive sum, "
                         f"got {list(weights)}")
    total = float(sum(weights))
    weights = [float(w) / total for w in weights]
    loaded = [load_sam_bundle(f) for f in folders]
    first = loaded[0]
    for folder, sam in zip(folders, loaded):
        spec = sam.config.get("sam") or {}
        if spec.get("base") or sam.config.get("lora"):
            raise BundleError(f"{folder}: stored against a base model or with LoRA adapters; "
                              "average full bundles only")
        if spec != first.config.get("sam"):
            raise BundleError(f"{folder}: a different architecture from {folders[0]}")
        val_ids = (sam.config.get("provenance") or {}).get("val_ids")
        if val_ids != (first.config.get("provenance") or {}).get("val_ids"):
            raise BundleError(f"{folder}: a different validation split from {folders[0]}; "
                              "the average would have trained on validation images")
    states = [sam.model.state_dict() for sam in loaded]
    mean = {}
    for key, ref in states[0].items():
        if ref.is_floating_point():
            mean[key] = sum(w * s[key].double() for w, s in zip(weights, states)).to(ref.dtype)
        else:
            mean[key] = ref
    model = first.model
    with torch.no_grad():
        model.load_state_dict(mean)
    config = {k: v for k, v in first.config.items()
              if k not in ("kind", "sam", "lora", "input", "low_res_size", "num_parameters",
                           "package_version", "torch_version", "metrics")}
    if name is not None:
        config["name"] = name
    provenance = dict(first.config.get("provenance") or {})
    provenance["averaged_from"] = [
        {"folder": str(f), "weights_sha256": sha256_file(f / WEIGHTS_NAME), "weight": w,
         "command": (s.config.get("provenance") or {}).get("command"),
         "steps": (s.config.get("provenance") or {}).get("steps")}
        for f, s, w in zip(folders, loaded, weights)
    ]
    provenance["command"] = command
    config["provenance"] = provenance
    config.update(config_updates or {})
    spec = first.config["sam"]
    tiny = TinySamConfig.from_dict(spec["tiny_config"]) if spec.get("arch") == TINY_ARCH else None
    return save_sam_bundle(out, model, config, arch=str(spec["arch"]), tiny_config=tiny)
