"""npe2 reader contribution: images, DICOM series folders and NIfTI volumes as napari layers.

``napari_get_reader(path)`` accepts

* one supported file (PNG, JPEG, BMP, TIFF, DICOM, NIfTI; see
  :mod:`napari_lesion_diffkd.core.data.readers`),
* a DICOM series folder -> one ``(Z, Y, X)`` image layer,
* a folder without DICOM files but with supported image files -> one layer per file, in
  name order (no stacking: the images may differ in size),
* a list of such paths, when *every* entry is supported.

Every layer is an ``"image"`` layer tuple ``(data, kwargs, "image")`` with ``name``,
``scale`` (= :attr:`LoadedImage.spacing`, mm per spatial axis in napari's axis order),
``rgb`` and ``metadata`` (``modality``, ``spacing``, ``source`` plus everything in
:attr:`LoadedImage.metadata`). CT layers (DICOM modality ``"CT"``, values in HU) get
``contrast_limits`` from the file's own window (DICOM WindowCenter / WindowWidth; metadata
``ct_window = "file"``), else from the lung window (-1350, 150) HU (``ct_window = "lung"``);
other DICOM images use the file's own window when it has one; MONOCHROME1 images get an
inverted gray colormap.

The reader never raises inside napari: a file that cannot be read is reported with
``napari.utils.notifications.show_warning`` (``warnings.warn`` when napari's notifications
are not importable) and skipped. If nothing could be read, the reader returns ``[]``, which
napari reports as "returned no data".
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_lesion_diffkd.core.data.readers import (
    DICOM_SUFFIXES,
    SUPPORTED_SUFFIXES,
    ImageReadError,
    LoadedImage,
    is_supported,
    path_suffix,
    read_image,
)
from napari_lesion_diffkd.core.data.windows import (
    DEFAULT_CT_WINDOW,
    FILE_WINDOW,
    file_window,
    window_limits,
)

logger = logging.getLogger(__name__)

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
LayerData = tuple[Any, dict, str]


def napari_get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return :func:`read_layers` if this plugin can read ``path``, else None.

    Cheap: looks at suffixes and folder listings (and sniffs DICOM markers), never decodes
    pixels.

    Args:
        path: A file or folder path, or a list of them.

    Returns:
        The reader function, or None when any path is unsupported.
    """
    try:
        targets = _expand(path)
    except Exception as exc:  # a permission error while listing must not break napari
        logger.debug("napari_get_reader(%r) declined: %s", path, exc)
        return None
    return read_layers if targets else None


def read_layers(path: PathOrPaths) -> list[LayerData]:
    """Read ``path`` (or paths) into napari image layer tuples; never raises.

    Args:
        path: As accepted by :func:`napari_get_reader`.

    Returns:
        One ``(data, kwargs, "image")`` tuple per readable image; unreadable ones are
        skipped with a warning, so the list may be empty.
    """
    try:
        targets = _expand(path) or []
    except Exception as exc:
        _warn(f"lesion-diffkd reader: cannot list {path!r}: {exc}")
        return []
    layers: list[LayerData] = []
    for target in targets:
        try:
            layers.append(layer_tuple(read_image(target)))
        except ImageReadError as exc:
            _warn(f"lesion-diffkd reader: {exc}")
        except Exception as exc:  # anything unexpected: still never raise inside napari
            _warn(f"lesion-diffkd reader: {target}: unexpected {type(exc).__name__}: {exc}")
    return layers


def layer_tuple(image: LoadedImage) -> LayerData:
    """Turn a :class:`LoadedImage` into a napari ``(data, kwargs, "image")`` tuple."""
    metadata = dict(image.metadata)
    metadata.update(modality=image.modality, spacing=tuple(image.spacing), source=image.source)
    kwargs: dict[str, Any] = {
        "name": _layer_name(image.source),
        "scale": tuple(float(s) for s in image.spacing),
        "rgb": image.rgb,
        "metadata": metadata,
    }
    if not image.rgb:
        kwargs["colormap"] = (
            "gray_r" if metadata.get("photometric_interpretation") == "MONOCHROME1" else "gray"
        )
        own = file_window(metadata)
        if image.modality == "CT":
            # The file's own window is what its author chose to read it with.
            kwargs["contrast_limits"] = own or window_limits(DEFAULT_CT_WINDOW)
            metadata["ct_window"] = FILE_WINDOW if own else DEFAULT_CT_WINDOW
        elif "window_center" in metadata and metadata.get("window_width", 0) > 0:
            center, width = metadata["window_center"], metadata["window_width"]
            kwargs["contrast_limits"] = (center - width / 2.0, center + width / 2.0)
    return image.data, kwargs, "image"


def _layer_name(source: str) -> str:
    p = Path(source)
    suffix = path_suffix(p)
    if p.is_dir() or not suffix:
        return p.name
    return p.name[: -len(suffix)]


def _expand(path: PathOrPaths) -> list[Path] | None:
    """Paths to read, one per layer; None if any given path is unsupported."""
    if isinstance(path, (str, os.PathLike)):
        given = [Path(path)]
    else:
        given = [Path(p) for p in path]
    if not given:
        return None
    targets: list[Path] = []
    for p in given:
        if p.is_dir():
            if is_supported(p):  # a DICOM series folder: one volume
                targets.append(p)
                continue
            files = _image_files_in(p)
            if not files:
                return None
            targets.extend(files)
        elif is_supported(p):
            targets.append(p)
        else:
            return None
    return targets


def _image_files_in(folder: Path) -> list[Path]:
    # Non-DICOM supported files only: a folder with DICOM files was taken as a series above.
    non_dicom = tuple(s for s in SUPPORTED_SUFFIXES if s not in DICOM_SUFFIXES)
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and path_suffix(f) in non_dicom
    )


def _warn(message: str) -> None:
    logger.warning(message)
    try:
        from napari.utils.notifications import show_warning
    except ImportError:
        warnings.warn(message, stacklevel=3)
        return
    show_warning(message)
