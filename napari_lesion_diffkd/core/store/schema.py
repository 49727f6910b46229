"""The project database: connection settings, tables and the ordered list of migrations.

Connection settings (:func:`connect`)
    * ``journal_mode=WAL``: readers never block the writer and a killed writer leaves the
      database at its last commit (the WAL is replayed or ignored on the next open).
    * ``synchronous=FULL``: a commit is on disk when it returns, so a saved human label
      survives a power cut too (costs one fsync per commit, ~3 ms here).
    * ``busy_timeout``: a writer waits for the lock instead of failing at once; with WAL
      and ``BEGIN IMMEDIATE`` for every write this makes concurrent processes safe.
    * ``foreign_keys=ON``: a label or prediction always points at an existing image.
    * autocommit mode (``isolation_level=None``): transactions are explicit, see
      :meth:`ProjectStore.write`.

The database must live on a local disk: SQLite's WAL needs shared memory between the
processes, which network file systems do not provide.

Migrations
    ``MIGRATIONS[i]`` turns schema version ``i`` into ``i + 1``; each runs in one
    ``BEGIN IMMEDIATE`` transaction together with its ``schema_version`` row, so a crash
    mid-migration leaves the previous version intact. Version 1 was the first release
    (images and label versions only); version 2 added models, predictions, jobs and device
    claims; version 3 added the active-learning loop's rounds and annotation queue; version
    4 renames image names that are not safe file names (``names.py``: ``../x``, ``a/b``,
    absolute paths, control characters) to safe unique ones and records each rename in
    ``image_renames``; version 5 adds ``interaction_events``, the annotation interaction log
    (``interactions.py``). A step is an SQL statement or a function of the connection.
    Never edit a released migration: append a new one.

Opening an existing file (:func:`database_file_problem`, :func:`check_project_schema`)
    A project database is never created over an existing file: an empty (0-byte) file,
    a file that is not SQLite, or an SQLite file without our ``schema_version`` table is
    refused with :class:`StoreCorruptError` before anything is written to it.
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from napari_lesion_diffkd.core.store.dberrors import StoreConnection, translate
from napari_lesion_diffkd.core.store.errors import StoreCorruptError, StoreError
from napari_lesion_diffkd.core.store.names import image_name_problem, safe_image_name

DB_NAME = "project.sqlite"
BUSY_TIMEOUT_MS = 30_000

LABEL_KINDS = ("human", "model", "pseudo", "sam-assisted")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")

_V1 = [
    """CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,          -- the dataset id (file stem)
        path TEXT NOT NULL,                 -- absolute, or relative to the project folder
        modality TEXT,
        sha256 TEXT NOT NULL,               -- of the file's bytes (sorted files for a folder)
        shape TEXT NOT NULL,                -- JSON: spatial shape, (Y, X) or (Z, Y, X)
        channels INTEGER NOT NULL DEFAULT 1,
        spacing TEXT NOT NULL,              -- JSON: mm per spatial axis, same order as shape
        grp TEXT,                           -- patient / case, for group-aware splits
        added_at TEXT NOT NULL
    )""",
    f"""CREATE TABLE label_versions (
        id INTEGER PRIMARY KEY,             -- increases with every save: newest = largest
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
        kind TEXT NOT NULL CHECK (kind IN {LABEL_KINDS!r}),
        model_name TEXT,
        model_version TEXT,
        parent_id INTEGER REFERENCES label_versions(id) ON DELETE RESTRICT,
        author TEXT,
        created_at TEXT NOT NULL,
        file TEXT NOT NULL UNIQUE,          -- relative to the project folder, never rewritten
        sha256 TEXT NOT NULL,
        note TEXT
    )""",
    "CREATE INDEX label_versions_image ON label_versions(image_id, kind, id)",
]

_V2 = [
    """CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,           -- 1, 2, ... per name
        path TEXT NOT NULL,                 -- bundle folder (absolute or project-relative)
        role TEXT,
        job_id INTEGER,
        metrics TEXT NOT NULL DEFAULT '{}', -- JSON
        created_at TEXT NOT NULL,
        UNIQUE (name, version)
    )""",
    """CREATE TABLE predictions (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
        model_name TEXT NOT NULL,
        model_version TEXT NOT NULL,
        settings TEXT NOT NULL,             -- JSON, SegmentationResult.settings
        settings_key TEXT NOT NULL,         -- canonical JSON of model + settings, for reuse
        folder TEXT NOT NULL UNIQUE,        -- relative folder holding the files below
        samples_file TEXT,                  -- (K, Y, X) uint8 {0, 1} .npy
        probability_file TEXT,              -- (Y, X) float32 .npy
        uncertainty_file TEXT,              -- (Y, X) float32 .npy
        consensus_file TEXT,                -- (Y, X) PNG {0, 1}
        scores TEXT NOT NULL DEFAULT '{}',  -- JSON, per-image scores
        job_id INTEGER,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX predictions_image ON predictions(image_id, settings_key, id)",
    f"""CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        config TEXT NOT NULL,               -- JSON
        status TEXT NOT NULL CHECK (status IN {JOB_STATUSES!r}),
        heavy INTEGER NOT NULL DEFAULT 1,   -- needs the compute device exclusively
        device TEXT,                        -- claimed device, e.g. 'cpu', 'cuda:0'
        progress REAL NOT NULL DEFAULT 0,   -- [0, 1]
        step INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        log TEXT NOT NULL DEFAULT '',       -- the last 64 KiB of event lines
        pid INTEGER,
        pid_token TEXT,                     -- process start time, guards against pid reuse
        host TEXT,
        checkpoints TEXT NOT NULL DEFAULT '[]',  -- JSON list of {{step, path}}
        result TEXT,                        -- JSON
        error TEXT,
        resumable INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        started_at TEXT,
        updated_at TEXT,
        finished_at TEXT
    )""",
    "CREATE INDEX jobs_status ON jobs(status, id)",
    """CREATE TABLE device_claims (
        device TEXT PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        claimed_at TEXT NOT NULL
    )""",
]

_V3 = [  # the active-learning loop (core/active_learning/loop.py)
    """CREATE TABLE loop_rounds (
        round INTEGER PRIMARY KEY,          -- 1, 2, ... in the order the rounds first ran
        job_id INTEGER NOT NULL UNIQUE REFERENCES jobs(id) ON DELETE RESTRICT,
        strategy TEXT NOT NULL,
        steps TEXT NOT NULL DEFAULT '{}',   -- JSON: finished step -> what it produced
        created_at TEXT NOT NULL,
        finished_at TEXT                    -- set when the queue is stored
    )""",
    """CREATE TABLE annotation_queue (
        round INTEGER NOT NULL REFERENCES loop_rounds(round) ON DELETE RESTRICT,
        position INTEGER NOT NULL,          -- 0 = annotate first
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
        score REAL,                         -- the per-image score the order was built from
        PRIMARY KEY (round, position),
        UNIQUE (round, image_id)
    )""",
]



def _rename_unsafe_image_names(conn: sqlite3.Connection) -> None:
    """Give every image whose name is not a safe file name (see ``names.py``) a safe,
    unique one, in id order (deterministic), and record the old name in image_renames."""
    rows = conn.execute("SELECT id, name FROM images ORDER BY id").fetchall()
    taken = {str(r[1]) for r in rows}
    for image_id, name in rows:
        if image_name_problem(name) is None:
            continue
        new = safe_image_name(str(name), taken, int(image_id))
        taken.discard(str(name))
        taken.add(new)
        conn.execute("UPDATE images SET name = ? WHERE id = ?", (new, image_id))
        conn.execute("INSERT INTO image_renames (image_id, old_name, new_name, renamed_at) "
                     "VALUES (?, ?, ?, ?)", (image_id, str(name), new, now()))


_V4: list[str | Callable[[sqlite3.Connection], None]] = [  # safe image names
    """CREATE TABLE image_renames (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        old_name TEXT NOT NULL,             -- as stored before (unsafe as a file name)
        new_name TEXT NOT NULL,
        renamed_at TEXT NOT NULL
    )""",
    _rename_unsafe_image_names,
]

_V5 = [  # the annotation interaction log (interactions.py)
    """CREATE TABLE interaction_events (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        session TEXT NOT NULL,              -- one tracked layer of one image, from its base
        seq INTEGER NOT NULL,               -- order inside the session
        kind TEXT NOT NULL,                 -- base, stroke, prompt, model, accept, undo, ...
        layer TEXT,                         -- the layer's role: label, consensus, proposal
        at TEXT NOT NULL,                   -- UTC ISO time of the interaction
        elapsed REAL,                       -- seconds since the session began (monotonic)
        label_version_id INTEGER REFERENCES label_versions(id) ON DELETE SET NULL,
        pixels INTEGER NOT NULL DEFAULT 0,  -- pixels changed (base: pixels set)
        data TEXT NOT NULL DEFAULT '{}',    -- JSON: prompts, model, seconds, shape ...
        blob BLOB,                          -- compressed pixel diff (npz), small ones
        file TEXT UNIQUE,                   -- the same, as a file under interactions/
        UNIQUE (session, seq)
    )""",
    "CREATE INDEX interaction_events_image ON interaction_events(image_id, session, seq)",
    "CREATE INDEX interaction_events_version ON interaction_events(label_version_id)",
]

Step = str | Callable[[sqlite3.Connection], None]
#: ``MIGRATIONS[i]``: the steps that take the schema from version ``i`` to ``i + 1``.
MIGRATIONS: list[list[Step]] = [list(_V1), list(_V2), list(_V3), _V4, list(_V5)]
SCHEMA_VERSION = len(MIGRATIONS)


def now() -> str:
    """UTC time as ISO 8601 with milliseconds (sortable as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def database_file_problem(db_path: str | Path) -> str | None:
    """Why an *existing* ``db_path`` cannot be a project database (not a regular file, or
    empty), or None. A file that is not SQLite is caught when opened (``SQLITE_NOTADB``).

    Only ``stat`` is used, never ``open``: closing any descriptor of the database file
    drops every POSIX lock this process holds on it, including those of other open
    connections; another process would then think it is the last one, checkpoint and
    remove the WAL, and our connections would read a stale snapshot forever.
    """
    try:
        st = Path(db_path).stat()
    except OSError as exc:
        return f"cannot be read ({exc})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_size == 0:
        return "is empty (0 bytes)"
    return None


def check_project_schema(conn: sqlite3.Connection, db_path: str | Path) -> None:
    """Refuse (:class:`StoreCorruptError`) an SQLite database that is not a project's:
    it has no ``schema_version`` table (an empty or foreign database)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                        "AND name = 'schema_version'").fetchone():
        raise StoreCorruptError(f"{db_path}: not a lesion-diffkd project database (no "
                                "schema_version table); restore it from a backup or remove "
                                "it")


def connect(db_path: str | Path, readonly: bool = False,
            require_schema: bool = False) -> sqlite3.Connection:
    """Open (creating if needed, unless ``readonly``) the database with the settings of the
    module docstring. Its SQLite failures are raised as store errors (``dberrors.py``).

    Args:
        readonly: open with SQLite's ``mode=ro`` (nothing can be written; the journal mode
            is read, not set).
        require_schema: refuse (:func:`check_project_schema`) a database that is not a
            project's *before* anything is written to it (not even the journal mode).
    """
    target = f"{Path(db_path).resolve().as_uri()}?mode=ro" if readonly else str(db_path)
    try:
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               factory=StoreConnection, uri=readonly)
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: cannot open the project database ({exc})") from exc
    conn.db_path = db_path  # type: ignore[attr-defined]
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if require_schema:
            check_project_schema(conn, db_path)  # also raises for a file that is not SQLite
        mode = conn.execute("PRAGMA journal_mode" + ("" if readonly else " = WAL")).fetchone()[0]
        if str(mode).lower() != "wal" and not readonly:
            raise StoreError(f"{db_path}: the file system does not support SQLite WAL mode "
                             "(put the project on a local disk)")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's schema version (0 for a new, empty database)."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not has_table:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the pending migrations up to ``target`` in order; returns the final version.

    Raises:
        StoreError: the database is newer than this package (written by a later release).
    """
    if target > SCHEMA_VERSION:
        raise ValueError(f"target version {target} > latest {SCHEMA_VERSION}")
    current = schema_version(conn)  # up to date: no write lock (works read-only too)
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"the project database has schema version {current}, newer than this "
            f"package supports ({SCHEMA_VERSION}): update napari-lesion-diffkd")
    if current >= target and current > 0:
        return current
    while True:
        conn.execute("BEGIN IMMEDIATE")  # re-read under the lock: another process may migrate
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                         "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            current = schema_version(conn)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the project database has schema version {current}, newer than this "
                    f"package supports ({SCHEMA_VERSION}): update napari-lesion-diffkd")
            if current >= target:
                conn.execute("COMMIT")
                return current
            for step in MIGRATIONS[current]:
                if callable(step):
                    step(conn)
                else:
                    conn.execute(step)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                         (current + 1, now()))
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except (sqlite3.Error, StoreError):
                pass  # the original error says more (e.g. disk full)
            if isinstance(exc, sqlite3.Error):  # (the connection translates most already)
                raise translate(exc, getattr(conn, "db_path", "project.sqlite")) from exc
            raise
