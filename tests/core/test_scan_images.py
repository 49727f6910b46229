"""Images without labels: dataset folders and flat folders, groups as for pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_lesion_diffkd.core.data.datasets import (
    load_image_tensors,
    read_image_file,
    scan_images,
    scan_pairs,
)


def test_dataset_folder_images_share_the_pairs_groups(data_root: Path) -> None:
    folder = data_root / "busbra_breast_ultrasound"
    images = scan_images(folder)
    pairs = {r.id: r.group for r in scan_pairs(folder)}
    assert len(images) == len(pairs)
    assert all(pairs[r.id] == r.group for r in images)
    assert len({r.group for r in images}) < len(images)  # real patients with several images


def test_flat_folder_and_tensors(tmp_path: Path, ph2_pairs) -> None:
    for image, _ in ph2_pairs[:2]:
        (tmp_path / image.name).symlink_to(image)
    (tmp_path / "notes.txt").write_text("not an image")
    records = scan_images(tmp_path)
    assert [r.image_path.name for r in records] == sorted(p.name for p, _ in ph2_pairs[:2])
    x = load_image_tensors(records, 32, 3)
    assert x.shape == (2, 3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_bad_folders_and_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        scan_images(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no image files"):
        scan_images(tmp_path)
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.png: not a readable image"):
        read_image_file(tmp_path / "x.png")
