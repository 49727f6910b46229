"""Shared fixtures: the real datasets in ../shared/data, a CPU device, small real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_lesion_diffkd.core.data.locate import find_data_root

# No test leaves a job process running: every one a test starts is stopped in the
# _stop_job_processes fixture's teardown, and the session fails if any escaped
# (tests/_job_leaks.py; the hooks and the autouse fixture are registered from here).
from tests._job_leaks import (  # noqa: F401
    _stop_job_processes,
    pytest_configure,
    pytest_sessionfinish,
)


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


@pytest.fixture(scope="session")
def ph2_subset(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A dataset folder with the first 12 PH2 pairs (symlinks) and their metadata rows."""
    src = data_root / "ph2_dermoscopy"
    dst = tmp_path_factory.mktemp("ph2_subset")
    (dst / "images").mkdir()
    (dst / "masks").mkdir()
    ids = []
    for image, mask in _first_pairs(src, 12):
        (dst / "images" / image.name).symlink_to(image)
        (dst / "masks" / mask.name).symlink_to(mask)
        ids.append(image.stem)
    (dst / "metadata.csv").write_text("id,group\n" + "".join(f"{i},{i}\n" for i in ids))
    return dst


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, ph2_subset: Path) -> Path:
    """A tiny model trained through the CLI on 12 real PH2 pairs (a few seconds)."""
    from napari_lesion_diffkd.cli import main

    out = tmp_path_factory.mktemp("models") / "tiny-dermoscopy"
    config = Path(__file__).parent / "fixtures" / "tiny_train.yaml"
    code = main(["train", "--config", str(config), "--data", str(ph2_subset),
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny-tensor tests (restored after).

    Tiny convolutions gain nothing from a second thread and lose a lot to OpenMP contention
    when the 2-core machine is busy. Use with ``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
