"""2D readers (PNG, JPEG, BMP, TIFF) on real images, and the error paths of read_image."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.io import imread

from napari_lesion_diffkd.core.data.readers import (
    ImageReadError,
    LoadedImage,
    is_supported,
    path_suffix,
    read_image,
)


@pytest.fixture(scope="module")
def ph2_rgb(ph2_pairs) -> np.ndarray:
    return imread(ph2_pairs[0][0])


@pytest.fixture(scope="module")
def bus_gray(busbra_pairs) -> np.ndarray:
    return imread(busbra_pairs[0][0])


def test_ph2_jpeg_is_rgb_and_matches_skimage(ph2_pairs):
    path = ph2_pairs[0][0]
    img = read_image(path)
    expected = imread(path)
    assert isinstance(img, LoadedImage)
    assert img.rgb and img.data.shape == expected.shape and img.data.shape[-1] == 3
    assert img.data.dtype == np.uint8
    np.testing.assert_array_equal(img.data, expected)
    assert img.spacing == (1.0, 1.0) and img.ndim_spatial == 2
    assert img.modality is None and img.source == str(path)
    assert img.metadata["channels_identical"] is False


def test_busbra_png_is_gray_uint8(busbra_pairs, bus_gray):
    img = read_image(str(busbra_pairs[0][0]))
    assert not img.rgb and img.data.ndim == 2 and img.data.dtype == np.uint8
    np.testing.assert_array_equal(img.data, bus_gray)
    assert img.ndim_spatial == 2


def test_bmp_roundtrip_gray_and_rgb(tmp_path, ph2_rgb, bus_gray):
    Image.fromarray(bus_gray).save(tmp_path / "gray.bmp")
    Image.fromarray(ph2_rgb).save(tmp_path / "rgb.BMP")  # upper-case suffix too
    gray, rgb = read_image(tmp_path / "gray.bmp"), read_image(tmp_path / "rgb.BMP")
    np.testing.assert_array_equal(gray.data, bus_gray)
    assert not gray.rgb
    np.testing.assert_array_equal(rgb.data, ph2_rgb)
    assert rgb.rgb


def test_tiff_gray_rgb_and_16bit(tmp_path, ph2_rgb, bus_gray):
    tifffile.imwrite(tmp_path / "gray.tif", bus_gray)
    tifffile.imwrite(tmp_path / "rgb.tiff", ph2_rgb, photometric="rgb")
    wide = bus_gray.astype(np.uint16) * 257 + 3  # uses the full 16-bit range
    tifffile.imwrite(tmp_path / "wide.tif", wide)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.tif").data, bus_gray)
    rgb = read_image(tmp_path / "rgb.tiff")
    assert rgb.rgb
    np.testing.assert_array_equal(rgb.data, ph2_rgb)
    w = read_image(tmp_path / "wide.tif")
    assert w.data.dtype == np.uint16
    np.testing.assert_array_equal(w.data, wide)


def test_planar_rgb_tiff_becomes_yx3(tmp_path, ph2_rgb):
    planar = np.moveaxis(ph2_rgb, -1, 0)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    img = read_image(tmp_path / "planar.tif")
    assert img.rgb
    np.testing.assert_array_equal(img.data, ph2_rgb)


def test_multipage_tiff_is_zyx(tmp_path, ct_pairs):
    slices = np.stack([imread(p) for p, _ in ct_pairs[:4]])
    tifffile.imwrite(tmp_path / "stack.tif", slices, photometric="minisblack")
    img = read_image(tmp_path / "stack.tif")
    assert img.data.shape == slices.shape and not img.rgb
    assert img.spacing == (1.0, 1.0, 1.0) and img.ndim_spatial == 3
    np.testing.assert_array_equal(img.data, slices)


def test_16bit_png_keeps_dtype(tmp_path, bus_gray):
    wide = bus_gray.astype(np.uint16) * 256 + 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    img = read_image(tmp_path / "wide.png")
    assert img.data.dtype == np.uint16
    np.testing.assert_array_equal(img.data, wide)


def test_rgba_png_drops_alpha(tmp_path, ph2_rgb):
    alpha = np.full(ph2_rgb.shape[:2], 7, np.uint8)  # alpha must not premultiply anything
    Image.fromarray(np.dstack([ph2_rgb, alpha]), mode="RGBA").save(tmp_path / "rgba.png")
    img = read_image(tmp_path / "rgba.png")
    assert img.rgb and img.data.shape == ph2_rgb.shape
    np.testing.assert_array_equal(img.data, ph2_rgb)


def test_gray_alpha_palette_and_1bit(tmp_path, bus_gray, busbra_pairs):
    Image.fromarray(np.dstack([bus_gray, bus_gray]), mode="LA").save(tmp_path / "la.png")
    la = read_image(tmp_path / "la.png")
    assert not la.rgb
    np.testing.assert_array_equal(la.data, bus_gray)

    # A gray palette image becomes gray; a coloured palette becomes RGB.
    Image.fromarray(bus_gray).convert("P").save(tmp_path / "pal_gray.png")
    pal = read_image(tmp_path / "pal_gray.png")
    assert not pal.rgb and pal.data.shape == bus_gray.shape
    expected = np.asarray(Image.open(tmp_path / "pal_gray.png").convert("L"))
    np.testing.assert_array_equal(pal.data, expected)
    colour = Image.new("P", (5, 4))
    colour.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    colour.putpixel((1, 2), 1)
    colour.save(tmp_path / "pal_colour.png")
    pc = read_image(tmp_path / "pal_colour.png")
    assert pc.rgb and pc.data.shape == (4, 5, 3)
    assert tuple(pc.data[2, 1]) == (255, 0, 0) and tuple(pc.data[0, 0]) == (0, 0, 0)

    mask = imread(busbra_pairs[0][1]) > 127
    Image.fromarray(mask).save(tmp_path / "mask1bit.png")  # mode "1"
    assert Image.open(tmp_path / "mask1bit.png").mode == "1"
    m = read_image(tmp_path / "mask1bit.png")
    assert m.data.dtype == np.uint8
    np.testing.assert_array_equal(m.data, mask.astype(np.uint8) * 255)


def test_gray_stored_as_rgb_stays_rgb(tmp_path, bus_gray):
    Image.fromarray(np.dstack([bus_gray] * 3)).save(tmp_path / "grayrgb.png")
    img = read_image(tmp_path / "grayrgb.png")
    assert img.rgb and img.metadata["channels_identical"] is True


# ----------------------------------------------------------------------------- errors


def _assert_read_error(path: Path, what: str) -> None:
    with pytest.raises(ImageReadError, match=re.escape(path.name)) as info:
        read_image(path)
    assert re.search(what, str(info.value), re.IGNORECASE), str(info.value)


def test_truncated_png(tmp_path, busbra_pairs):
    raw = Path(busbra_pairs[0][0]).read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(raw[: len(raw) // 2])
    _assert_read_error(bad, "truncated|corrupt")


def test_truncated_jpeg(tmp_path, ph2_pairs):
    raw = Path(ph2_pairs[0][0]).read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(raw[: len(raw) // 3])
    _assert_read_error(bad, "truncated|corrupt")


def test_truncated_tiff(tmp_path, bus_gray):
    tifffile.imwrite(tmp_path / "full.tif", bus_gray)
    raw = (tmp_path / "full.tif").read_bytes()
    bad = tmp_path / "cut.tif"
    bad.write_bytes(raw[:200])
    with pytest.raises(ImageReadError, match="cut.tif"):
        read_image(bad)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.touch()
    _assert_read_error(empty, "empty")


def test_text_with_png_suffix(tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image\n" * 20)
    _assert_read_error(fake, "not a valid")


def test_missing_path(tmp_path):
    _assert_read_error(tmp_path / "nowhere.png", "no such file")


def test_unsupported_suffix(tmp_path, busbra_pairs):
    other = tmp_path / "image.xyz"
    other.write_bytes(Path(busbra_pairs[0][0]).read_bytes())
    _assert_read_error(other, "unsupported")


def test_folder_without_dicom_is_an_error(tmp_path, busbra_pairs):
    (tmp_path / "a.png").write_bytes(Path(busbra_pairs[0][0]).read_bytes())
    with pytest.raises(ImageReadError, match="no DICOM"):
        read_image(tmp_path)


def test_is_supported_and_suffix(tmp_path, ph2_pairs):
    assert is_supported(ph2_pairs[0][0])
    assert is_supported("scan.NII.GZ") and is_supported("a.tiff") and is_supported("x.dcm")
    assert not is_supported("a.gif") and not is_supported(tmp_path)  # empty folder
    assert path_suffix("a/b/Brain.Nii.Gz") == ".nii.gz" and path_suffix("x.PNG") == ".png"
