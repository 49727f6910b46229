"""Consistency check and clean-up of a project folder.

What can go wrong and how it shows up here:

* a process killed between writing a file and committing its row leaves an *orphan* file
  (harmless: nothing points at it);
* a process killed inside ``atomic_write`` leaves a hidden ``.*.tmp`` file;
* a file edited or deleted by hand shows as *damaged* / *missing* (a real problem);
* SQLite itself is checked with ``PRAGMA integrity_check`` and ``foreign_key_check``.

``cleanup`` deletes files, so it trusts the database only when ``check`` finds it healthy
(:class:`UnhealthyStoreError` otherwise), and it refuses a database that references no file
at all while files exist (a replaced or re-created database would make every label file an
"orphan"); ``force=True`` overrides the latter only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_lesion_diffkd.core.store.errors import UnhealthyStoreError
from napari_lesion_diffkd.core.store.files import sha256_file

if TYPE_CHECKING:
    from napari_lesion_diffkd.core.store.project import ProjectStore

#: Folders whose every file must be referenced by a row.
_INDEXED_DIRS = ("labels", "predictions", "interactions")


@dataclass
class CheckReport:
    """Result of :func:`check_store`; ``ok`` is True when nothing referenced is wrong
    (orphans and temporary files do not count: they are leftovers, not damage)."""

    integrity: list[str] = field(default_factory=list)
    foreign_key_violations: list[tuple] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)
    orphan_files: list[Path] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.integrity == ["ok"] and not self.foreign_key_violations
                and not self.missing_files and not self.damaged_files)

    def problems(self) -> list[str]:
        """One line per kind of damage (empty when :attr:`ok`)."""
        out = []
        if self.integrity != ["ok"]:
            out.append(f"SQLite integrity check: {'; '.join(self.integrity[:3])}")
        if self.foreign_key_violations:
            out.append(f"{len(self.foreign_key_violations)} foreign key violation(s)")
        if self.missing_files:
            out.append(f"{len(self.missing_files)} indexed file(s) missing, e.g. "
                       f"{self.missing_files[0]}")
        if self.damaged_files:
            out.append(f"{len(self.damaged_files)} indexed file(s) changed since saved, e.g. "
                       f"{self.damaged_files[0]}")
        return out

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        """JSON-ready report; leftover paths relative to ``root`` when given."""

        def rel(p: Path) -> str:
            return p.relative_to(root).as_posix() if root is not None else str(p)

        return {"ok": self.ok, "problems": self.problems(), "integrity": self.integrity,
                "foreign_key_violations": [list(v) for v in self.foreign_key_violations],
                "missing_files": self.missing_files, "damaged_files": self.damaged_files,
                "orphan_files": [rel(p) for p in self.orphan_files],
                "temp_files": [rel(p) for p in self.temp_files]}


def referenced_files(store: ProjectStore) -> set[str]:
    """Relative paths of every file a label, prediction or interaction row points at."""
    conn = store.conn
    refs = {r[0] for r in conn.execute("SELECT file FROM label_versions")}
    refs.update(r[0] for r in conn.execute(
        "SELECT file FROM interaction_events WHERE file IS NOT NULL"))
    for row in conn.execute("SELECT samples_file, probability_file, uncertainty_file, "
                            "consensus_file FROM predictions"):
        refs.update(v for v in row if v)
    return refs


def check_store(store: ProjectStore, verify_hashes: bool = True) -> CheckReport:
    """Check the database and the files it indexes (see the module docstring)."""
    conn = store.conn
    report = CheckReport(
        integrity=[r[0] for r in conn.execute("PRAGMA integrity_check")],
        foreign_key_violations=[tuple(r) for r in conn.execute("PRAGMA foreign_key_check")],
    )
    for row in conn.execute("SELECT id, file, sha256 FROM label_versions ORDER BY id"):
        path = store.root / row["file"]
        if not path.is_file():
            report.missing_files.append(row["file"])
        elif verify_hashes and sha256_file(path) != row["sha256"]:
            report.damaged_files.append(row["file"])
    refs = referenced_files(store)
    for rel in sorted(refs):
        if not (store.root / rel).is_file() and rel not in report.missing_files:
            report.missing_files.append(rel)
    for top in _INDEXED_DIRS:
        for path in sorted((store.root / top).rglob("*")):
            if not path.is_file():
                continue
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                report.temp_files.append(path)
            elif path.relative_to(store.root).as_posix() not in refs:
                report.orphan_files.append(path)
    return report


def cleanup_store(store: ProjectStore, min_age_s: float = 3600.0,
                  force: bool = False) -> list[Path]:
    """Delete orphan and temporary files older than ``min_age_s`` seconds; returns them.

    The age guard matters: another process may have written a file a moment ago and be
    about to commit its row, so a fresh unreferenced file is not yet an orphan.

    Raises:
        UnhealthyStoreError: :func:`check_store` is not ok (nothing deleted), or (without
            ``force``) the database references no file while the folders hold some.
    """
    report = check_store(store, verify_hashes=True)
    if not report.ok:
        raise UnhealthyStoreError(f"{store.root}: cleanup refused, the store is not healthy "
                                  f"({'; '.join(report.problems())}); nothing was deleted")
    if report.orphan_files and not referenced_files(store) and not force:
        raise UnhealthyStoreError(
            f"{store.root}: cleanup refused: the database references no file but "
            f"{len(report.orphan_files)} file(s) exist (a replaced or re-created database?); "
            "nothing was deleted")
    cutoff = time.time() - min_age_s
    removed = []
    for path in report.orphan_files + report.temp_files:
        try:
            if path.stat().st_mtime <= cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    for top in _INDEXED_DIRS:  # drop old empty folders (deepest first), same age guard
        for folder in sorted((store.root / top).rglob("*"), reverse=True):
            try:
                if folder.is_dir() and folder.stat().st_mtime <= cutoff:
                    folder.rmdir()  # fails (ignored) unless empty
            except OSError:
                continue
    return removed
