"""The interaction log: schema 5 on an old database, compressed pixel diffs (large ones as
files the store check knows), a scripted annotation replayed bit for bit, ``project replay``
/ ``project effort`` and their bad input (one error line, exit 2)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core.store import SCHEMA_VERSION, ProjectStore
from napari_lesion_diffkd.core.store.interaction_session import SessionRecorder
from napari_lesion_diffkd.core.store.interactions import (
    FILE_THRESHOLD,
    apply_diff,
    encode_diff,
    events,
    record_events,
)
from napari_lesion_diffkd.core.store.replay import effort, replay_label
from tests.core.store.old_projects import old_database


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def disc_stroke(shape: tuple[int, int], start: tuple[int, int], end: tuple[int, int],
                radius: int) -> np.ndarray:
    """The pixels a round brush of ``radius`` covers dragged from ``start`` to ``end``."""
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    mask = np.zeros(shape, bool)
    for t in np.linspace(0.0, 1.0, 40):
        r = start[0] + t * (end[0] - start[0])
        c = start[1] + t * (end[1] - start[1])
        mask |= (rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2
    return mask


def test_migration_5_on_a_version_4_database(tmp_path: Path, ph2_subset: Path) -> None:
    folder = tmp_path / "old"
    # a project written before the interaction log
    conn = old_database(folder, 4, ph2_subset / "images")
    conn.execute("INSERT INTO label_versions (image_id, kind, created_at, file, sha256) "
                 "VALUES (1, 'human', 't', 'labels/x.png', 'ee')")
    assert "interaction_events" not in {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert SCHEMA_VERSION == 5
    with ProjectStore(folder) as store:
        assert store.schema_version == 5
        assert store.current_label("a").kind == "human"  # the old rows are kept
        recorder = SessionRecorder("label", np.zeros((383, 512), np.uint8))
        recorder.note("prompt", {"points": [[1.0, 2.0, True]]})
        record_events(store, "a", recorder.take())
        assert [e.kind for e in events(store, "a")] == ["base", "prompt"]
        assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_diffs_are_compressed_and_large_ones_are_files(project: ProjectStore) -> None:
    shape = (3000, 4000)  # a 12-megapixel dermoscopy image
    before = np.zeros(shape, np.uint8)
    after = before.copy()
    stroke = disc_stroke(shape, (500, 500), (2500, 3500), 30)
    after[stroke] = 1
    blob, count = encode_diff(before, after)
    assert blob is not None and count == int(stroke.sum()) > 100_000
    assert len(blob) < 64 * 1024  # a long 60-px-wide stroke: tens of KB at most
    rebuilt = before.copy()
    assert apply_diff(rebuilt, blob) == count and np.array_equal(rebuilt, after)
    assert encode_diff(after, after) == (None, 0)
    accepted = after.copy()  # an accepted mask: half the image changes (a bit mask)
    accepted[500:2500, 500:3500] = 2
    blob, count = encode_diff(after, accepted)
    assert count > 5_000_000 and len(blob) < 64 * 1024
    assert apply_diff(rebuilt, blob) == count and np.array_equal(rebuilt, accepted)

    # Noise does not compress: it goes to a file under interactions/, which check knows.
    image = project.images()[0]
    recorder = SessionRecorder("label", np.zeros(image.shape, np.uint8))
    noisy = np.random.default_rng(0).integers(0, 256, image.shape, dtype=np.uint8)
    recorder.change(noisy, "stroke")
    record_events(project, image.id, recorder.take())
    stored = [e for e in events(project, image.id) if e.kind == "stroke"]
    assert stored[0].file is not None and stored[0].file.stat().st_size > FILE_THRESHOLD
    report = project.check()
    assert report.ok and not report.orphan_files
    size = project.conn.execute("SELECT SUM(LENGTH(blob)) FROM interaction_events"
                                ).fetchone()[0] or 0
    assert size < FILE_THRESHOLD


def scripted_annotation(store: ProjectStore, image_name: str) -> tuple[int, np.ndarray]:
    """Open an image at its current label, prompt, paint, undo, accept a proposal, erase,
    save; returns the saved version id and the array the app saved."""
    image = store.image(image_name)
    base_version = store.current_label(image)
    layer = np.array(store.read_label(base_version), copy=True)
    label = SessionRecorder("label", layer, {"source": "label", "version": base_version.id})
    notes = SessionRecorder(None, None)
    notes.note("prompt", {"type": "point", "point": [100.0, 120.0], "positive": True})
    notes.note("model", {"model": "lesion-sam-tiny", "seconds": 0.25})
    before_stroke = layer.copy()
    layer[disc_stroke(layer.shape, (50, 60), (90, 200), 6)] = 1  # a brush stroke
    label.change(layer, "stroke")
    layer[:] = before_stroke  # undo it
    label.change(layer, "undo")
    proposal = np.zeros_like(layer)
    proposal[100:220, 150:330] = 1
    layer[:] = proposal  # accept the proposal
    label.change(layer, "accept", {"as_is": False})
    layer[disc_stroke(layer.shape, (110, 160), (120, 300), 4)] = 0  # an eraser stroke
    label.change(layer, "stroke")
    layer[5, 5] = 2  # a change no event saw: caught when saving
    seq = label.reserve_save(layer)
    version = store.save_label(image, layer.copy(), kind="sam-assisted")
    label.saved(seq, version.id)
    record_events(store, image, label.take() + notes.take())
    return version.id, layer


def test_a_scripted_annotation_replays_bit_for_bit(project: ProjectStore,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    name = project.images()[0].name
    version, saved = scripted_annotation(project, name)
    result = replay_label(project, name)
    assert result.version == version and result.different == 0
    assert np.array_equal(project.read_label(version), saved)
    kinds = [e.kind for e in events(project, name) if e.layer == "label"]
    assert kinds == ["base", "stroke", "undo", "accept", "stroke", "edit", "save"]

    root = str(project.root)
    code, out, err = cli(capsys, "project", "replay", "--image", name, "--project", root)
    line = json.loads(out)
    assert code == 0 and line["identical"] and line["version"] == version and not err

    # A label saved over the logged one without a log: that version has no log (exit 2);
    # the logged version still replays.
    other = project.save_label(name, np.zeros_like(saved))
    code, out, err = cli(capsys, "project", "replay", "--image", name, "--version",
                         str(other.id), "--project", root)
    assert code == 2 and not out and err.startswith("error:") and len(err.splitlines()) == 1
    assert "no interaction log" in err

    # A log that does not match its label: exit 1 with the pixel count.
    with project.write() as conn:
        conn.execute("UPDATE interaction_events SET label_version_id = ? WHERE kind = 'save'",
                     (other.id,))
    code, out, _ = cli(capsys, "project", "replay", "--image", name, "--version",
                       str(other.id), "--project", root)
    line = json.loads(out)
    assert code == 1 and line["different"] == int(np.count_nonzero(saved)) > 0


def test_effort_sums_the_log(project: ProjectStore, capsys: pytest.CaptureFixture[str]) -> None:
    name = project.images()[1].name
    scripted_annotation(project, name)
    rows = effort(project)
    assert len(rows) == 1
    row = rows[0]
    assert row["image"] == name and row["prompts"] == 1 and row["strokes"] == 2
    assert row["undos"] == 1 and row["accepts"] == 1 and row["saves"] == 1
    assert row["model_calls"] == 1 and row["model_seconds"] == 0.25 and row["edits"] == 4
    assert row["seconds"] >= 0 and len(row["versions"]) == 1
    code, out, _ = cli(capsys, "project", "effort", "--project", str(project.root), "--json")
    assert code == 0 and json.loads(out.splitlines()[0]) == row
    code, out, _ = cli(capsys, "project", "effort", "--project", str(project.root))
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("image\tprompts\tstrokes") and name in lines[1]
    assert lines[-1].startswith("total (1 images)")


def test_replay_bad_input_is_one_error_line(project: ProjectStore, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = str(project.root)
    name = project.images()[0].name
    cases = [
        (("--image", "no-such-image"), "no image"),
        (("--image", name), "no label saved with an interaction log"),
        (("--image", name, "--version", "999"), "no label version 999"),
    ]
    for args, message in cases:
        code, out, err = cli(capsys, "project", "replay", *args, "--project", root)
        assert code == 2 and not out and len(err.splitlines()) == 1, (args, err)
        assert err.startswith("error:") and message in err, (args, err)
    code, _, err = cli(capsys, "project", "effort", "--project", str(tmp_path / "none"))
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1
    # A version of another image.
    other = project.current_label(project.images()[1].name)
    code, _, err = cli(capsys, "project", "replay", "--image", name, "--version",
                       str(other.id), "--project", root)
    assert code == 2 and "is not a label of image" in err
    assert sqlite3.connect(project.db_path).execute("SELECT COUNT(*) FROM interaction_events"
                                                    ).fetchone()[0] == 0
