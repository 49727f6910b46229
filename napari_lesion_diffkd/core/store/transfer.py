"""Import a plain image/mask folder into a project, export labels back to plain folders.

Plain folder layout (the datasets' own, what ``lesion-diffkd train --data`` reads)::

    <folder>/images/<id>.<png|jpg|...|nii.gz>
    <folder>/masks/<id>.png        2D: {0, 255} for a lesion mask, else label ids
    <folder>/masks/<id>.nii.gz     3D: label ids, (Z, Y, X) as NIfTI with spacing
    <folder>/metadata.csv          optional: id,group

Import is all-or-nothing by default: every image and mask is read and checked first, and
one transaction then adds all rows; any problem raises :class:`InvalidInputError` listing
them, with the project unchanged. ``skip_invalid=True`` imports the good pairs and reports
the rest. Re-importing is harmless: known images are matched by name and content, and a
mask equal to the image's newest human label adds no version.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from napari_lesion_diffkd.core.data.writers import atomic_write
from napari_lesion_diffkd.core.store.errors import InvalidInputError
from napari_lesion_diffkd.core.store.names import (
    check_image_name,
    child_file,
    image_name_problem,
)
from napari_lesion_diffkd.core.store.records import HUMAN_KINDS

if TYPE_CHECKING:
    import sqlite3

    from napari_lesion_diffkd.core.store.project import ProjectStore
    from napari_lesion_diffkd.core.store.records import ImageRecord, LabelVersion

_MASK_SUFFIXES = (".png", ".nii.gz", ".nii", ".tif", ".tiff")


@dataclass
class ImportReport:
    """What :func:`import_folder` / :func:`import_image` did. ``skipped``: (path, reason) of
    refused files; ``known_names``: images that were already in the project (same name and
    content), so nothing was added for them."""

    images_added: int = 0
    images_known: int = 0
    labels_added: int = 0
    labels_unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    known_names: list[str] = field(default_factory=list)

    def add(self, other: ImportReport) -> ImportReport:
        """Add another report's counts and lists to this one (several paths, one report)."""
        self.images_added += other.images_added
        self.images_known += other.images_known
        self.labels_added += other.labels_added
        self.labels_unchanged += other.labels_unchanged
        self.skipped += other.skipped
        self.known_names += other.known_names
        return self

    def summary(self, names: int = 5) -> str:
        """One line: what was added, which duplicates were skipped (up to ``names`` named)
        and how many files were refused."""
        def plural(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        if self.images_added or self.labels_added:
            parts = [f"imported {plural(self.images_added, 'image')} and "
                     f"{plural(self.labels_added, 'label')}"]
        else:
            parts = ["nothing new imported"]
        if self.images_known:
            listed = ", ".join(self.known_names[:names])
            more = f" and {self.images_known - names} more" if self.images_known > names else ""
            parts.append(f"{plural(self.images_known, 'image')} already in the project "
                         f"skipped ({listed}{more})")
        if self.labels_unchanged:
            parts.append(f"{plural(self.labels_unchanged, 'label')} unchanged")
        if self.skipped:
            parts.append(f"{plural(len(self.skipped), 'file')} refused "
                         f"({self.skipped[0][1].splitlines()[0]}"
                         + (", ..." if len(self.skipped) > 1 else "") + ")")
        return "; ".join(parts)


def _groups(folder: Path) -> dict[str, str]:
    meta = folder / "metadata.csv"
    if not meta.is_file():
        return {}
    with meta.open(newline="") as fh:
        return {r["id"]: r.get("group") or r["id"] for r in csv.DictReader(fh) if r.get("id")}


def _find_mask(masks_dir: Path | None, stem: str) -> Path | None:
    if masks_dir is None:
        return None
    for suffix in _MASK_SUFFIXES:
        if (masks_dir / f"{stem}{suffix}").is_file():
            return masks_dir / f"{stem}{suffix}"
    return None


def import_folder(store: ProjectStore, folder: str | os.PathLike,
                  masks: str | os.PathLike | None = None, modality: str | None = None,
                  author: str = "import", skip_invalid: bool = False) -> ImportReport:
    """Add a folder's images, and its masks as ``human`` label versions.

    Args:
        folder: a dataset folder (``images/`` + optional ``masks/``), or a flat folder of
            images.
        masks: mask folder for a flat image folder (default: ``<folder>/masks`` if any).
        modality: recorded for every image (e.g. ``"dermoscopy"``).
        author: recorded on the imported labels.
        skip_invalid: import what is valid and report the rest instead of refusing all.

    Raises:
        InvalidInputError: a missing / corrupt image or a bad mask (without
            ``skip_invalid``); nothing is changed.
        StoreWriteError: a file or the transaction could not be written; nothing is changed.
    """
    from napari_lesion_diffkd.core.data.readers import SUPPORTED_SUFFIXES, path_suffix
    from napari_lesion_diffkd.core.data.readers import output_stem
    from napari_lesion_diffkd.core.store.validate import inspect_image, read_mask_file

    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"{root}: no such folder")
    images_dir = root / "images" if (root / "images").is_dir() else root
    masks_dir = Path(masks) if masks else (root / "masks" if (root / "masks").is_dir() else None)
    groups = _groups(root)
    paths = sorted(p for p in images_dir.iterdir()
                   if not p.name.startswith(".") and path_suffix(p) in SUPPORTED_SUFFIXES)
    if not paths:
        raise InvalidInputError(f"{images_dir}: no images found")

    report, staged, written, problems = ImportReport(), [], [], []
    try:
        for path in paths:  # phase 1: read and check everything, write new label files
            stem = output_stem(path)
            try:
                check_image_name(stem)
                info = inspect_image(path, modality)
                mask_path = _find_mask(masks_dir, stem)
                labels = None if mask_path is None else read_mask_file(
                    mask_path, info.shape, f"mask for {stem}")
            except InvalidInputError as exc:
                problems.append((str(path), str(exc)))
                continue
            label_file = None
            if labels is not None:
                label_file = store.write_label_file(labels, info.spacing, stem)
                written.append(store.root / label_file[0])
            staged.append((stem, info, label_file))
        if problems and not skip_invalid:
            listed = "\n  ".join(reason for _, reason in problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise InvalidInputError(f"import of {root} refused, nothing was changed; "
                                    f"{len(problems)} problem(s):\n  {listed}{more}")
        report.skipped = problems
        unchanged = []
        with store.write() as conn:  # phase 2: every row in one short transaction
            for stem, info, label_file in staged:
                known = conn.execute("SELECT id FROM images WHERE name = ?",
                                     (stem,)).fetchone()
                image_id = store.insert_image(conn, info, stem, groups.get(stem))
                report.images_known += known is not None
                report.images_added += known is None
                if known is not None:
                    report.known_names.append(stem)
                if label_file is None:
                    continue
                rel, digest = label_file
                if _current_human_sha(conn, image_id) == digest:  # same content, same bytes
                    unchanged.append(store.root / rel)
                    continue
                store.insert_label(conn, image_id, rel, digest, kind="human", author=author,
                                   note=f"imported from {root}")
                report.labels_added += 1
        report.labels_unchanged = len(unchanged)
        for path in unchanged:
            path.unlink(missing_ok=True)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return report


def import_image(store: ProjectStore, path: str | os.PathLike,
                 modality: str | None = None) -> ImportReport:
    """Add one image file (or DICOM series folder) like ``ProjectStore.add_image``, and say
    whether it was added or was already in the project (same name and content).

    Raises:
        InvalidInputError: missing / corrupt image, or its name is used by other content.
    """
    from napari_lesion_diffkd.core.data.readers import output_stem
    from napari_lesion_diffkd.core.store.validate import inspect_image

    info = inspect_image(path, modality)
    name = check_image_name(output_stem(info.path))
    report = ImportReport()
    with store.write() as conn:
        known = conn.execute("SELECT id FROM images WHERE name = ? AND sha256 = ?",
                             (name, info.sha256)).fetchone()
        store.insert_image(conn, info, name)
    if known is None:
        report.images_added = 1
    else:
        report.images_known = 1
        report.known_names.append(name)
    return report


def _current_human_sha(conn: sqlite3.Connection, image_id: int) -> str | None:
    row = conn.execute(
        f"SELECT sha256 FROM label_versions WHERE image_id = ? AND kind IN {HUMAN_KINDS!r} "
        "ORDER BY id DESC LIMIT 1", (image_id,)).fetchone()
    return None if row is None else str(row[0])


#: Written by :func:`export_labels` into the export folder: the files the export owns.
MANIFEST = ".lesion-diffkd-export.json"


def export_labels(store: ProjectStore, out_dir: str | os.PathLike,
                  which: Literal["current", "human"] = "current",
                  images: Literal["link", "copy", "none"] = "link",
                  binary: bool = True, overwrite: bool = False) -> int:
    """Write each labelled image's label as a plain dataset folder (see module docstring).

    Args:
        out_dir: created if needed; it must be empty or missing unless ``overwrite``.
        which: ``current`` (the current label, any kind) or ``human`` (the newest human /
            sam-assisted version; images without one are left out).
        images: put the images next to the masks as symlinks, copies, or not at all.
        binary: 2D masks as {0, 255} (lesion = any label > 0), the datasets' format; False
            keeps the label ids. 3D labels are always written as ids in NIfTI.
        overwrite: replace an earlier export in ``out_dir``: the files its manifest
            (``.lesion-diffkd-export.json``) lists are removed first (so no stale mask of
            an earlier export stays), files of the same names are replaced, and nothing
            else in the folder is touched.

    Returns:
        The number of exported masks.

    Raises:
        InvalidInputError: ``out_dir`` is not empty (without ``overwrite``) or not a folder,
            or an image name would write outside it (nothing is written then).
    """
    from napari_lesion_diffkd.core.data.writers import write_labels_nifti, write_mask_png

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"export: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InvalidInputError(f"export: {out} is not empty; choose an empty folder or "
                                "overwrite (--overwrite) to replace an earlier export")
    plan = _export_plan(store, out, which, images != "none")  # checks every name first
    owned = _owned_files(out) if overwrite else set()
    planned = {"metadata.csv"} | {p.relative_to(out).as_posix()
                                  for _, _, mask, image in plan for p in (mask, image) if p}
    # Crash-safe order: the manifest covers old and new files while both may be present.
    _write_manifest(out, owned | planned)
    for rel in sorted(owned - planned):
        (out / rel).unlink(missing_ok=True)  # a symlink itself, never its target
    rows = [("id", "group")]
    for image, version, mask_path, image_dest in plan:
        labels = store.read_label(version)
        if labels.ndim == 2:
            write_mask_png(mask_path, labels, binary=binary)
        else:
            write_labels_nifti(mask_path, labels, spacing=image.spacing)
        if image_dest is not None:
            _place_image(image.path, image_dest, images == "link")
        rows.append((image.name, image.group or image.name))

    def _write_csv(fh: BinaryIO) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)  # quotes commas, newlines
        fh.write(text.getvalue().encode())

    atomic_write(out / "metadata.csv", _write_csv)
    _write_manifest(out, planned)
    return len(plan)


def _export_plan(store: ProjectStore, out: Path, which: str, with_images: bool) -> list[
        tuple[ImageRecord, LabelVersion, Path, Path | None]]:
    """(image, version, mask destination, image destination or None) per exported image;
    every destination checked to stay inside ``out`` (:func:`names.child_file`)."""
    from napari_lesion_diffkd.core.data.readers import path_suffix

    plan = []
    for image in store.images():
        if which == "human":
            versions = [v for v in store.label_versions(image) if v.kind in HUMAN_KINDS]
            version = versions[-1] if versions else None
        else:
            version = store.current_label(image)
        if version is None:
            continue
        suffix = ".png" if len(image.shape) == 2 else ".nii.gz"
        mask = child_file(out / "masks", f"{image.name}{suffix}", root=out)
        dest = None
        if with_images and image.path.is_file():
            dest = child_file(out / "images", f"{image.name}{path_suffix(image.path)}",
                              root=out)
        plan.append((image, version, mask, dest))
    return plan


def _owned_files(out: Path) -> set[str]:
    """Files an earlier export listed in its manifest (only ``metadata.csv`` and single
    files directly in ``masks/`` / ``images/``: a tampered manifest cannot name others)."""
    path = out / MANIFEST
    if not path.is_file():
        return set()
    try:
        listed = json.loads(path.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    owned = set()
    for rel in listed if isinstance(listed, list) else []:
        parts = str(rel).split("/")
        if parts == ["metadata.csv"] or (
                len(parts) == 2 and parts[0] in ("masks", "images")
                and image_name_problem(parts[1]) is None):
            owned.add("/".join(parts))
    return owned


def _write_manifest(out: Path, owned: set[str]) -> None:
    text = json.dumps({"written_by": "napari-lesion-diffkd export_labels",
                       "files": sorted(owned)}, indent=1) + "\n"

    def _write(fh: BinaryIO) -> None:
        fh.write(text.encode())

    atomic_write(out / MANIFEST, _write)


def _place_image(src: Path, dest: Path, link: bool) -> None:
    """Symlink (falling back to a copy) or copy ``src`` to ``dest``, replacing atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        tmp = dest.with_name(f".{dest.name}.link.tmp")
        tmp.unlink(missing_ok=True)
        try:
            tmp.symlink_to(src.resolve())
            os.replace(tmp, dest)
            return
        except OSError:
            tmp.unlink(missing_ok=True)  # no symlinks here (e.g. Windows): copy instead

    def _copy(fh: BinaryIO) -> None:
        with src.open("rb") as source:
            shutil.copyfileobj(source, fh)

    atomic_write(dest, _copy)


__all__ = ["MANIFEST", "ImportReport", "export_labels", "import_folder"]
