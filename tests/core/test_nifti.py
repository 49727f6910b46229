"""NIfTI reading (axis convention, spacing, orientation) and the label writer round trip."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from skimage.io import imread

from napari_lesion_diffkd.core.data.readers import ImageReadError, read_image
from napari_lesion_diffkd.core.data.writers import write_labels_nifti

# An oblique-free but non-trivial affine in nibabel's (i, j, k) order: i runs towards
# patient left (flip), j towards inferior, k towards anterior, voxel size (0.8, 0.7, 2.5).
AFFINE_IJK = np.array(
    [
        [-0.8, 0.0, 0.0, 90.0],
        [0.0, 0.0, 2.5, -30.0],
        [0.0, -0.7, 0.0, 120.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
MARKER_ZYX = (2, 10, 200)  # deliberately asymmetric: all three indices differ


@pytest.fixture(scope="module")
def volume_zyx(ct_pairs) -> np.ndarray:
    """6 real CT slices as an int16 (Z, Y, X) volume with one marker voxel."""
    vol = np.stack([imread(p) for p, _ in ct_pairs[:6]]).astype(np.int16) * 4 - 1000
    vol[MARKER_ZYX] = 3000
    return vol


@pytest.fixture(scope="module")
def labels_zyx(ct_pairs) -> np.ndarray:
    """Real infection masks of the same 6 slices as uint8 labels {0, 1, 2}."""
    labels = np.stack([imread(m) > 127 for _, m in ct_pairs[:6]]).astype(np.uint8)
    labels[:, :, 128:] *= 2  # a second label on the right half: not a pure binary mask
    return labels


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_read_axis_convention_spacing_orientation(tmp_path, volume_zyx, suffix):
    path = tmp_path / f"ct{suffix}"
    # nibabel's array is (i, j, k) = (X, Y, Z): the documented inverse of our convention.
    nib.save(nib.Nifti1Image(volume_zyx.transpose(2, 1, 0), AFFINE_IJK), path)
    img = read_image(path)
    assert img.data.shape == volume_zyx.shape and img.data.dtype == np.int16
    np.testing.assert_array_equal(img.data, volume_zyx)
    assert img.data[MARKER_ZYX] == 3000 and int(np.argmax(img.data)) == np.ravel_multi_index(
        MARKER_ZYX, volume_zyx.shape
    )
    assert img.spacing == (2.5, 0.7, 0.8)  # (z, y, x) = zooms (k, j, i), cleaned of float32 noise
    assert not img.rgb and img.modality is None and img.ndim_spatial == 3
    meta = img.metadata
    np.testing.assert_allclose(meta["affine"], AFFINE_IJK, atol=1e-5)
    assert meta["axcodes"] == ("A", "I", "L")  # world direction of +z, +y, +x
    z, y, x = MARKER_ZYX
    np.testing.assert_allclose(
        meta["affine_zyx"] @ [z, y, x, 1], AFFINE_IJK @ [x, y, z, 1], atol=1e-4
    )


def test_labels_roundtrip_with_spacing(tmp_path, labels_zyx):
    path = write_labels_nifti(tmp_path / "labels.nii.gz", labels_zyx, spacing=(2.5, 0.7, 0.8))
    back = read_image(path)
    assert back.data.dtype == np.uint8
    np.testing.assert_array_equal(back.data, labels_zyx)
    assert back.spacing == (2.5, 0.7, 0.8)
    # The file itself follows the (i, j, k) = (x, y, z) convention with a diagonal affine.
    on_disk = nib.load(path)
    assert on_disk.shape == labels_zyx.shape[::-1]
    np.testing.assert_allclose(np.diag(on_disk.affine)[:3], [0.8, 0.7, 2.5], rtol=1e-6)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_labels_written_on_the_image_grid(tmp_path, volume_zyx, labels_zyx, suffix):
    image_path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume_zyx.transpose(2, 1, 0), AFFINE_IJK), image_path)
    image = read_image(image_path)
    out = write_labels_nifti(
        tmp_path / f"seg{suffix}",
        labels_zyx,
        spacing=image.spacing,
        affine=image.metadata["affine"],
    )
    back = read_image(out)
    np.testing.assert_array_equal(back.data, labels_zyx)
    assert back.spacing == image.spacing
    np.testing.assert_allclose(back.metadata["affine"], image.metadata["affine"], atol=1e-6)
    assert back.metadata["axcodes"] == image.metadata["axcodes"]
    # Voxel-for-voxel alignment with the source file in nibabel's own indexing.
    seg, src = nib.load(out), nib.load(image_path)
    assert seg.shape == src.shape
    z, y, x = np.argwhere(labels_zyx == 2)[0]
    assert np.asarray(seg.dataobj)[x, y, z] == 2


def test_uint16_labels_and_validation(tmp_path, labels_zyx):
    many = labels_zyx.astype(np.int32) * 300
    back = read_image(write_labels_nifti(tmp_path / "many.nii", many))
    assert back.data.dtype == np.uint16 and back.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(back.data, many)
    with pytest.raises(ValueError, match=">= 0"):
        write_labels_nifti(tmp_path / "neg.nii", -labels_zyx.astype(np.int8))
    with pytest.raises(ValueError, match="disagrees"):
        write_labels_nifti(tmp_path / "x.nii", labels_zyx, spacing=(1, 1, 1), affine=AFFINE_IJK)
    with pytest.raises(ValueError, match=r"\.nii"):
        write_labels_nifti(tmp_path / "x.png", labels_zyx)
    with pytest.raises(ValueError, match="shape"):
        write_labels_nifti(tmp_path / "x.nii", labels_zyx[None])


def test_2d_nifti(tmp_path, ct_pairs):
    slice_yx = imread(ct_pairs[0][0])
    slice_yx[3, 250] = 255
    slice_yx[250, 3] = 0
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(slice_yx.T.copy(), np.diag([0.8, 0.7, 1.0, 1.0])), path)
    img = read_image(path)
    assert img.data.shape == slice_yx.shape and img.ndim_spatial == 2
    np.testing.assert_array_equal(img.data, slice_yx)
    assert img.spacing == (0.7, 0.8)
    mask = imread(ct_pairs[0][1]) > 127
    back = read_image(write_labels_nifti(tmp_path / "mask.nii", mask, spacing=img.spacing))
    np.testing.assert_array_equal(back.data, mask.astype(np.uint8))
    assert back.spacing == (0.7, 0.8)


def test_single_slice_3d_stays_3d(tmp_path, labels_zyx):
    back = read_image(write_labels_nifti(tmp_path / "one.nii", labels_zyx[:1]))
    assert back.data.shape == labels_zyx[:1].shape


def test_bad_nifti_files(tmp_path, volume_zyx):
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(volume_zyx.transpose(2, 1, 0), AFFINE_IJK), good)
    raw = good.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match="cut.nii.gz"):
        read_image(tmp_path / "cut.nii.gz")
    plain = tmp_path / "plain.nii"
    nib.save(nib.Nifti1Image(volume_zyx.transpose(2, 1, 0), AFFINE_IJK), plain)
    (tmp_path / "cut.nii").write_bytes(plain.read_bytes()[:5000])
    with pytest.raises(ImageReadError, match="cut.nii"):
        read_image(tmp_path / "cut.nii")
    (tmp_path / "text.nii").write_text("not a nifti header" * 40)
    with pytest.raises(ImageReadError, match="text.nii"):
        read_image(tmp_path / "text.nii")
    four_d = np.stack([volume_zyx.transpose(2, 1, 0)] * 2, axis=-1)
    nib.save(nib.Nifti1Image(four_d, AFFINE_IJK), tmp_path / "time.nii")
    with pytest.raises(ImageReadError, match="4D"):
        read_image(tmp_path / "time.nii")
