"""Fixtures shared by the SAM tests: a seeded random lesion-sam-tiny and real images."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_lesion_diffkd.core.data.datasets import PairRecord, read_pair, scan_pairs


@pytest.fixture(scope="session")
def _tiny_sam_master():
    from napari_lesion_diffkd.core.sam.architectures import build_tiny_sam

    torch.manual_seed(0)
    return build_tiny_sam()


@pytest.fixture
def tiny_sam(_tiny_sam_master):
    """A fresh copy of a seeded random lesion-sam-tiny (eval mode), safe to modify."""
    return copy.deepcopy(_tiny_sam_master)


@pytest.fixture(scope="session")
def real_records(data_root: Path) -> dict[str, PairRecord]:
    """The first record of PH2 (RGB, landscape), BUS-BRA (gray, portrait) and CT (square)."""
    return {
        "ph2": scan_pairs(data_root / "ph2_dermoscopy")[0],
        "busbra": scan_pairs(data_root / "busbra_breast_ultrasound")[0],
        "ct": scan_pairs(data_root / "covid19_ct_infection")[0],
    }


@pytest.fixture(scope="session")
def real_images(real_records) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(image, mask) arrays of ``real_records``."""
    return {k: read_pair(r) for k, r in real_records.items()}
