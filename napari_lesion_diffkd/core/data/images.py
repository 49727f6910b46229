"""Plain raster images: PNG, JPEG and BMP via Pillow, TIFF via tifffile.

Output conventions (see :class:`~.readers.LoadedImage`):

* Gray images -> ``(Y, X)`` in the stored dtype: 8-bit stays uint8, 16-bit PNG and TIFF
  stay uint16, 32-bit integer / float TIFF stay int32 / float32.
* Colour images -> ``(Y, X, 3)`` RGB, ``rgb=True``. Alpha is dropped (RGBA, LA, palette
  transparency); CMYK / YCbCr JPEGs are converted to RGB.
* 1-bit images (PNG/BMP/TIFF) -> uint8 ``{0, 255}``, the convention of the mask files.
* Palette (``P``) images -> gray uint8 when every palette colour used has R == G == B,
  otherwise RGB.
* A gray picture saved as RGB (three identical channels) *stays* RGB: the file says RGB and
  silently dropping channels would surprise callers who index ``[..., c]``.
  ``metadata["channels_identical"]`` tells such images apart so that a model that wants one
  channel can take ``data[..., 0]`` safely.
* Multi-page TIFF -> ``(Z, Y, X)``; a multi-page RGB TIFF is rejected (no RGB volumes).
* ``spacing`` is ``(1.0, 1.0)`` (or ``(1.0, 1.0, 1.0)``): DPI tags of these formats do not
  describe a physical pixel size in medical images.
* EXIF orientation tags are *not* applied, so pixel ``[y, x]`` is exactly what is stored
  (the same array as :func:`skimage.io.imread`). Only the first frame of an animated PNG is
  read.

Known limitation: 16-bit *RGB* PNGs are reduced to 8 bits by Pillow; store such images as
TIFF if the extra precision matters.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from napari_lesion_diffkd.core.data.limits import PixelLimitError, check_pixel_count
from napari_lesion_diffkd.core.data.readers import ImageReadError, LoadedImage, path_suffix

_TIFF_SUFFIXES = (".tif", ".tiff")
# Pillow modes that decode to 16-bit unsigned integers (byte order differs).
_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def read_2d_image(path: str | os.PathLike) -> LoadedImage:
    """Read a PNG, JPEG, BMP or TIFF file.

    Args:
        path: The image file.

    Returns:
        A :class:`LoadedImage` with ``(Y, X)`` gray, ``(Y, X, 3)`` RGB or ``(Z, Y, X)``
        (multi-page TIFF) data, unit spacing and ``modality=None``.

    Raises:
        ImageReadError: The file is missing, empty, truncated, not an image, or has a
            layout this reader does not support.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: the file is empty (0 bytes)")
    if path_suffix(p) in _TIFF_SUFFIXES:
        data, rgb, meta = _read_tiff(p)
    else:
        data, rgb, meta = _read_pillow(p)
    if data.size == 0:
        raise ImageReadError(f"{p}: the image has no pixels (shape {data.shape})")
    if rgb:
        meta["channels_identical"] = bool(
            np.array_equal(data[..., 0], data[..., 1])
            and np.array_equal(data[..., 0], data[..., 2])
        )
    n_spatial = data.ndim - 1 if rgb else data.ndim
    return LoadedImage(
        data=np.ascontiguousarray(data),
        spacing=(1.0,) * n_spatial,
        rgb=rgb,
        modality=None,
        source=str(p),
        metadata=meta,
    )


def _read_pillow(p: Path) -> tuple[np.ndarray, bool, dict]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 MP at open(); our own limit below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            # open() is lazy and has parsed only the header: refuse a pixel bomb before the
            # decode (Pillow's own DecompressionBombError only fires above ~179 MP).
            width, height = im.size
            check_pixel_count(p, (height, width))  # only the first frame is read
            # load() forces the full decode so truncation is caught here.
            im.load()
            fmt = im.format
            mode = im.mode
            data, rgb = _pillow_to_array(im)
    except PixelLimitError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (above ~179 MP) fires inside open(), before our check can.
        raise PixelLimitError(f"{p}: image too large to decode ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{p}: not a valid PNG/JPEG/BMP image (unrecognised content)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # OSError: truncated/corrupt stream; SyntaxError: broken header chunks (Pillow's
        # choice).
        raise ImageReadError(f"{p}: corrupt or truncated image ({exc})") from exc
    return data, rgb, {"format": fmt, "mode": mode}


def _pillow_to_array(im) -> tuple[np.ndarray, bool]:
    """Pixels of a loaded Pillow image as ``((Y, X) or (Y, X, 3) array, rgb)``."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L")), False  # {0, 255}
    if mode in ("L", "I", "F"):
        return np.asarray(im), False
    if mode in _UINT16_MODES:
        # asarray may give a big-endian '>u2' view: make it native uint16.
        return np.asarray(im).astype(np.uint16), False
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel("L")), False
    if mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGB"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return np.ascontiguousarray(rgb[..., 0]), False
        return rgb, True
    if mode == "RGB":
        return np.asarray(im), True
    # RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV ...: Pillow knows the conversion to RGB.
    return np.asarray(im.convert("RGB")), True


def _read_tiff(p: Path) -> tuple[np.ndarray, bool, dict]:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            if not tif.series:
                raise ImageReadError(f"{p}: the TIFF file holds no image series")
            series = tif.series[0]
            axes = series.axes
            _check_tiff_size(p, tuple(series.shape), axes)  # from page headers, nothing decoded
            data = series.asarray()
            n_series = len(tif.series)
    except ImageReadError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{p}: not a valid or a truncated TIFF file ({exc})") from exc
    data, rgb = _tiff_axes_to_zyx(p, np.asarray(data), axes)
    if data.dtype == bool:
        data = data.astype(np.uint8) * 255  # same convention as 1-bit PNG/BMP
    meta = {"format": "TIFF", "tiff_axes": axes}
    if n_series > 1:
        meta["tiff_series_ignored"] = n_series - 1
    return data, rgb, meta


def _check_tiff_size(p: Path, shape: tuple[int, ...], axes: str) -> None:
    """Refuse a TIFF series whose declared shape is over the pixel limit (see ``limits``).

    ``shape``/``axes`` are tifffile's series shape and axes (e.g. ``(Z, Y, X)``, ``"QYX"``);
    the samples axis ``S`` (RGB) does not count as pixels, every other non-Y/X axis counts
    as planes. A layout without Y and X is left to the layout check after reading.
    """
    if len(shape) != len(axes) or "Y" not in axes or "X" not in axes:
        # Unknown layout: still bound the total so that the read cannot explode.
        total = 1
        for n in shape:
            total *= int(n)
        check_pixel_count(p, (total, 1))
        return
    planes = 1
    for n, a in zip(shape, axes):
        if a not in "YXS":
            planes *= int(n)
    check_pixel_count(p, (shape[axes.index("Y")], shape[axes.index("X")]), planes)


def _tiff_axes_to_zyx(p: Path, data: np.ndarray, axes: str) -> tuple[np.ndarray, bool]:
    """Rearrange a tifffile series (axes like ``"YX"``, ``"SYX"``, ``"QYXS"``) to our layout."""
    if len(axes) != data.ndim or "Y" not in axes or "X" not in axes:
        raise ImageReadError(f"{p}: unsupported TIFF layout (axes {axes!r}, shape {data.shape})")
    # Drop length-1 axes other than Y/X (e.g. a single-page 'IYX').
    keep = [i for i, a in enumerate(axes) if a in "YX" or data.shape[i] != 1]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    rgb = False
    order = [axes.index("Y"), axes.index("X")]
    extra = [i for i, a in enumerate(axes) if a not in "YXS"]
    if "S" in axes:
        order.append(axes.index("S"))
    data = data.transpose(extra + order)
    if "S" in axes:
        n = data.shape[-1]
        if n in (3, 4):
            data, rgb = data[..., :3], True  # drop alpha
        elif n == 2:
            data = data[..., 0]  # gray + alpha
        else:
            raise ImageReadError(f"{p}: TIFF with {n} samples per pixel is not supported")
    if len(extra) > 1:
        raise ImageReadError(
            f"{p}: TIFF with axes {axes!r} has more than one non-spatial axis; only 2D images "
            "and single stacks (Z, Y, X) are supported"
        )
    if extra and rgb:
        raise ImageReadError(f"{p}: multi-page RGB TIFF (shape {data.shape}) is not supported")
    return data, rgb
