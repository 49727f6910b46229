"""The modality detector (core.data.modality) on real images of each dataset, HU arrays,
DICOM tags and the project's setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

from napari_lesion_diffkd.core.data.modality import detect_modality

DATASETS = {
    "ph2_dermoscopy": "dermoscopy",
    "busbra_breast_ultrasound": "ultrasound",
    "ddti_thyroid_ultrasound": "ultrasound",
    "covid19_ct_infection": "ct",
}


def _images(data_root: Path, name: str, n: int) -> list[Path]:
    paths = sorted((data_root / name / "images").iterdir())
    return paths[:: max(1, len(paths) // n)][:n]


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_real_images_of_each_dataset(data_root: Path, dataset: str) -> None:
    """Ten images spread over each dataset: content alone names the modality; an error
    between ultrasound and CT never happens (an unclear image may be 'unknown')."""
    truth = DATASETS[dataset]
    guesses = [detect_modality(imread(p)) for p in _images(data_root, dataset, 10)]
    right = [g for g in guesses if g.modality == truth]
    assert len(right) >= 9, [g.describe() for g in guesses]
    assert all(g.modality in (truth, None) for g in guesses)
    assert np.mean([g.confidence for g in right]) >= 0.8
    assert all(g.source == "content" for g in guesses)


def test_the_busbra_image_of_the_issue_is_ultrasound(busbra_pairs) -> None:
    """Issue 14: a BUS-BRA PNG ran with ct-student. Gray PNGs of BUS-BRA are ultrasound."""
    for image, _ in busbra_pairs:
        guess = detect_modality(imread(image))
        assert guess.modality == "ultrasound", guess.describe()


def test_a_gray_png_is_not_ct_by_default() -> None:
    """Smooth gray content without a body-in-air picture is unknown, not CT."""
    rng = np.random.default_rng(0)
    flat = (rng.normal(120, 2, (256, 256))).clip(0, 255).astype(np.uint8)
    assert detect_modality(flat).modality is None
    assert detect_modality(np.full((64, 64), 128, np.uint8)).modality is None


def test_hu_dicom_tag_project_setting_and_colour(ct_pairs, busbra_pairs, ph2_pairs) -> None:
    ct = imread(ct_pairs[0][0]).astype(np.float32)
    hu = ct / 255 * 1500 - 1350  # a lung-windowed slice back in HU
    assert detect_modality(hu).source == "hu" and detect_modality(hu).modality == "ct"
    assert detect_modality(hu[None].repeat(3, 0)).modality == "ct"  # a volume
    us = imread(busbra_pairs[0][0])
    tagged = detect_modality(us, {"modality": "CT"})  # the DICOM tag wins
    assert (tagged.modality, tagged.source) == ("ct", "metadata")
    project = detect_modality(us, {"modality": "ultrasound", "project_image": {"id": 1}})
    assert project.source == "project"
    unclear = np.full((64, 64), 128, np.uint8)
    assert detect_modality(unclear, project_modality="ct").modality == "ct"
    # A confident content guess is not overruled by a project setting.
    assert detect_modality(us, project_modality="ct").modality == "ultrasound"
    rgb = imread(ph2_pairs[0][0])
    assert detect_modality(rgb).modality == "dermoscopy"
    gray_as_rgb = np.repeat(us[..., None], 3, axis=-1)  # a gray image saved as colour
    assert detect_modality(gray_as_rgb, rgb=True).modality == "ultrasound"
    assert detect_modality(np.zeros((0, 0))).modality is None


class _Lazy:
    """A lazily-loaded volume (dask / zarr-like): reading it whole is an error."""

    def __init__(self, data: np.ndarray) -> None:
        self._data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        return self._data[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole volume was read")


def test_a_lazy_volume_is_only_sampled(ct_pairs) -> None:
    ct = imread(ct_pairs[0][0])
    volume = np.repeat(ct[None], 40, axis=0)
    assert detect_modality(_Lazy(volume)).modality == "ct"
    hu = volume.astype(np.int16) * 6 - 1024
    assert detect_modality(_Lazy(hu)).source == "hu"
