"""Bad input and failing disks are refused with a clear error and change nothing: the
previous label stays intact, no row and no file is left half-made."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from napari_lesion_diffkd.core.store import (
    InvalidInputError,
    ProjectStore,
    StoreError,
    StoreWriteError,
    import_folder,
)


def _snapshot(store: ProjectStore) -> tuple:
    """Everything a failed call must leave unchanged: rows and files."""
    rows = tuple(tuple(tuple(r) for r in store.conn.execute(f"SELECT * FROM {t} ORDER BY id"))
                 for t in ("images", "label_versions", "predictions"))
    files = sorted(p.relative_to(store.root).as_posix()
                   for p in store.root.rglob("*") if p.is_file() and "sqlite" not in p.name)
    return rows, tuple(files)


def test_corrupt_or_missing_images_are_refused(project: ProjectStore, tmp_path: Path,
                                               ph2_subset: Path) -> None:
    before = _snapshot(project)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    real = min((ph2_subset / "images").iterdir()).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(real[: len(real) // 3])
    with pytest.raises(InvalidInputError, match="garbage.png"):
        project.add_image(garbage)
    with pytest.raises(InvalidInputError, match="truncated"):
        project.add_image(truncated)
    with pytest.raises(InvalidInputError, match="not found"):
        project.add_image(tmp_path / "missing.png")
    # A name already used for other pixels is a conflict, not a silent overwrite.
    other = max((ph2_subset / "images").iterdir())
    with pytest.raises(InvalidInputError, match="already used"):
        project.add_image(other, name=project.images()[0].name)
    assert _snapshot(project) == before


@pytest.mark.parametrize("case", ["size", "volume", "float", "negative", "too-large"])
def test_bad_masks_are_refused(project: ProjectStore, case: str) -> None:
    image = project.images()[0]
    good = project.read_label(project.current_label(image))
    bad = {"size": good[:-1], "volume": good[None], "float": good.astype(np.float32),
           "negative": good.astype(np.int16) - 1,
           "too-large": good.astype(np.int32) * 70000}[case]
    before = _snapshot(project)
    with pytest.raises(InvalidInputError, match=repr(image.name)):
        project.save_label(image, bad)
    assert _snapshot(project) == before
    with pytest.raises(InvalidInputError, match="unknown label kind"):
        project.save_label(image, good, kind="guess")


def test_an_import_with_one_bad_mask_changes_nothing(tmp_path: Path, ph2_folder: Path) -> None:
    from PIL import Image

    masks = sorted((ph2_folder / "masks").iterdir())
    real = np.asarray(Image.open(masks[1]))
    masks[1].unlink()  # (a symlink to the shared data)
    Image.fromarray(real[:100]).save(masks[1])  # wrong size
    masks[2].unlink()
    masks[2].write_bytes(b"\x89PNG broken")  # corrupt
    with ProjectStore.create(tmp_path / "p") as store:
        before = _snapshot(store)
        with pytest.raises(InvalidInputError) as info:
            import_folder(store, ph2_folder)
        message = str(info.value)
        assert "nothing was changed" in message and "2 problem" in message
        assert masks[1].stem in message and "does not match" in message
        assert _snapshot(store) == before
        report = import_folder(store, ph2_folder, skip_invalid=True)
        assert len(report.skipped) == 2 and report.images_added == 6
        assert store.check().ok


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_full_disk_keeps_the_previous_label(project: ProjectStore, failing: str,
                                              ph2_folder: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    image = project.images()[0]
    previous = project.current_label(image)
    content = project.read_label(previous)
    before = _snapshot(project)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, failing, full)
        with pytest.raises(StoreWriteError, match="disk is full"):
            project.save_label(image, 1 - content)
        with pytest.raises(StoreWriteError, match="disk is full"):
            import_folder(project, ph2_folder)
    assert _snapshot(project) == before
    assert project.current_label(image) == previous
    np.testing.assert_array_equal(project.read_label(previous), content)
    report = project.check()
    assert report.ok and not report.orphan_files and not report.temp_files


def test_a_failing_commit_leaves_no_file(project: ProjectStore,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    image = project.images()[0]
    before = _snapshot(project)

    def fail(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ProjectStore, "insert_label", fail)
    with pytest.raises(StoreWriteError, match="nothing was changed"):
        project.save_label(image, np.zeros(image.shape, bool))
    assert _snapshot(project) == before
    assert not project.conn.in_transaction


def test_missing_and_damaged_files_are_reported(project: ProjectStore) -> None:
    versions = project.label_versions()
    versions[0].file.unlink()
    versions[1].file.write_bytes(versions[2].file.read_bytes())  # edited behind our back
    with pytest.raises(StoreError, match="missing"):
        project.read_label(versions[0])
    with pytest.raises(StoreError, match="damaged"):
        project.read_label(versions[1])
    report = project.check()
    assert not report.ok and report.integrity == ["ok"]
    assert report.missing_files == [project.relative(versions[0].file)]
    assert report.damaged_files == [project.relative(versions[1].file)]
    with pytest.raises(InvalidInputError, match="no image"):
        project.image("nope")
