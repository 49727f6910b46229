"""Shared fixtures: the real datasets in ../shared/data, a CPU device, small real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_lesion_diffkd.core.data.locate import find_data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real-data folder. Its absence is a failure, not a skip: CI always has it."""
    root = find_data_root()
    if root is None:
        pytest.fail(
            "real data not found: set LESION_DIFFKD_DATA or place ../shared/data beside the "
            "checkout"
        )
    return root


def _first_pairs(folder: Path, n: int) -> list[tuple[Path, Path]]:
    images = sorted((folder / "images").iterdir())[:n]
    return [(p, folder / "masks" / (p.stem + ".png")) for p in images]


@pytest.fixture(scope="session")
def ph2_pairs(data_root: Path) -> list[tuple[Path, Path]]:
    """First 8 (image, mask) path pairs of PH2 dermoscopy (RGB JPEG, {0,255} PNG)."""
    return _first_pairs(data_root / "ph2_dermoscopy", 8)


@pytest.fixture(scope="session")
def ct_pairs(data_root: Path) -> list[tuple[Path, Path]]:
    """First 8 (image, mask) path pairs of the COVID-19 CT slices (256x256 gray PNG)."""
    return _first_pairs(data_root / "covid19_ct_infection", 8)


@pytest.fixture(scope="session")
def busbra_pairs(data_root: Path) -> list[tuple[Path, Path]]:
    """First 8 (image, mask) path pairs of BUS-BRA breast ultrasound (gray PNG)."""
    return _first_pairs(data_root / "busbra_breast_ultrasound", 8)


@pytest.fixture(scope="session")
def real_masks(data_root: Path) -> list[np.ndarray]:
    """A few real binary masks (bool, (Y, X)) from three datasets."""
    from skimage.io import imread

    out = []
    for name in ("ph2_dermoscopy", "busbra_breast_ultrasound", "covid19_ct_infection"):
        for _, mask_path in _first_pairs(data_root / name, 3):
            out.append(imread(mask_path) > 127)
    return out
