"""Image/mask pair datasets on disk, group-aware splits, and in-memory tensors for training.

Layout expected (the one of ../shared/data): ``<folder>/images/<id>.<ext>``,
``<folder>/masks/<id>.png`` and optionally ``<folder>/metadata.csv`` with columns ``id`` and
``group`` (patient / case / scan). Images that share a group are never split between training
and validation.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_lesion_diffkd.core.data.limits import check_pixel_count
from napari_lesion_diffkd.core.data.preprocess import prepare_image, prepare_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class PairRecord:
    """One image/mask pair. ``group`` defaults to ``dataset/id`` when no metadata says more."""

    id: str
    group: str
    dataset: str
    image_path: Path
    mask_path: Path


def scan_pairs(folder: str | Path) -> list[PairRecord]:
    """List the image/mask pairs of one dataset folder, sorted by id.

    Raises:
        FileNotFoundError: the folder has no ``images/`` or ``masks/`` subfolder.
    """
    folder = Path(folder)
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise FileNotFoundError(f"{folder}: expected 'images/' and 'masks/' subfolders")
    groups = _read_groups(folder)
    records = []
    for image_path in sorted(images_dir.iterdir()):
        if image_path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask_path = masks_dir / f"{image_path.stem}.png"
        if not mask_path.is_file():
            continue
        stem = image_path.stem
        records.append(
            PairRecord(stem, f"{folder.name}/{groups.get(stem, stem)}", folder.name,
                       image_path, mask_path)
        )
    return records


@dataclass(frozen=True)
class ImageRecord:
    """One image without a label (e.g. for distillation on unlabelled images)."""

    id: str
    group: str
    dataset: str
    image_path: Path


def _read_groups(folder: Path) -> dict[str, str]:
    """``id -> group`` from ``folder/metadata.csv`` (empty when there is none)."""
    groups: dict[str, str] = {}
    meta = folder / "metadata.csv"
    if meta.is_file():
        with meta.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if "id" in row:
                    groups[row["id"]] = row.get("group") or row["id"]
    return groups


def scan_images(folder: str | Path) -> list[ImageRecord]:
    """List the images of a folder, sorted by id: ``folder/images/*`` if that subfolder
    exists (a dataset folder, masks ignored), else the image files in ``folder`` itself.

    Groups come from ``metadata.csv`` as in :func:`scan_pairs` (same ``dataset/group``
    naming, so a dataset folder's images can be matched against a split's groups).

    Raises:
        FileNotFoundError: the folder does not exist or holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    groups = _read_groups(folder)
    records = [
        ImageRecord(p.stem, f"{folder.name}/{groups.get(p.stem, p.stem)}", folder.name, p)
        for p in sorted(images_dir.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not records:
        raise FileNotFoundError(f"{images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return records


def read_image_file(path: str | Path) -> np.ndarray:
    """An image as stored: (Y, X) gray or (Y, X, 3) RGB.

    Raises:
        ValueError: the file is not a readable image (names the file).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_checked(path) as im:
            return np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "I") else im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc


def _open_checked(path: str | Path):
    """``PIL.Image.open`` plus the pixel limit (``limits.py``) on the header's size, before
    any decode: a training folder can hold a pixel bomb as well as ``predict``'s input.

    Raises:
        PixelLimitError: (a ValueError) the declared size is over the limit.
    """
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    try:
        check_pixel_count(path, (im.height, im.width))
    except BaseException:
        im.close()
        raise
    return im


def load_image_tensors(records: Sequence[ImageRecord], size: int, channels: int) -> torch.Tensor:
    """Images only, at the model's input size: (N, channels, S, S) float32 in [-1, 1]."""
    return torch.stack([prepare_image(read_image_file(r.image_path), size, channels)
                        for r in records])


def group_split(
    records: Sequence[PairRecord], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[PairRecord], list[PairRecord]]:
    """Split pairs into (train, validation) by whole groups, reproducibly.

    Groups are shuffled with ``numpy.random.default_rng(seed)`` and moved to validation until
    it holds at least ``val_fraction`` of the images. Done per dataset, so a multi-dataset
    split keeps each dataset's share.
    """
    train: list[PairRecord] = []
    val: list[PairRecord] = []
    by_dataset: dict[str, list[PairRecord]] = {}
    for r in records:
        by_dataset.setdefault(r.dataset, []).append(r)
    for name in sorted(by_dataset):
        recs = by_dataset[name]
        groups = sorted({r.group for r in recs})
        order = np.random.default_rng(seed).permutation(len(groups))
        target = val_fraction * len(recs)
        chosen: set[str] = set()
        count = 0
        for idx in order:
            if count >= target:
                break
            g = groups[idx]
            chosen.add(g)
            count += sum(1 for r in recs if r.group == g)
        train += [r for r in recs if r.group not in chosen]
        val += [r for r in recs if r.group in chosen]
    return train, val


def read_pair(record: PairRecord) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair: image (Y, X) or (Y, X, 3) as stored, mask (Y, X) bool."""
    with _open_checked(record.image_path) as im:
        image = np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "I") else im)
    with _open_checked(record.mask_path) as im:
        mask = np.asarray(im.convert("L")) > 127
    if image.shape[:2] != mask.shape:
        raise ValueError(
            f"{record.id}: image {image.shape[:2]} and mask {mask.shape} differ in size"
        )
    return image, mask


def load_tensors(
    records: Sequence[PairRecord], size: int, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load pairs into memory at the model's input size.

    Returns:
        images (N, channels, S, S) float32 in [-1, 1]; masks (N, 1, S, S) float32 in {-1, 1}.
    """
    if not records:  # e.g. a run without a validation split
        return torch.zeros(0, channels, size, size), torch.zeros(0, 1, size, size)
    images, masks = [], []
    for r in records:
        image, mask = read_pair(r)
        images.append(prepare_image(image, size, channels))
        masks.append(prepare_mask(mask, size))
    return torch.stack(images), torch.stack(masks)
