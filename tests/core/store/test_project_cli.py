"""``lesion-diffkd project check|cleanup|export`` and what they guard: an empty or foreign
database is refused (never re-created), cleanup runs only on a healthy store, export does not
mix an earlier export's stale masks with new ones (findings 2, 9, 10)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core.store import ProjectStore, StoreError, export_labels
from napari_lesion_diffkd.core.store.errors import StoreCorruptError, UnhealthyStoreError
from napari_lesion_diffkd.core.store.schema import DB_NAME


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def label_files(root: Path) -> set[Path]:
    return {p for p in (root / "labels").rglob("*") if p.is_file()}


def test_check_and_cleanup_on_a_healthy_store(project: ProjectStore,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    orphan = project.root / "labels" / "zz" / "zzzz.png"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left by a killed save")
    root = str(project.root)
    code, out, _ = cli(capsys, "project", "check", "--project", root)
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["orphan_files"] == ["labels/zz/zzzz.png"]
    code, out, _ = cli(capsys, "project", "cleanup", "--project", root, "--min-age", "0")
    assert code == 0 and json.loads(out)["files"] == ["labels/zz/zzzz.png"]
    assert not orphan.exists() and len(label_files(project.root)) == 6


def test_check_fails_and_cleanup_refuses_a_damaged_store(
        project: ProjectStore, capsys: pytest.CaptureFixture[str]) -> None:
    victim = project.label_versions()[0].file
    victim.unlink()  # an indexed file deleted by hand
    orphan = project.root / "labels" / "zz" / "zzzz.png"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    root = str(project.root)
    code, out, _ = cli(capsys, "project", "check", "--project", root)
    report = json.loads(out)
    assert code == 1 and not report["ok"] and "missing" in report["problems"][0]
    code, out, err = cli(capsys, "project", "cleanup", "--project", root, "--min-age", "0")
    assert code == 1 and out == "" and "cleanup refused" in err and err.count("\n") == 1
    assert orphan.exists()
    with pytest.raises(UnhealthyStoreError):
        project.cleanup(min_age_s=0)
    assert orphan.exists()


def test_cleanup_refuses_a_database_that_references_nothing(
        project: ProjectStore, tmp_path: Path) -> None:
    # The labels of a project whose database was replaced by an empty one (e.g. restored
    # from the wrong backup): every file looks like an orphan; none may be deleted.
    files = label_files(project.root)
    project.close()
    (project.root / DB_NAME).unlink()
    with ProjectStore.create(project.root) as fresh:
        assert fresh.check().ok
        with pytest.raises(UnhealthyStoreError, match="references no file"):
            fresh.cleanup(min_age_s=0)
    assert label_files(project.root) == files


@pytest.mark.parametrize("content", [b"", b"not a database at all\n" * 50])
def test_an_empty_or_foreign_file_is_refused_never_recreated(
        project: ProjectStore, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    files = label_files(project.root)
    project.close()
    db = project.root / DB_NAME
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.write_bytes(content)
    for opener in (ProjectStore, ProjectStore.create):
        with pytest.raises(StoreCorruptError, match="empty|not a|damaged"):
            opener(project.root)
    root = str(project.root)
    for argv in (["project", "check"], ["project", "cleanup", "--min-age", "0"],
                 ["job", "list"], ["job", "submit", "predict", "--config", "{}"]):
        code, out, err = cli(capsys, *argv, "--project", root)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert "Traceback" not in out + err
    assert db.read_bytes() == content  # not re-created, not even touched
    assert label_files(project.root) == files  # cleanup deleted nothing


def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    with sqlite3.connect(folder / DB_NAME) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = (folder / DB_NAME).read_bytes()
    with pytest.raises(StoreCorruptError, match="not a lesion-diffkd project"):
        ProjectStore.create(folder)
    assert (folder / DB_NAME).read_bytes() == before


def test_export_refuses_a_non_empty_folder_and_overwrites_only_its_own_files(
        project: ProjectStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    unlabelled = project.unlabelled_images()[0]
    label = project.read_label(project.label_versions()[0])
    project.save_label(unlabelled, label[: unlabelled.shape[0], : unlabelled.shape[1]] * 0,
                       kind="pseudo")
    assert export_labels(project, out, which="current") == 7
    mine = out / "notes.txt"
    mine.write_text("the user's own file")
    with pytest.raises(StoreError, match="not empty"):
        export_labels(project, out, which="human")
    code, _, err = cli(capsys, "project", "export", "--project", str(project.root),
                       "--out", str(out), "--which", "human")
    assert code == 2 and "not empty" in err
    code, printed, _ = cli(capsys, "project", "export", "--project", str(project.root),
                           "--out", str(out), "--which", "human", "--overwrite")
    assert code == 0 and json.loads(printed)["exported"] == 6
    masks = sorted(p.stem for p in (out / "masks").iterdir())
    images = sorted(p.name.split(".")[0] for p in (out / "images").iterdir())
    human = sorted(i.name for i in project.images() if i.id != unlabelled.id
                   and project.current_label(i) is not None)
    assert masks == human and images == human  # the pseudo label's mask is gone
    assert mine.read_text() == "the user's own file"
    rows = (out / "metadata.csv").read_text().splitlines()
    assert rows[0] == "id,group" and len(rows) == 7
