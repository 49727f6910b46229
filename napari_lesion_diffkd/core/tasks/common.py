"""Helpers shared by the job types: model references and CPU threads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_lesion_diffkd.core.store.errors import InvalidInputError

if TYPE_CHECKING:
    from napari_lesion_diffkd.core.store.project import ProjectStore


@dataclass(frozen=True)
class ModelRef:
    """A model a job uses: bundle folder, name, and a version string (``v3`` for a
    project model, ``sha256:<12 hex>`` of the weights for a registered / external one)."""

    path: Path
    name: str
    version: str


def resolve_job_model(store: ProjectStore, ref: str) -> ModelRef:
    """Find ``ref``: a project model (``name@vN`` or ``name`` = newest version) first, then
    a registered model name or a bundle folder (:func:`core.registry.resolve_model`).

    Raises:
        InvalidInputError: unknown everywhere.
    """
    from napari_lesion_diffkd.core.bundle import WEIGHTS_NAME, read_config
    from napari_lesion_diffkd.core.registry import UnknownModelError, resolve_model
    from napari_lesion_diffkd.core.store.files import sha256_file

    found = store.find_model(ref)
    if found is not None:
        return ModelRef(found.path, found.name, f"v{found.version}")
    try:
        folder = resolve_model(ref)
    except UnknownModelError as exc:
        raise InvalidInputError(f"model {ref!r}: not a project model and {exc}") from exc
    name = str(read_config(folder).get("name", folder.name))
    return ModelRef(folder, name, "sha256:" + sha256_file(folder / WEIGHTS_NAME)[:12])


def apply_threads(config: dict[str, Any]) -> None:
    """``threads`` in a job config sets torch's intra-op CPU threads."""
    if config.get("threads"):
        import torch

        torch.set_num_threads(int(config["threads"]))
