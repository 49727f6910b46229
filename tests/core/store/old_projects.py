"""Helper for the migration tests: a project database as an older release wrote it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from napari_lesion_diffkd.core.store.schema import DB_NAME, connect, migrate


def old_database(folder: Path, version: int, images_dir: Path) -> sqlite3.Connection:
    """Create ``folder`` with a database at schema ``version`` holding one image row
    (``'a'``, the first file of ``images_dir``); returns the open connection."""
    folder.mkdir()
    conn = connect(folder / DB_NAME)
    assert migrate(conn, target=version) == version
    image = min(images_dir.iterdir()).resolve()
    conn.execute("INSERT INTO images (name, path, modality, sha256, shape, channels, spacing,"
                 " grp, added_at) VALUES ('a', ?, 'dermoscopy', 'ff', '[383, 512]', 3,"
                 " '[1.0, 1.0]', 'a', 't')", (str(image),))
    return conn
