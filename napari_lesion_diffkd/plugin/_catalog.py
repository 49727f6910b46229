"""The model picker's catalogue: registered bundles, user bundle folders and project models.

No Qt here: plain rows that the picker shows and the workers load. A row's ``target`` is what
:func:`core.registry.load_model` takes (a registered name or a bundle folder path), so the
worker never needs to know where a model came from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The modalities the app has presets for (names as in the bundles' ``modality`` field).
MODALITIES = ("dermoscopy", "ultrasound", "ct")

#: Model roles in the order a modality preset prefers them: a student answers in well under
#: a second on a CPU (docs/benchmarks.md), a teacher in seconds, a baseline gives no samples.
ROLE_PREFERENCE = ("student", "teacher", "baseline")

DEVICES = ("auto", "cuda", "mps", "cpu")

#: A validation Dice from fewer images than this is flagged as unreliable.
FEW_VAL_IMAGES = 10


def normalise_modality(text: Any) -> str | None:
    """``"CT"`` -> ``"ct"``, ``"US"`` -> ``"ultrasound"``, ...; None when unknown or empty
    (:func:`core.data.modality.normalise_modality`)."""
    from napari_lesion_diffkd.core.data.modality import normalise_modality as normalise

    return normalise(text)


@dataclass(frozen=True)
class ModelEntry:
    """One row of the model picker.

    Attributes:
        label: the text shown (registered name, ``name@vN`` for a project model, or the
            folder name for a user bundle).
        target: what :func:`core.registry.load_model` gets (name or folder path).
        modality: normalised modality (``dermoscopy`` | ``ultrasound`` | ``ct``) or None.
        role: ``teacher`` | ``student`` | ``baseline`` | ``?``.
        params: number of network parameters (from the bundle config).
        input_size: square model input S in pixels, or None.
        val_dice: validation Dice stored in the bundle, or None.
        source: ``registered`` | ``folder`` (added with "Add checkpoint...") | ``project``.
        sampler: the bundle's default sampler name (``ddim``, ``one-step``, ...) or None for
            a deterministic network.
        n_val: how many validation images ``val_dice`` comes from (None: not recorded).
    """

    label: str
    target: str
    modality: str | None
    role: str
    params: int
    input_size: int | None
    val_dice: float | None
    source: str
    sampler: str | None
    n_val: int | None = None

    @property
    def deterministic(self) -> bool:
        """A plain segmentation network: one mask, no K, no sampler."""
        return self.sampler is None

    @property
    def few_val_images(self) -> bool:
        """The validation Dice comes from fewer than :data:`FEW_VAL_IMAGES` images."""
        return self.val_dice is not None and self.n_val is not None and \
            self.n_val < FEW_VAL_IMAGES

    def describe(self) -> str:
        """One line for the picker's info label (validation set size, and a warning when
        it is below :data:`FEW_VAL_IMAGES` images)."""
        dice = "-" if self.val_dice is None else f"{self.val_dice:.3f}"
        if self.val_dice is not None and self.n_val is not None:
            dice += f" on {self.n_val} image{'s' if self.n_val != 1 else ''}"
        kind = "deterministic" if self.deterministic else f"sampler {self.sampler}"
        text = (f"{self.modality or '?'} {self.role}, {self.params / 1e6:.2f}M params, "
                f"input {self.input_size} px, {kind}, val Dice {dice} ({self.source})")
        if self.few_val_images:
            text += (f"\n\u26a0 validated on only {self.n_val} image"
                     f"{'s' if self.n_val != 1 else ''}: that Dice is not comparable with a "
                     f"score on {FEW_VAL_IMAGES} or more")
        return text


def is_segmenter(cfg: dict[str, Any]) -> bool:
    """True for the bundles ``segment_image`` runs (a ``network`` in the config); False for
    e.g. a SAM bundle (``kind: sam``, role ``promptable``), which shares the models folder."""
    return "network" in cfg and cfg.get("kind", "segmenter") != "sam"


def entry_from_config(label: str, target: str, cfg: dict[str, Any], source: str) -> ModelEntry:
    """A row from a bundle's ``config.json`` dict."""
    metrics = cfg.get("metrics", {}) or {}
    dice = metrics.get("dice", metrics.get("model_resolution_dice"))
    deterministic = cfg.get("objective") == "segmentation"
    n_val = metrics.get("n_val")
    if n_val is None:  # a trainer's bundle: the size of its own validation split
        n_val = (((cfg.get("provenance") or {}).get("split") or {}).get("n_val"))
    return ModelEntry(
        label=label, target=target, modality=normalise_modality(cfg.get("modality")),
        role=str(cfg.get("role", "?")), params=int(cfg.get("num_parameters", 0)),
        input_size=(cfg.get("input") or {}).get("size"),
        val_dice=None if dice is None else float(dice), source=source,
        sampler=None if deterministic else (cfg.get("sampler") or {}).get("name", "ddim"),
        n_val=int(n_val) if isinstance(n_val, (int, float)) else None,
    )


def entry_from_folder(folder: str | os.PathLike, source: str = "folder",
                      label: str | None = None) -> ModelEntry:
    """A row for a bundle folder; raises :class:`core.bundle.BundleError` if it is none."""
    from napari_lesion_diffkd.core.bundle import WEIGHTS_NAME, BundleError, read_config

    path = Path(folder).expanduser().resolve()
    cfg = read_config(path)
    if not is_segmenter(cfg):
        raise BundleError(f"{path}: not a segmentation model (a {cfg.get('kind', '?')} "
                          "bundle); the correction panel takes prompt models")
    if not (path / WEIGHTS_NAME).is_file():
        raise BundleError(f"{path}: weights file {WEIGHTS_NAME} is missing")
    return entry_from_config(label or path.name, str(path), cfg, source)


def build_catalog(user_folders: Iterable[str | os.PathLike] = (),
                  project_models: Iterable[Any] = ()) -> list[ModelEntry]:
    """Every usable segmentation model: project versions first (newest first), then user
    folders, then the registered bundles (broken ones and prompt models left out).

    Args:
        user_folders: bundle folders added by the user.
        project_models: :class:`core.store.ModelRecord` rows of the open project.
    """
    from napari_lesion_diffkd.core.bundle import BundleError, read_config
    from napari_lesion_diffkd.core.registry import list_models

    rows: list[ModelEntry] = []
    for record in sorted(project_models, key=lambda m: -m.id):
        try:
            cfg = read_config(record.path)
        except BundleError:
            continue  # a job's run folder that was deleted: nothing to load
        if not is_segmenter(cfg):
            continue
        rows.append(entry_from_config(record.tag, str(record.path), cfg, "project"))
    for folder in user_folders:
        try:
            rows.append(entry_from_folder(folder))
        except BundleError:
            continue
    for row in list_models():
        if row["role"] == "broken":
            continue
        try:
            cfg = read_config(row["path"])
        except BundleError:
            continue
        if not is_segmenter(cfg):
            continue
        rows.append(entry_from_config(row["name"], row["name"], cfg, "registered"))
    seen: set[str] = set()
    unique = []
    for row in rows:  # one row per label: a user folder named like a registered bundle wins
        if row.label not in seen:
            seen.add(row.label)
            unique.append(row)
    return unique


def for_modality(entries: Sequence[ModelEntry], modality: str | None) -> list[ModelEntry]:
    """The rows of one modality (all rows for None); rows of unknown modality always show."""
    if modality is None:
        return list(entries)
    return [e for e in entries if e.modality in (modality, None)]


def default_entry(entries: Sequence[ModelEntry], modality: str | None,
                  roles: Sequence[str] = ROLE_PREFERENCE) -> ModelEntry | None:
    """The preset's model: the first of ``roles`` among this modality's registered models
    (a project's fine-tuned version is chosen by the user, not by a preset)."""
    pool = [e for e in for_modality(entries, modality) if e.source == "registered"] or \
        list(for_modality(entries, modality))
    for role in roles:
        for entry in pool:
            if entry.role == role:
                return entry
    return pool[0] if pool else None


def available_devices() -> dict[str, bool]:
    """``{"auto": True, "cuda": ..., "mps": ..., "cpu": True}`` via ``resolve_device``."""
    from napari_lesion_diffkd.core.registry import resolve_device

    out = {}
    for name in DEVICES:
        try:
            resolve_device(name)
            out[name] = True
        except ValueError:
            out[name] = False
    return out
