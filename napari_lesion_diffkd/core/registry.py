"""Registered models: bundle folders found by name, and loading by name or path.

Search order for a name: ``$NAPARI_LESION_DIFFKD_MODELS`` (``os.pathsep``-separated folders),
the user cache's ``models/`` folder (``core/cache_paths.models_cache_dir``: default
``~/.cache/napari-lesion-diffkd/models``, moved with ``$LESION_DIFFKD_CACHE``),
then the repository's ``models/`` folder (the committed defaults). A bundle is any
subfolder holding ``config.json`` and ``model.safetensors``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from napari_lesion_diffkd.core.cache_paths import models_cache_dir
from napari_lesion_diffkd.core.bundle import (
    CONFIG_NAME,
    BundleError,
    ModelBundle,
    load_bundle,
    read_config,
)

MODELS_ENV_VAR = "NAPARI_LESION_DIFFKD_MODELS"


class UnknownModelError(LookupError):
    """No registered model has this name and no bundle exists at this path."""


def model_dirs() -> list[Path]:
    """Folders searched for bundles, highest priority first."""
    dirs = [Path(p) for p in os.environ.get(MODELS_ENV_VAR, "").split(os.pathsep) if p]
    dirs.append(models_cache_dir())
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    return dirs


def _bundles() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in model_dirs():
        if not d.is_dir():
            continue
        for sub in sorted(d.iterdir()):
            if (sub / CONFIG_NAME).is_file() and sub.name not in found:
                found[sub.name] = sub
    return found


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """Return the bundle folder for a registered name or a path to a bundle folder.

    Raises:
        UnknownModelError: with the list of known names.
    """
    path = Path(name_or_path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return path
    if path.is_file() and path.name == CONFIG_NAME:
        return path.parent
    bundles = _bundles()
    if str(name_or_path) in bundles:
        return bundles[str(name_or_path)]
    known = ", ".join(sorted(bundles)) or "none"
    raise UnknownModelError(
        f"unknown model {str(name_or_path)!r}: not a registered name (known: {known}) "
        "and not a bundle folder with config.json"
    )


def load_model(name_or_path: str | os.PathLike, device: str = "cpu") -> ModelBundle:
    """Load a registered or user model onto ``device`` ("auto", "cpu", "cuda", "mps")."""
    return load_bundle(resolve_model(name_or_path), resolve_device(device))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an unavailable device is an error."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available (use auto/cpu)")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' requested but Apple MPS is not available (use auto/cpu)")
    return torch.device(name)


def list_models() -> list[dict[str, Any]]:
    """One summary row per registered bundle: name, modality, role, params, input_size,
    val_dice, path (and ``reason`` for broken ones).

    A bundle whose config cannot be read, is not a JSON object or has fields of the wrong
    type is listed with role ``"broken"`` and the reason, never raised: one bad folder in
    the search path must not hide the good ones (this used to crash ``lesion-diffkd models``).
    Weights are not opened here (listing stays cheap); ``load_model`` checks them.
    """
    rows = []
    for name, folder in sorted(_bundles().items()):
        try:
            rows.append(_summary_row(name, folder, read_config(folder)))
        except (BundleError, AttributeError, TypeError, ValueError) as exc:
            rows.append({"name": name, "modality": "?", "role": "broken", "params": 0,
                         "input_size": None, "val_dice": None, "path": str(folder),
                         "reason": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
    return rows


def _summary_row(name: str, folder: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """The listing row of a readable config; TypeError/ValueError for wrongly typed fields."""
    inp, metrics = cfg.get("input") or {}, cfg.get("metrics") or {}
    if not isinstance(inp, dict) or not isinstance(metrics, dict):
        raise TypeError("'input' and 'metrics' must be JSON objects")
    dice = metrics.get("dice")
    if dice is not None and not isinstance(dice, (int, float)):
        raise TypeError(f"metrics.dice must be a number, got {dice!r}")
    return {
        "name": name,
        "modality": str(cfg.get("modality", "?")),
        "role": str(cfg.get("role", "?")),
        "params": int(cfg.get("num_parameters", 0)),
        "input_size": inp.get("size"),
        "val_dice": None if dice is None else float(dice),
        "path": str(folder),
    }


def weights_sha256(folder: str | os.PathLike) -> str:
    """The sha256 (hex) of a bundle folder's weights file."""
    import hashlib

    from napari_lesion_diffkd.core.bundle import WEIGHTS_NAME

    digest = hashlib.sha256()
    with (Path(folder) / WEIGHTS_NAME).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_reference(name_or_path: str | os.PathLike) -> dict[str, str]:
    """How a bundle refers to another one it needs (e.g. a teacher's condition network):
    ``{"name": ..., "sha256": ...}``, the registered name whose weights are these (else the
    bundle's own config name) and the weights' sha256; never a local folder path."""
    folder = resolve_model(name_or_path)
    sha = weights_sha256(folder)
    for name, registered in _bundles().items():
        try:
            if weights_sha256(registered) == sha:
                return {"name": name, "sha256": sha}
        except OSError:
            continue
    try:
        name = str(read_config(folder).get("name") or folder.name)
    except BundleError:
        name = folder.name
    return {"name": name, "sha256": sha}


def resolve_reference(ref: str | os.PathLike | dict[str, Any]) -> Path:
    """The bundle folder of a reference: a registered name or folder, or ``{"name",
    "sha256"}`` (:func:`bundle_reference`), whose weights must then match the sha256.

    Raises:
        UnknownModelError: no such bundle.
        BundleError: the weights differ from the recorded sha256.
    """
    if not isinstance(ref, dict):
        return resolve_model(ref)
    name, sha = ref.get("name"), ref.get("sha256")
    if not name:
        raise UnknownModelError(f"bundle reference {ref!r} names no bundle")
    folder = resolve_model(str(name))
    if sha and weights_sha256(folder) != sha:
        raise BundleError(f"{name} ({folder}): weights sha256 {weights_sha256(folder)[:12]}... "
                          f"differ from the recorded {str(sha)[:12]}...: another version "
                          "of this bundle is registered")
    return folder
