"""Fault and abuse tests of the project store through the CLI: malicious image names,
corrupt, empty, read-only, unopenable and full databases. Each must end in one ``error:``
line and exit code 2 (or a refusal), never a traceback, and change nothing."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core.store import ProjectStore, import_folder
from napari_lesion_diffkd.core.store import project as project_module
from napari_lesion_diffkd.core.store import schema
from napari_lesion_diffkd.core.store.errors import StoreReadOnlyError
from napari_lesion_diffkd.core.store.schema import DB_NAME

#: Every project command a user can type (read-only and writing ones).
COMMANDS = [["job", "list"], ["job", "submit", "predict", "--config", '{"model": "m"}'],
            ["job", "run", "1"], ["job", "cancel", "1"], ["project", "check"],
            ["project", "cleanup", "--min-age", "0"]]


@pytest.fixture()
def store_dir(tmp_path: Path, ph2_subset: Path) -> Path:
    """A closed project with 12 real PH2 images and labels, one queued job."""
    with ProjectStore.create(tmp_path / "project") as store:
        import_folder(store, ph2_subset, modality="dermoscopy")
        store.jobs.submit("predict", {"model": "m"})
    return tmp_path / "project"


def digest(folder: Path) -> str:
    """SHA-256 over every file of the folder (names and bytes) except the SQLite sidecars."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.endswith(("-wal", "-shm")):
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def run_all(capsys: pytest.CaptureFixture[str], root: Path, commands=COMMANDS) -> list[str]:
    """Run each command; each must exit 2 with one error line. Returns the error lines."""
    lines = []
    for argv in commands:
        code = main([*argv, "--project", str(root)])
        out, err = capsys.readouterr()
        assert code == 2, (argv, code, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert "Traceback" not in out + err
        lines.append(err)
    return lines


def test_a_corrupt_database_is_one_error_line_everywhere(
        store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = store_dir / DB_NAME
    data = bytearray(db.read_bytes())
    data[100:400] = b"\xa5" * 300  # page 1's b-tree header: "database disk image is malformed"
    db.write_bytes(bytes(data))
    before = digest(store_dir)
    lines = run_all(capsys, store_dir)
    assert all("damaged" in line for line in lines), lines
    assert digest(store_dir) == before


def test_a_corrupt_table_page_is_one_error_line(
        store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(store_dir / DB_NAME) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'"
                            ).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    db = store_dir / DB_NAME
    data = bytearray(db.read_bytes())
    start = (page - 1) * size
    data[start:start + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    lines = run_all(capsys, store_dir, [["job", "list"], ["job", "run", "1"]])
    assert all("damaged" in line for line in lines), lines


def test_a_read_only_database_is_one_error_line_and_unchanged(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Tests run as root, which chmod cannot stop: SQLite's own read-only mode (mode=ro)
    # gives the real SQLITE_READONLY that a read-only file, mount or disk gives.
    def read_only(db_path, readonly=False, **kwargs):
        return schema.connect(db_path, readonly=True, **kwargs)

    monkeypatch.setattr(project_module, "connect", read_only)
    before = digest(store_dir)
    writing = [["job", "submit", "predict", "--config", '{"model": "m"}'],
               ["job", "run", "1"], ["job", "cancel", "1"]]
    lines = run_all(capsys, store_dir, writing)
    assert all("read-only" in line for line in lines), lines
    # Reading still works on a read-only store.
    assert main(["project", "check", "--project", str(store_dir)]) == 0
    capsys.readouterr()
    with ProjectStore(store_dir) as store, pytest.raises(StoreReadOnlyError) as info:
        store.save_label(store.images()[0], store.read_label(store.label_versions()[0]))
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert info.value.__cause__.sqlite_errorname == "SQLITE_READONLY"  # the real path
    assert digest(store_dir) == before  # the refused label file was removed too


def test_an_unopenable_database_is_one_error_line(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(schema.sqlite3, "connect", refuse)
    lines = run_all(capsys, store_dir)
    assert all("cannot open the project database" in line for line in lines), lines


def test_a_full_disk_is_one_error_line_for_writing_commands(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    real = schema.connect

    def full(*args, **kwargs):  # SQLite's real SQLITE_FULL: no page may be added
        conn = real(*args, **kwargs)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(project_module, "connect", full)
    big = '{"model": "m", "note": "%s"}' % ("x" * 20_000)  # needs new pages
    lines = run_all(capsys, store_dir, [["job", "submit", "predict", "--config", big]])
    assert lines[0].startswith("error: disk full:")
    monkeypatch.undo()
    with ProjectStore(store_dir) as store:
        assert len(store.jobs.list()) == 1


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "..", "sub/dir", "a\\b"])
def test_a_malicious_name_never_reaches_the_disk(
        store_dir: Path, tmp_path: Path, name: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from napari_lesion_diffkd.core.store import InvalidInputError

    with ProjectStore(store_dir) as store:
        image = store.images()[0]
        with pytest.raises(InvalidInputError):
            store.add_image(image.path, name=name)
        with store.write() as conn:  # as if edited by hand: the export still refuses
            conn.execute("UPDATE images SET name = ? WHERE id = ?", (name, image.id))
    out = tmp_path / "a" / "b" / "export"
    before = sorted(p for p in tmp_path.rglob("*") if "project" not in p.parts)
    code = main(["project", "export", "--project", str(store_dir), "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: refusing to write") and err.count("\n") == 1
    after = sorted(p for p in tmp_path.rglob("*") if "project" not in p.parts)
    assert [p for p in after if p not in before and out not in (p, *p.parents)] == []
