"""PNG mask writer on real masks, input validation, and atomic replacement."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
from PIL import Image
from skimage.io import imread

from napari_lesion_diffkd.core.data.readers import read_image
from napari_lesion_diffkd.core.data.writers import (
    atomic_write,
    write_labels_nifti,
    write_mask_png,
)


@pytest.fixture(scope="module")
def real_mask(ph2_pairs) -> np.ndarray:
    return imread(ph2_pairs[0][1]) > 127


def test_png_mask_roundtrip_bool(tmp_path, real_mask):
    out = write_mask_png(tmp_path / "nested" / "deeper" / "mask.png", real_mask)
    assert out.is_file()  # parent folders were created
    back = read_image(out)
    assert back.data.shape == real_mask.shape and back.data.dtype == np.uint8
    assert set(np.unique(back.data)) == {0, 255}
    np.testing.assert_array_equal(back.data, real_mask.astype(np.uint8) * 255)
    # Same bytes-level convention as the dataset's own masks.
    assert Image.open(out).mode == "L"


def test_png_labels_are_binarised_or_kept(tmp_path, real_mask):
    labels = real_mask.astype(np.int32) * 3
    labels[:10, :10] = 7
    binary = read_image(write_mask_png(tmp_path / "bin.png", labels)).data
    np.testing.assert_array_equal(binary, np.where(labels > 0, 255, 0))
    kept = read_image(write_mask_png(tmp_path / "lab.png", labels, binary=False)).data
    assert kept.dtype == np.uint8
    np.testing.assert_array_equal(kept, labels)
    # (1, Y, X) is one slice, not a volume.
    single = read_image(write_mask_png(tmp_path / "one.png", real_mask[None])).data
    assert single.shape == real_mask.shape


def test_png_rejects_volumes_and_bad_labels(tmp_path, real_mask):
    with pytest.raises(ValueError, match="2D.*write_labels_nifti"):
        write_mask_png(tmp_path / "vol.png", np.stack([real_mask, real_mask]))
    with pytest.raises(ValueError, match=">= 0"):
        write_mask_png(tmp_path / "neg.png", -real_mask.astype(np.int16), binary=False)
    with pytest.raises(ValueError, match="whole numbers"):
        write_mask_png(tmp_path / "f.png", real_mask * 0.5, binary=False)
    assert not any(tmp_path.iterdir())  # nothing was written


def test_new_files_get_umask_permissions(tmp_path, real_mask):
    umask = os.umask(0)
    os.umask(umask)
    out = write_mask_png(tmp_path / "perm.png", real_mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_png_write_is_atomic(tmp_path, real_mask, monkeypatch):
    dest = tmp_path / "mask.png"
    write_mask_png(dest, real_mask)
    before = dest.read_bytes()

    def crash_midway(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial")  # some bytes reach the temp file first
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Image.Image, "save", crash_midway)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_mask_png(dest, ~real_mask)
    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]  # no temp leftovers


def test_nifti_write_is_atomic(tmp_path, real_mask, monkeypatch):
    dest = tmp_path / "labels.nii.gz"
    write_labels_nifti(dest, real_mask[None], spacing=(2.0, 0.5, 0.5))
    before = dest.read_bytes()
    original = gzip.GzipFile.write

    def crash_midway(self, data):
        original(self, bytes(data)[:100])
        raise OSError("no space left on device")

    monkeypatch.setattr(gzip.GzipFile, "write", crash_midway)
    with pytest.raises(OSError, match="no space"):
        write_labels_nifti(dest, np.zeros((2, 8, 8), np.uint8))
    monkeypatch.undo()
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.nii.gz"]
    np.testing.assert_array_equal(read_image(dest).data, real_mask[None].astype(np.uint8))


def test_atomic_write_replaces_existing(tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    atomic_write(dest, lambda fh: fh.write(b"new content"))
    assert dest.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
