"""DICOM single files and series folders, with pydicom.

Pixel values
    The Modality LUT is applied: ``RescaleSlope`` / ``RescaleIntercept`` (per slice, or per
    frame for enhanced multi-frame objects) or a Modality LUT Sequence. CT therefore comes out
    in Hounsfield units as float32, always. Other modalities come out as float32 when a
    non-identity rescale is present and keep their stored integer dtype otherwise.
    MONOCHROME1 images are *not* inverted (the values keep their physical meaning);
    ``metadata["photometric_interpretation"]`` says so and a display should invert them.
    RGB / YBR images (ultrasound, photos) come out as ``(Y, X, 3)`` RGB (pydicom converts YBR).

Axes and spacing
    * One single-frame file -> ``(Y, X)``; spacing ``(row_spacing, col_spacing)`` from
      ``PixelSpacing`` (DICOM orders it row, column = Y, X). Fallbacks, in order: the
      ultrasound region calibration (``SequenceOfUltrasoundRegions``, cm -> mm),
      ``ImagerPixelSpacing``, then 1.0.
    * One multi-frame file -> ``(Z, Y, X)`` with frames in stored order; the slice spacing
      comes from ``SpacingBetweenSlices`` (top level or shared functional groups), else the
      per-frame ``PlanePositionSequence`` positions, else ``SliceThickness``, else 1.0.
    * A folder -> always ``(Z, Y, X)``, even for one slice. Files are the folder's direct,
      non-hidden entries (no recursion), with or without ``.dcm`` suffix; files that are not
      DICOM, or DICOM without pixel data (DICOMDIR, reports), are ignored and counted in
      ``metadata["ignored_files"]``.

Series folders
    Files are grouped by ``SeriesInstanceUID``. When several series are present the one with
    the most files is read (ties: the smallest UID) and the others are listed in
    ``metadata["other_series"]`` as ``{uid: n_files}``; nothing is merged across series.
    Slices are sorted by ``ImagePositionPatient`` projected on the slice normal
    ``row_cosine x column_cosine`` (from ``ImageOrientationPatient``), ascending, so ``Z``
    increases along the normal (towards the head for a standard axial series). When any file
    lacks position/orientation, ``InstanceNumber`` is used instead. The slice spacing is the
    median distance between neighbouring positions (``SpacingBetweenSlices`` /
    ``SliceThickness`` in the fallback). Rejected with :class:`ImageReadError`: slices of
    different size or orientation, two slices at the same position, RGB series, and series
    mixing multi-frame files.

    ``metadata["affine_lps"]`` (series with positions) is the 4x4 matrix mapping a voxel index
    ``(z, y, x, 1)`` to patient LPS coordinates in mm (DICOM's patient frame).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.data.limits import check_pixel_count
from napari_lesion_diffkd.core.data.readers import (
    DICOM_SUFFIXES,
    ImageReadError,
    LoadedImage,
    has_dicom_magic,
    path_suffix,
)

# Slices closer than this along the normal are "at the same position" (mm).
_SAME_POSITION_MM = 1e-3
# Relative tolerance for calling the slice spacing uniform.
_UNIFORM_REL_TOL = 1e-2


# --------------------------------------------------------------------------- low-level reads


def _dcmread(path: Path, *, stop_before_pixels: bool):
    """Read a DICOM dataset; files with a DICOM suffix but no preamble are read with force."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        # Some writers omit the 128-byte preamble; trust the suffix then, but only if the
        # forced parse really finds image attributes (force accepts almost any bytes).
        if path_suffix(path) not in DICOM_SUFFIXES:
            raise
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        if "Rows" not in ds:
            raise
        return ds


def _float_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes, int, float)) or not hasattr(value, "__iter__"):
            return [float(value)]
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _first_float(value: Any) -> float | None:
    values = _float_list(value)
    return values[0] if values else None


def _shared_item(ds, sequence: str):
    """First item of ``sequence`` inside the shared functional groups, or None."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0] and shared[0][sequence]:
        return shared[0][sequence][0]
    return None


def _pixel_spacing(ds) -> tuple[tuple[float, float], str]:
    """``((row_mm, col_mm), source)`` for the in-plane pixel size of one dataset."""
    ps = _float_list(ds.get("PixelSpacing"))
    if ps is None:
        item = _shared_item(ds, "PixelMeasuresSequence")
        ps = _float_list(item.get("PixelSpacing")) if item is not None else None
    if ps is not None and len(ps) == 2 and all(v > 0 for v in ps):
        return (ps[0], ps[1]), "PixelSpacing"
    # Ultrasound: calibrated regions in cm (PhysicalUnits code 3 = cm).
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        r = regions[0]
        dx, dy = _first_float(r.get("PhysicalDeltaX")), _first_float(r.get("PhysicalDeltaY"))
        ux, uy = r.get("PhysicalUnitsXDirection"), r.get("PhysicalUnitsYDirection")
        if dx and dy and ux == 3 and uy == 3:
            return (abs(dy) * 10.0, abs(dx) * 10.0), "SequenceOfUltrasoundRegions"
    ips = _float_list(ds.get("ImagerPixelSpacing"))
    if ips is not None and len(ips) == 2 and all(v > 0 for v in ips):
        return (ips[0], ips[1]), "ImagerPixelSpacing"
    return (1.0, 1.0), "unknown"


def _fallback_slice_spacing(ds) -> float:
    for value in (ds.get("SpacingBetweenSlices"), ds.get("SliceThickness")):
        v = _first_float(value)
        if v is not None and v > 0:
            return v
    item = _shared_item(ds, "PixelMeasuresSequence")
    if item is not None:
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            v = _first_float(item.get(key))
            if v is not None and v > 0:
                return v
    return 1.0


def _rescale(ds) -> tuple[float, float] | None:
    """``(slope, intercept)`` of a single-frame dataset, or None when absent."""
    slope = _first_float(ds.get("RescaleSlope"))
    intercept = _first_float(ds.get("RescaleIntercept"))
    if slope is None and intercept is None:
        return None
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


def _frame_rescales(ds, n_frames: int) -> list[tuple[float, float] | None]:
    """Per-frame ``(slope, intercept)`` of a multi-frame dataset (enhanced or classic)."""
    top = _rescale(ds)
    if top is not None:
        return [top] * n_frames
    shared = _shared_item(ds, "PixelValueTransformationSequence")
    if shared is not None:
        return [_rescale(shared)] * n_frames
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    out: list[tuple[float, float] | None] = []
    for i in range(n_frames):
        item = None
        if per_frame and i < len(per_frame):
            seq = per_frame[i].get("PixelValueTransformationSequence")
            item = seq[0] if seq else None
        out.append(_rescale(item) if item is not None else None)
    return out


def _apply_rescales(
    frames: np.ndarray, rescales: list[tuple[float, float] | None], modality: str | None
) -> np.ndarray:
    """Stored values -> modality values; ``frames`` is ``(Z, Y, X)``."""
    identity = all(r is None or r == (1.0, 0.0) for r in rescales)
    if identity and modality != "CT":
        return frames
    # float64 arithmetic then one cast: exact for integer HU, no float32 rounding drift.
    out = np.empty(frames.shape, dtype=np.float32)
    for i, r in enumerate(rescales):
        slope, intercept = r if r is not None else (1.0, 0.0)
        out[i] = frames[i].astype(np.float64) * slope + intercept
    return out


def _check_declared_size(ds, path: Path, planes: int | None = None) -> None:
    """Refuse pixel data whose declared Rows x Columns (x frames) is over the pixel limit.

    Reads header attributes only, so it runs before pydicom decodes anything; ``planes``
    overrides NumberOfFrames (a series: the number of slice files).
    """
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if planes is None:
        planes = int(ds.get("NumberOfFrames", 1) or 1)
    check_pixel_count(path, (rows, cols), planes)


def _pixels(ds, path: Path) -> np.ndarray:
    _check_declared_size(ds, path)  # a PixelLimitError is an ImageReadError: not wrapped
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # missing decoder, truncated pixel data, bad attributes ...
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", ts)
        raise ImageReadError(
            f"{path}: cannot decode the DICOM pixel data (transfer syntax {ts_name}): {exc}"
        ) from exc


def _common_metadata(ds) -> dict:
    meta: dict[str, Any] = {}
    for key, tag in (
        ("series_instance_uid", "SeriesInstanceUID"),
        ("study_instance_uid", "StudyInstanceUID"),
        ("series_description", "SeriesDescription"),
        ("photometric_interpretation", "PhotometricInterpretation"),
        ("sop_class_uid", "SOPClassUID"),
    ):
        value = ds.get(tag)
        if value is not None:
            meta[key] = str(value)
    for key, tag in (("window_center", "WindowCenter"), ("window_width", "WindowWidth")):
        value = _first_float(ds.get(tag))
        if value is not None:
            meta[key] = value
    iop = _float_list(ds.get("ImageOrientationPatient"))
    if iop is not None and len(iop) == 6:
        meta["image_orientation_patient"] = tuple(iop)
    return meta


def _modality(ds) -> str | None:
    value = ds.get("Modality")
    return str(value).strip().upper() or None if value else None


# --------------------------------------------------------------------------- single file


def read_dicom_file(path: str | os.PathLike) -> LoadedImage:
    """Read one DICOM file.

    Args:
        path: A DICOM Part 10 file (any suffix).

    Returns:
        ``(Y, X)`` (single frame; ``(Y, X, 3)`` for colour) or ``(Z, Y, X)`` (multi-frame)
        with spacing in mm (see the module docstring), modality from the file.

    Raises:
        ImageReadError: Not DICOM, no pixel data, undecodable / truncated pixel data, or a
            multi-frame colour image.
    """
    p = Path(path)
    try:
        ds = _dcmread(p, stop_before_pixels=False)
    except Exception as exc:
        raise ImageReadError(f"{p}: not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(f"{p}: the DICOM file has no pixel data (not an image object)")
    pixels = _pixels(ds, p)
    modality = _modality(ds)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    (row_mm, col_mm), spacing_source = _pixel_spacing(ds)
    meta = _common_metadata(ds)
    meta["pixel_spacing_source"] = spacing_source
    meta["n_frames"] = n_frames

    if samples > 1:
        if n_frames > 1:
            raise ImageReadError(
                f"{p}: multi-frame colour DICOM (e.g. an ultrasound cine, shape "
                f"{pixels.shape}) is not supported; export single frames instead"
            )
        return LoadedImage(
            data=np.ascontiguousarray(pixels[..., :3]),
            spacing=(row_mm, col_mm),
            rgb=True,
            modality=modality,
            source=str(p),
            metadata=meta,
        )

    frames = pixels if n_frames > 1 else pixels[np.newaxis]
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        data = np.asarray(apply_modality_lut(frames, ds))
    else:
        rescales = _frame_rescales(ds, n_frames)
        data = _apply_rescales(frames, rescales, modality)
        if rescales[0] is not None:
            meta["rescale_slope"], meta["rescale_intercept"] = rescales[0]

    if n_frames == 1:
        return LoadedImage(
            data=np.ascontiguousarray(data[0]),
            spacing=(row_mm, col_mm),
            rgb=False,
            modality=modality,
            source=str(p),
            metadata=meta,
        )
    dz = _multiframe_slice_spacing(ds, n_frames)
    return LoadedImage(
        data=np.ascontiguousarray(data),
        spacing=(dz, row_mm, col_mm),
        rgb=False,
        modality=modality,
        source=str(p),
        metadata=meta,
    )


def _multiframe_slice_spacing(ds, n_frames: int) -> float:
    explicit = _first_float(ds.get("SpacingBetweenSlices"))
    if explicit is None:
        item = _shared_item(ds, "PixelMeasuresSequence")
        explicit = _first_float(item.get("SpacingBetweenSlices")) if item is not None else None
    if explicit is not None and explicit > 0:
        return explicit
    # Enhanced objects: per-frame positions projected on the shared slice normal.
    orient = _shared_item(ds, "PlaneOrientationSequence")
    iop = _float_list(orient.get("ImageOrientationPatient")) if orient is not None else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if iop is not None and len(iop) == 6 and per_frame and len(per_frame) == n_frames:
        normal = np.cross(iop[:3], iop[3:])
        positions = []
        for item in per_frame:
            seq = item.get("PlanePositionSequence")
            ipp = _float_list(seq[0].get("ImagePositionPatient")) if seq else None
            if ipp is None or len(ipp) != 3:
                break
            positions.append(float(np.dot(ipp, normal)))
        if len(positions) == n_frames:
            gaps = np.abs(np.diff(positions))
            if gaps.size and np.median(gaps) > _SAME_POSITION_MM:
                return float(np.median(gaps))
    return _fallback_slice_spacing(ds)


# --------------------------------------------------------------------------- series folder


def read_dicom_series(folder: str | os.PathLike) -> LoadedImage:
    """Read a folder holding one DICOM series as a ``(Z, Y, X)`` volume.

    Args:
        folder: Directory with the series' files (direct children only).

    Returns:
        ``(Z, Y, X)`` volume sorted along the slice normal, spacing ``(dz, dy, dx)`` in mm,
        CT in HU (float32). See the module docstring for series selection and metadata.

    Raises:
        ImageReadError: No DICOM image files, inconsistent slices (size, orientation,
            duplicate positions), an undecodable slice, or an unsupported layout.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageReadError(f"{root}: not a directory")
    headers: list[tuple[Path, Any]] = []
    ignored = 0
    for entry in sorted(root.iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        # Cheap sniff first: most non-DICOM files (PNG, txt ...) are skipped without parsing.
        if not has_dicom_magic(entry) and path_suffix(entry) not in DICOM_SUFFIXES:
            ignored += 1
            continue
        try:
            ds = _dcmread(entry, stop_before_pixels=True)
        except Exception:  # not DICOM after all (forced parses of junk fail in many ways)
            ignored += 1
            continue
        if "Rows" not in ds or "Columns" not in ds:  # DICOMDIR, SR, presentation state ...
            ignored += 1
            continue
        headers.append((entry, ds))
    if not headers:
        raise ImageReadError(f"{root}: the folder contains no DICOM image files")

    by_series: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for entry, ds in headers:
        by_series[str(ds.get("SeriesInstanceUID", ""))].append((entry, ds))
    chosen_uid = sorted(by_series, key=lambda uid: (-len(by_series[uid]), uid))[0]
    members = by_series[chosen_uid]

    if len(members) == 1:
        # One file (possibly multi-frame): read it whole, but present it as a volume.
        image = read_dicom_file(members[0][0])
        if image.rgb:
            raise ImageReadError(f"{root}: colour (RGB) DICOM series are not supported")
        if image.data.ndim == 2:
            image.data = image.data[np.newaxis]
            image.spacing = (_fallback_slice_spacing(members[0][1]),) + tuple(image.spacing)
        image.source = str(root)
        image.metadata.update(_series_extras(root, by_series, chosen_uid, ignored, members))
        return image
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in members):
        raise ImageReadError(
            f"{root}: series {chosen_uid} mixes several multi-frame files; not supported"
        )
    return _read_single_frame_series(root, members, by_series, chosen_uid, ignored)


def _series_extras(root, by_series, chosen_uid, ignored, members) -> dict:
    extras: dict[str, Any] = {
        "n_files": len(members),
        "files": [e.name for e, _ in members],
        "ignored_files": ignored,
    }
    others = {uid: len(v) for uid, v in by_series.items() if uid != chosen_uid}
    if others:
        extras["other_series"] = others
    return extras


def _read_single_frame_series(
    root: Path, members: list[tuple[Path, Any]], by_series, chosen_uid: str, ignored: int
) -> LoadedImage:
    # ---- geometry checks on headers only (cheap), before decoding any pixels
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in members}
    if len(shapes) > 1:
        raise ImageReadError(
            f"{root}: slices of series {chosen_uid} have different sizes {sorted(shapes)}"
        )
    if any(int(ds.get("SamplesPerPixel", 1) or 1) > 1 for _, ds in members):
        raise ImageReadError(f"{root}: colour (RGB) DICOM series are not supported")
    _check_declared_size(members[0][1], root, planes=len(members))

    iops = [_float_list(ds.get("ImageOrientationPatient")) for _, ds in members]
    ipps = [_float_list(ds.get("ImagePositionPatient")) for _, ds in members]
    have_geometry = all(o is not None and len(o) == 6 for o in iops) and all(
        q is not None and len(q) == 3 for q in ipps
    )
    first_ds = members[0][1]
    affine = None
    if have_geometry:
        iop_arr = np.asarray(iops, dtype=float)
        if not np.allclose(iop_arr, iop_arr[0], atol=1e-4):
            raise ImageReadError(
                f"{root}: slices of series {chosen_uid} have different ImageOrientationPatient "
                "(e.g. a localizer mixed in); cannot stack them"
            )
        row_cos, col_cos = iop_arr[0, :3], iop_arr[0, 3:]
        normal = np.cross(row_cos, col_cos)
        along = np.asarray(ipps, dtype=float) @ normal
        order = np.argsort(along, kind="stable")
        along = along[order]
        gaps = np.diff(along)
        if gaps.size and gaps.min() < _SAME_POSITION_MM:
            i = int(np.argmin(gaps))
            a, b = members[order[i]][0].name, members[order[i + 1]][0].name
            raise ImageReadError(
                f"{root}: files {a} and {b} of series {chosen_uid} are at the same position "
                "(several acquisitions, echoes or time points in one series?)"
            )
        dz = float(np.median(gaps)) if gaps.size else _fallback_slice_spacing(first_ds)
        uniform = bool(gaps.size == 0 or np.all(np.abs(gaps - dz) <= _UNIFORM_REL_TOL * dz))
        slice_order = "ImagePositionPatient"
    else:
        numbers = [ds.get("InstanceNumber") for _, ds in members]
        keys = [(0, int(n), i) if n is not None else (1, 0, i) for i, n in enumerate(numbers)]
        order = np.asarray(sorted(range(len(members)), key=lambda i: keys[i]))
        dz = _fallback_slice_spacing(first_ds)
        uniform = True
        slice_order = "InstanceNumber"

    members = [members[i] for i in order]
    (row_mm, col_mm), spacing_source = _pixel_spacing(first_ds)

    # ---- decode pixels in sorted order
    slices, rescales, modality = [], [], _modality(first_ds)
    for entry, _ in members:
        try:
            ds = _dcmread(entry, stop_before_pixels=False)
        except Exception as exc:
            raise ImageReadError(
                f"{entry}: DICOM file of the series cannot be read ({exc})"
            ) from exc
        arr = _pixels(ds, entry)
        if arr.ndim != 2:
            raise ImageReadError(f"{entry}: expected a single-frame gray slice, got {arr.shape}")
        if ds.get("ModalityLUTSequence"):
            from pydicom.pixels import apply_modality_lut

            arr = np.asarray(apply_modality_lut(arr, ds))
            rescales.append(None)
        else:
            rescales.append(_rescale(ds))
        slices.append(arr)
    if len({a.dtype for a in slices}) > 1:
        slices = [a.astype(np.float64) for a in slices]
    data = _apply_rescales(np.stack(slices), rescales, modality)

    meta = _common_metadata(first_ds)
    meta.update(
        pixel_spacing_source=spacing_source,
        slice_order=slice_order,
        slice_spacing_uniform=uniform,
    )
    if rescales[0] is not None:
        meta["rescale_slope"], meta["rescale_intercept"] = rescales[0]
    if have_geometry:
        first_ipp = np.asarray(_float_list(members[0][1].ImagePositionPatient))
        last_ipp = np.asarray(_float_list(members[-1][1].ImagePositionPatient))
        # z step as the real vector between first and last slice: keeps gantry tilt.
        z_step = (last_ipp - first_ipp) / (len(members) - 1) if len(members) > 1 else normal * dz
        affine = np.eye(4)
        affine[:3, 0] = z_step
        affine[:3, 1] = col_cos * row_mm  # +y (next row) moves along the column cosine
        affine[:3, 2] = row_cos * col_mm  # +x (next column) moves along the row cosine
        affine[:3, 3] = first_ipp
        meta["image_position_patient"] = tuple(float(v) for v in first_ipp)
        meta["affine_lps"] = affine
    meta.update(_series_extras(root, by_series, chosen_uid, ignored, members))
    return LoadedImage(
        data=np.ascontiguousarray(data),
        spacing=(dz, row_mm, col_mm),
        rgb=False,
        modality=modality,
        source=str(root),
        metadata=meta,
    )
