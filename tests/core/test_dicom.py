"""DICOM single files and series folders built from real CT slices; CT window presets.

The COVID-19 CT slices are 8-bit PNGs (not HU). We store their pixel values as the DICOM
*stored* values and give the files a rescale (slope 2, intercept -1024), so the expected
Hounsfield units are exactly ``2 * png - 1024``.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

from napari_lesion_diffkd.core.data.dicom import read_dicom_file, read_dicom_series
from napari_lesion_diffkd.core.data.readers import ImageReadError, is_supported, read_image
from napari_lesion_diffkd.core.data.windows import (
    CT_WINDOWS,
    apply_window,
    window_limits,
)

SLOPE, INTERCEPT = 2.0, -1024.0
PIXEL_SPACING = (0.7, 0.8)  # DICOM order: row spacing (Y), column spacing (X)
SLICE_GAP = 2.5
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def consecutive_ct_slices(data_root: Path, n: int = 8, group: str = "vol01") -> list[np.ndarray]:
    """``n`` consecutive real CT slices (uint8 (256, 256)) of one scan, in scan order."""
    folder = data_root / "covid19_ct_infection"
    with open(folder / "metadata.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["group"] == group]
    rows.sort(key=lambda r: int(r["source_index"]))
    assert len(rows) >= n, f"{group} has only {len(rows)} slices"
    return [imread(folder / "images" / f"{r['id']}.png") for r in rows[:n]]


def make_ct_dataset(
    stored: np.ndarray,
    *,
    position: tuple[float, float, float] | None,
    instance_number: int,
    series_uid: str,
    study_uid: str,
    orientation: tuple[float, ...] = AXIAL,
    modality: str = "CT",
    rescale: tuple[float, float] | None = (SLOPE, INTERCEPT),
):
    """A CT Image Storage dataset (explicit VR little endian, signed 16-bit) from scratch."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("in-memory", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "Phantom^Lesion", "TEST0001"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.SeriesDescription = "real CT slices, synthetic header"
    ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    ds.PixelSpacing = [f"{v:g}" for v in PIXEL_SPACING]
    ds.SliceThickness = f"{SLICE_GAP:g}"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
        ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
    return ds


def write_ct_series(
    folder: Path,
    slices: list[np.ndarray],
    *,
    seed: int = 0,
    orientation: tuple[float, ...] = AXIAL,
    with_position: bool = True,
    series_uid: str | None = None,
) -> list[Path]:
    """Write ``slices`` (scan order) as a DICOM series, in shuffled order, random names.

    Slice ``i`` sits at ``origin + i * SLICE_GAP`` along the slice normal; its
    InstanceNumber runs *backwards* (n - i), so only a position-based sort gets the order
    right. Half the files have a ``.dcm`` suffix, half none. Returns paths in scan order.
    """
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.array([-90.0, -120.0, -200.0])
    n = len(slices)
    paths = [
        folder / (f"{rng.getrandbits(48):012x}" + (".dcm" if i % 2 else "")) for i in range(n)
    ]
    order = list(range(n))
    rng.shuffle(order)
    for i in order:
        position = tuple(origin + i * SLICE_GAP * normal) if with_position else None
        ds = make_ct_dataset(
            slices[i].astype(np.int16),
            position=position,
            instance_number=n - i,
            series_uid=series_uid,
            study_uid=study_uid,
            orientation=orientation,
        )
        ds.save_as(paths[i], enforce_file_format=True)
    return paths


def expected_hu(slices: list[np.ndarray]) -> np.ndarray:
    return np.stack(slices).astype(np.float32) * SLOPE + INTERCEPT


@pytest.fixture(scope="module")
def ct8(data_root) -> list[np.ndarray]:
    return consecutive_ct_slices(data_root, 8)


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory, ct8) -> Path:
    folder = tmp_path_factory.mktemp("ct_series")
    write_ct_series(folder, ct8)
    return folder


# ----------------------------------------------------------------------------- series


def test_series_sorted_by_position_in_hu(series_dir, ct8):
    img = read_image(series_dir)
    assert img.data.shape == (8, 256, 256) and img.data.dtype == np.float32
    np.testing.assert_array_equal(img.data, expected_hu(ct8))
    assert img.spacing == pytest.approx((SLICE_GAP, *PIXEL_SPACING))
    assert img.modality == "CT" and not img.rgb and img.ndim_spatial == 3
    assert img.source == str(series_dir)
    meta = img.metadata
    assert meta["slice_order"] == "ImagePositionPatient" and meta["slice_spacing_uniform"]
    assert meta["window_center"] == 40 and meta["window_width"] == 400
    assert meta["n_files"] == 8 and meta["ignored_files"] == 0 and "other_series" not in meta
    # affine_lps maps (z, y, x, 1) to patient mm: slice 3, row 10, column 20.
    world = meta["affine_lps"] @ np.array([3, 10, 20, 1.0])
    assert world[:3] == pytest.approx([-90 + 20 * 0.8, -120 + 10 * 0.7, -200 + 3 * SLICE_GAP])
    assert is_supported(series_dir)


def test_coronal_series_sorted_along_normal(tmp_path, ct8):
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # normal = row x col = (0, 1, 0)
    write_ct_series(tmp_path, ct8[:4], orientation=coronal, seed=3)
    img = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(img.data, expected_hu(ct8[:4]))
    assert img.spacing == pytest.approx((SLICE_GAP, *PIXEL_SPACING))


def test_fallback_to_instance_number(tmp_path, ct8):
    write_ct_series(tmp_path, ct8[:5], with_position=False, seed=1)
    img = read_image(tmp_path)
    # InstanceNumber runs backwards in write_ct_series, so the volume comes out reversed.
    np.testing.assert_array_equal(img.data, expected_hu(ct8[:5])[::-1])
    assert img.metadata["slice_order"] == "InstanceNumber"
    assert img.spacing == pytest.approx((SLICE_GAP, *PIXEL_SPACING))  # from SliceThickness


def test_single_file_is_2d_hu(series_dir, ct8):
    # any file of the series; find slice 0 via its position
    files = sorted(p for p in series_dir.iterdir())
    img = read_image(files[0])
    assert img.data.shape == (256, 256) and img.data.dtype == np.float32
    assert img.spacing == pytest.approx(PIXEL_SPACING) and img.modality == "CT"
    matches = [i for i, s in enumerate(ct8) if np.array_equal(img.data, s * SLOPE + INTERCEPT)]
    assert len(matches) == 1
    assert img.metadata["rescale_slope"] == SLOPE and img.metadata["rescale_intercept"] == INTERCEPT


def test_non_ct_without_rescale_keeps_integers(tmp_path, ct8):
    from pydicom.uid import generate_uid

    ds = make_ct_dataset(
        ct8[0].astype(np.int16), position=(0, 0, 0), instance_number=1,
        series_uid=generate_uid(), study_uid=generate_uid(), modality="MR", rescale=None,
    )
    ds.save_as(tmp_path / "mr", enforce_file_format=True)  # no suffix: sniffed
    img = read_image(tmp_path / "mr")
    assert img.modality == "MR" and img.data.dtype == np.int16
    np.testing.assert_array_equal(img.data, ct8[0])


def test_multiframe_file_is_volume(tmp_path, ct8):
    from pydicom.uid import generate_uid

    frames = np.stack(ct8[:3]).astype(np.int16)
    ds = make_ct_dataset(
        frames[0], position=(0, 0, 0), instance_number=1,
        series_uid=generate_uid(), study_uid=generate_uid(),
    )
    ds.NumberOfFrames = 3
    ds.SpacingBetweenSlices = "3.0"
    ds.PixelData = frames.astype("<i2").tobytes()
    ds.save_as(tmp_path / "multi.dcm", enforce_file_format=True)
    img = read_dicom_file(tmp_path / "multi.dcm")
    assert img.data.shape == (3, 256, 256)
    np.testing.assert_array_equal(img.data, expected_hu(ct8[:3]))
    assert img.spacing == pytest.approx((3.0, *PIXEL_SPACING))


def test_non_dicom_files_in_folder_are_ignored(tmp_path, ct8, ct_pairs):
    write_ct_series(tmp_path, ct8[:4], seed=2)
    (tmp_path / "README.txt").write_text("scan notes\n")
    (tmp_path / "preview.png").write_bytes(Path(ct_pairs[0][0]).read_bytes())
    (tmp_path / "fake.dcm").write_text("not dicom at all")
    img = read_image(tmp_path)
    np.testing.assert_array_equal(img.data, expected_hu(ct8[:4]))
    assert img.metadata["ignored_files"] == 3 and img.metadata["n_files"] == 4


def test_largest_series_wins(tmp_path, ct8):
    write_ct_series(tmp_path, ct8[:5], seed=4, series_uid="1.2.3.5")
    write_ct_series(tmp_path, ct8[5:7], seed=5, series_uid="1.2.3.4")
    img = read_image(tmp_path)
    assert img.data.shape[0] == 5
    assert img.metadata["series_instance_uid"] == "1.2.3.5"
    assert img.metadata["other_series"] == {"1.2.3.4": 2}


# ----------------------------------------------------------------------------- errors


def test_truncated_dicom_file(tmp_path, series_dir):
    src = sorted(series_dir.iterdir())[0]
    raw = src.read_bytes()
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(raw[: len(raw) - 5000])  # header intact, pixel data short
    with pytest.raises(ImageReadError, match=re.escape("cut.dcm")):
        read_image(bad)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4)
    with pytest.raises(ImageReadError, match="garbage.dcm"):
        read_image(garbage)


def test_corrupt_slice_in_series_names_the_file(tmp_path, ct8):
    paths = write_ct_series(tmp_path, ct8[:4], seed=6)
    raw = paths[2].read_bytes()
    paths[2].write_bytes(raw[: len(raw) - 3000])
    with pytest.raises(ImageReadError, match=re.escape(paths[2].name)):
        read_image(tmp_path)


def test_inconsistent_slice_shapes(tmp_path, ct8):
    slices = [s.copy() for s in ct8[:4]]
    slices[1] = slices[1][:200]
    write_ct_series(tmp_path, slices, seed=7)
    with pytest.raises(ImageReadError, match="different sizes"):
        read_image(tmp_path)


def test_duplicate_positions(tmp_path, ct8):
    from pydicom.uid import generate_uid

    uid, study = generate_uid(), generate_uid()
    for k in range(2):
        make_ct_dataset(
            ct8[k].astype(np.int16), position=(0, 0, 5), instance_number=k + 1,
            series_uid=uid, study_uid=study,
        ).save_as(tmp_path / f"s{k}.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="same position"):
        read_image(tmp_path)


def test_folder_without_images(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ImageReadError, match="no DICOM"):
        read_image(tmp_path)


# ----------------------------------------------------------------------------- windows


def test_window_limits_known_values():
    assert window_limits("soft_tissue") == (-160.0, 240.0)
    assert window_limits("lung") == (-1350.0, 150.0)
    assert window_limits("bone") == (-500.0, 1300.0)
    assert window_limits("liver") == (-45.0, 105.0)
    assert set(CT_WINDOWS) == {"lung", "soft_tissue", "bone", "liver"}


def test_apply_window_range(series_dir):
    hu = read_image(series_dir).data
    out = apply_window(hu, "lung")
    assert out.dtype == np.float32 and out.shape == hu.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(
        apply_window(np.array([-2000.0, -160.0, 40.0, 240.0, 3000.0]), "soft_tissue"),
        [0.0, 0.0, 0.5, 1.0, 1.0],
    )


def test_unknown_window_lists_names():
    with pytest.raises(ValueError, match="lung.*soft_tissue|bone.*liver"):
        window_limits("brain")
    with pytest.raises(ValueError, match="valid names"):
        apply_window(np.zeros(3), "mediastinum")
