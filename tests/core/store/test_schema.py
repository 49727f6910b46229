"""Database settings and migrations: WAL, busy timeout, foreign keys; v1 -> current."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from napari_lesion_diffkd.core.store import SCHEMA_VERSION, ProjectStore, StoreError
from napari_lesion_diffkd.core.store.schema import BUSY_TIMEOUT_MS, DB_NAME
from tests.core.store.old_projects import old_database


def test_connection_settings(tmp_path: Path) -> None:
    with ProjectStore.create(tmp_path / "p") as store:
        conn = store.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store.schema_version == SCHEMA_VERSION
        # A label must point at an existing image.
        with pytest.raises(StoreError), store.write() as c:
            c.execute("INSERT INTO label_versions (image_id, kind, created_at, file, sha256)"
                      " VALUES (999, 'human', 'now', 'x.png', 'abc')")
        assert conn.execute("SELECT COUNT(*) FROM label_versions").fetchone()[0] == 0


def test_migration_from_v1_keeps_the_data(tmp_path: Path, ph2_subset: Path) -> None:
    folder = tmp_path / "old"
    # a project written by the first release
    conn = old_database(folder, 1, ph2_subset / "images")
    conn.execute("INSERT INTO label_versions (image_id, kind, created_at, file, sha256) "
                 "VALUES (1, 'human', 't', 'labels/x.png', 'ee')")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "jobs" not in tables
    conn.close()

    with ProjectStore(folder) as store:
        assert store.schema_version == SCHEMA_VERSION
        versions = [r[0] for r in store.conn.execute("SELECT version FROM schema_version "
                                                     "ORDER BY version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        assert store.image("a").shape == (383, 512)
        assert store.current_label("a").kind == "human"
        job = store.jobs.submit("predict", {"model": "m"})  # tables of version 2 work
        assert json.loads(store.conn.execute("SELECT config FROM jobs").fetchone()[0]) == \
            job.config
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    ProjectStore.create(tmp_path / "p").close()
    with sqlite3.connect(tmp_path / "p" / DB_NAME) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 't')", (SCHEMA_VERSION + 5,))
    with pytest.raises(StoreError, match="newer than this package"):
        ProjectStore(tmp_path / "p")
    with pytest.raises(StoreError, match="not a project"):
        ProjectStore(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
