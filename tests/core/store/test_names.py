"""Image names are one safe file-name component: refused at entry, re-checked at write time,
and unsafe names of old projects are renamed by migration 4 (finding 1: path traversal)."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_lesion_diffkd.core.store import (
    InvalidInputError,
    ProjectStore,
    export_labels,
    import_folder,
)
from napari_lesion_diffkd.core.store.names import image_name_problem, safe_image_name
from napari_lesion_diffkd.core.store.schema import DB_NAME, SCHEMA_VERSION, connect, migrate

#: Names that would leave the export folder, hide, or break the file system.
BAD_NAMES = ["../evil", "../../../tmp/evil", "a/b", "/etc/passwd", "..", ".", "a\\b",
             "C:evil", "nul\x00byte", "line\nbreak", "tab\there", ".hidden", " padded",
             "x" * 201]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_add_image_refuses_an_unsafe_name(project: ProjectStore, ph2_folder: Path,
                                          name: str) -> None:
    before = len(project.images())
    image = sorted((ph2_folder / "images").iterdir())[0]
    with pytest.raises(InvalidInputError, match="image name .* refused"):
        project.add_image(image, name=name)
    assert len(project.images()) == before


def test_good_names_pass() -> None:
    for name in ("IMD002", "case 7 (left)", "ISIC_0000001", "a..b", "über-scan", "x" * 200):
        assert image_name_problem(name) is None, name


def test_import_skips_a_file_with_an_unsafe_name(tmp_path: Path, ph2_folder: Path) -> None:
    images = sorted((ph2_folder / "images").iterdir())
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / images[0].name).symlink_to(images[0].resolve())
    (flat / "bad\nname.jpg").symlink_to(images[1].resolve())
    with ProjectStore.create(tmp_path / "p") as store:
        with pytest.raises(InvalidInputError, match="refused"):
            import_folder(store, flat)
        assert store.images() == []
        report = import_folder(store, flat, skip_invalid=True)
        assert report.images_added == 1 and len(report.skipped) == 1
        assert [i.name for i in store.images()] == [images[0].stem]


def test_export_refuses_a_name_that_would_leave_the_folder(project: ProjectStore,
                                                          tmp_path: Path) -> None:
    # A name edited into the database by hand (or by an old release) bypasses add_image:
    # the write-time check still keeps every file inside the export folder.
    with project.write() as conn:
        conn.execute("UPDATE images SET name = '../../victim' WHERE id = 1")
    out = tmp_path / "deep" / "export"
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    with pytest.raises(InvalidInputError, match="refusing to write"):
        export_labels(project, out)
    assert victim.read_bytes() == b"precious"
    assert not out.exists() or not any(out.rglob("*.png"))


def test_export_refuses_a_planted_masks_symlink(project: ProjectStore, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "masks").symlink_to(elsewhere)
    with pytest.raises(InvalidInputError, match="outside"):
        export_labels(project, out, overwrite=True)
    assert list(elsewhere.iterdir()) == []


def _old_project(folder: Path, image: Path, names: list[str]) -> None:
    """A schema-3 database (the release before safe names) holding ``names``."""
    folder.mkdir()
    conn = connect(folder / DB_NAME)
    assert migrate(conn, target=3) == 3
    for name in names:
        conn.execute("INSERT INTO images (name, path, modality, sha256, shape, channels, "
                     "spacing, grp, added_at) VALUES (?, ?, 'dermoscopy', 'ff', '[383, 512]',"
                     " 3, '[1.0, 1.0]', ?, 't')", (name, str(image), name))
    conn.close()


def test_migration_renames_unsafe_names_deterministically(tmp_path: Path,
                                                          ph2_subset: Path) -> None:
    image = min((ph2_subset / "images").iterdir()).resolve()
    names = ["ok", "../../evil", "a/b", "a_b", "/abs/x", "..", "ctl\x01", "evil"]
    _old_project(tmp_path / "one", image, names)
    _old_project(tmp_path / "two", image, names)
    results = []
    for folder in ("one", "two"):
        with ProjectStore(tmp_path / folder) as store:
            assert store.schema_version == SCHEMA_VERSION
            got = [i.name for i in store.images()]
            renames = store.conn.execute("SELECT image_id, old_name, new_name FROM "
                                         "image_renames ORDER BY id").fetchall()
            results.append((got, [tuple(r) for r in renames]))
            assert all(image_name_problem(n) is None for n in got), got
            assert len(set(got)) == len(got)
            # Safe names stay; the renamed ones keep their readable part.
            assert got[0] == "ok" and got[3] == "a_b" and got[7] == "evil"
            assert got[1].startswith("_.._evil") and got[2] == "a_b-3"
            assert {r[1] for r in renames} == {"../../evil", "a/b", "/abs/x", "..", "ctl\x01"}
            assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert results[0] == results[1]  # deterministic


def test_safe_image_name_is_unique_and_valid() -> None:
    taken = {"a_b", "a_b-2"}
    name = safe_image_name("a/b", taken, 2)
    assert name not in taken and image_name_problem(name) is None
    assert safe_image_name("", set(), 9) == "image-9"
