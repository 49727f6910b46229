"""Which images the simulation runs on: dataset folders, their split, a subset; checked.

A dataset folder holds ``images/<id>.<ext>`` and ``masks/<id>.png`` (same id, same size;
mask > 127 = lesion), optionally ``metadata.csv`` with ``id, group`` (``core.data.datasets``).
Any such folder works, not only the shipped datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SPLITS = ("validation", "train", "all")
#: Folder-name hints for the shipped datasets' modalities (a folder may also say so in its
#: name, e.g. ``my_ct_slices``); anything else needs ``modality`` or is dermoscopy if RGB.
_NAME_HINTS = (("ph2", "dermoscopy"), ("derm", "dermoscopy"), ("isic", "dermoscopy"),
               ("busbra", "ultrasound"), ("ddti", "ultrasound"), ("ultrasound", "ultrasound"),
               ("covid", "ct"), ("_ct", "ct"), ("ct_", "ct"))
MODALITIES = ("dermoscopy", "ultrasound", "ct")


def evenly_spaced(records: list, limit: int | None) -> list:
    """``limit`` records at evenly spaced positions (all when ``limit`` is None or larger)."""
    if not limit or limit >= len(records):
        return list(records)
    return [records[int(i * len(records) / limit)] for i in range(limit)]


def collect_records(folders: Sequence[str | Path], split: str = "validation",
                    images: int | None = None) -> list:
    """The image/mask pairs to annotate, per folder, in folder order.

    Args:
        folders: dataset folders (each with ``images/`` and ``masks/``).
        split: ``validation``: the project's group split (``datasets.group_split``, 20%,
            seed 0: the held-out images of the registered models); ``train``: the rest
            (what the registered models were trained on; for choosing settings without
            looking at validation images); ``all``: every pair.
        images: at most this many per folder, evenly spaced over the sorted ids.

    Returns:
        ``core.data.datasets.PairRecord`` list.

    Raises:
        FileNotFoundError: a folder is missing or has no ``images/``/``masks/``.
        ValueError: bad split or count, a folder with no pairs, an image and its mask of
            different sizes (names the file), two folders of the same name.
    """
    from napari_lesion_diffkd.core.data.datasets import group_split, scan_pairs

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose {', '.join(SPLITS)}")
    if images is not None and (not isinstance(images, int) or images < 1):
        raise ValueError(f"--images must be a positive integer, got {images!r}")
    if not folders:
        raise ValueError("give at least one data folder")
    out: list = []
    names: set[str] = set()
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder")
        records = scan_pairs(path)
        if not records:
            raise ValueError(f"{path}: no image/mask pairs (images/<id>.*, masks/<id>.png)")
        if records[0].dataset in names:
            raise ValueError(f"{path}: two data folders named {records[0].dataset!r}")
        names.add(records[0].dataset)
        if split != "all":
            records = group_split(records)[split == "validation"]
        chosen = evenly_spaced(records, images)
        check_sizes(chosen)
        out += chosen
    return out


def check_sizes(records: Sequence) -> None:
    """Every image and its mask declare the same size (headers only, no decode).

    Raises:
        ValueError: names the first pair that differs or a file that is not an image.
    """
    from PIL import Image, UnidentifiedImageError

    for r in records:
        sizes = []
        for path in (r.image_path, r.mask_path):
            try:
                with Image.open(path) as im:
                    sizes.append((im.height, im.width))
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"{path}: not a readable image ({exc})") from exc
        if sizes[0] != sizes[1]:
            raise ValueError(f"{r.mask_path}: mask size {sizes[1]} differs from its image "
                             f"{r.image_path.name} {sizes[0]} (rows, cols)")


def folder_modality(folder: str | Path, rgb: bool, modality: str | None = None) -> str:
    """The modality of a dataset folder: ``modality`` if given, else a name hint, else
    ``dermoscopy`` for RGB images (the only colour modality here).

    Raises:
        ValueError: an unknown ``modality``, or a gray folder whose name gives no hint.
    """
    if modality is not None:
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; choose {', '.join(MODALITIES)}")
        return modality
    name = Path(folder).name.lower()
    for hint, found in _NAME_HINTS:
        if hint in name:
            return found
    if rgb:
        return "dermoscopy"
    raise ValueError(f"{folder}: cannot tell the modality of gray images from the folder "
                     f"name; pass --modality ({', '.join(MODALITIES)}) or --model")
