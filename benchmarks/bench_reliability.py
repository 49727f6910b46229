"""Reliability of the project store under kills, concurrent writers and abuse.

Usage:
    python benchmarks/bench_reliability.py [--kills 15] [--saves 50] [--images 8]

Measures, on a fresh project of real PH2 images (temporary folder, removed at the end):

* **kill mid-save**: a writer process (``tests/core/store/label_writer.py``, the crash
  tests' harness) saves label versions and is SIGKILLed at a random point, ``--kills``
  times; after each kill a fresh open must pass ``check``, and every version the writer
  reported as saved must read back with its exact content;
* **two concurrent writers**: two processes save ``--saves`` versions each of one image at
  once; errors, versions stored, ``check``;
* **malicious and corrupt inputs**: unsafe image names, export traversal, and damaged,
  empty, foreign, read-only and full databases through the CLI; each must be refused with
  exactly one ``error:`` line (exit 2), no traceback;
* **nothing lost**: at the end every imported human label still has its original bytes.

Prints a markdown table and the command line (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from napari_lesion_diffkd.cli import main as cli_main  # noqa: E402
from napari_lesion_diffkd.core.data.locate import find_data_root  # noqa: E402
from napari_lesion_diffkd.core.store import (  # noqa: E402
    InvalidInputError,
    ProjectStore,
    import_folder,
)
from napari_lesion_diffkd.core.store.schema import DB_NAME  # noqa: E402
from tests.core.store.conftest import start_python  # noqa: E402
from tests.core.store.label_writer import expected  # noqa: E402

WRITER = ROOT / "tests" / "core" / "store" / "label_writer.py"


def make_project(tmp: Path, n_images: int) -> Path:
    """A project of the first ``n_images`` PH2 images with their masks as human labels."""
    data = find_data_root()
    if data is None:
        sys.exit("real data not found (set LESION_DIFFKD_DATA)")
    src = data / "ph2_dermoscopy"
    folder = tmp / "ph2"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for image in sorted((src / "images").iterdir())[:n_images]:
        (folder / "images" / image.name).symlink_to(image)
        mask = src / "masks" / f"{image.stem}.png"
        (folder / "masks" / mask.name).symlink_to(mask)
    with ProjectStore.create(tmp / "project") as store:
        import_folder(store, folder, modality="dermoscopy")
    return tmp / "project"


def stop(proc: subprocess.Popen) -> None:
    """Kill a writer's process group if it still runs, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_mid_save(project: Path, kills: int, rng: random.Random) -> dict[str, object]:
    with ProjectStore(project) as store:
        image = store.images()[0].name
        base = store.read_label(store.label_versions(image)[0])
    saved: dict[int, int] = {}
    checks_ok = 0
    for k in range(kills):
        proc = start_python(WRITER, str(project), image, "100000", f"k{k}")
        try:
            target, lines = rng.randint(1, 4), []
            while len(lines) < target:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(proc.stderr.read())
                lines.append(line)
            time.sleep(rng.uniform(0.0, 0.02))  # land anywhere inside a later save
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            lines += proc.stdout.read().splitlines()
        finally:
            stop(proc)
        for line in lines:
            version_id, i = map(int, line.split())
            saved[version_id] = i
        with ProjectStore(project) as store:
            checks_ok += store.check().ok
    intact = 0
    with ProjectStore(project) as store:
        versions = {v.id: v for v in store.label_versions(image)}
        for version_id, i in saved.items():
            v = versions.get(version_id)
            intact += v is not None and np.array_equal(store.read_label(v), expected(base, i))
        report = store.check()
        leftovers = len(report.orphan_files) + len(report.temp_files)
        store.cleanup(min_age_s=0)
        clean = not store.check().orphan_files
    return {"kills": kills, "saves reported": len(saved), "versions intact": intact,
            "check ok after kill": checks_ok, "leftover files": leftovers,
            "cleanup removed all": clean}


def concurrent(project: Path, saves: int) -> dict[str, object]:
    with ProjectStore(project) as store:
        image = store.images()[1].name
        before = len(store.label_versions())
    procs = [start_python(WRITER, str(project), image, str(saves), name) for name in "ab"]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            stop(p)
    errors = sum(p.returncode != 0 for p in procs)
    with ProjectStore(project) as store:
        stored = len(store.label_versions()) - before
        ok = store.check().ok
    lines = sum(len(out.splitlines()) for out, _ in outs)
    return {"writers": 2, "saves": lines, "stored": stored, "errors": errors, "check ok": ok}


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(argv)
    return code, err.getvalue()


def abuse(project: Path, tmp: Path) -> dict[str, object]:
    """Each case returns True when refused cleanly (one error line, exit 2 / the error)."""
    cases: list[tuple[str, bool]] = []
    names = ["../evil", "../../x", "/etc/passwd", "a/b", "a\\b", "..", ".", "nul\x00",
             "new\nline", ".hidden", "C:x", "x" * 300]
    with ProjectStore(project) as store:
        image = store.images()[0]
        for name in names:
            try:
                store.add_image(image.path, name=name)
                cases.append((f"name {name!r}", False))
            except InvalidInputError as exc:
                cases.append((f"name {name!r}", "\n" not in str(exc)))
    # Damaged databases, each on its own copy, through every project command.
    commands = [["job", "list"], ["job", "submit", "predict", "--config", "{}"],
                ["project", "check"], ["project", "cleanup", "--min-age", "0"]]

    def damaged(label: str, damage) -> None:
        copy = tmp / f"abuse-{len(cases)}"
        shutil.copytree(project, copy)
        damage(copy / DB_NAME)
        for argv in commands:
            code, err = _cli([*argv, "--project", str(copy)])
            cases.append((f"{label}: {' '.join(argv[:2])}",
                          code == 2 and err.count("\n") == 1 and "Traceback" not in err))

    def corrupt(db: Path) -> None:
        data = bytearray(db.read_bytes())
        data[100:400] = b"\xa5" * 300
        db.write_bytes(bytes(data))

    def foreign(db: Path) -> None:
        db.unlink()
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE t (x)")
        conn.close()

    for side in ("-wal", "-shm"):
        Path(f"{project / DB_NAME}{side}").unlink(missing_ok=True)
    damaged("corrupt", corrupt)
    damaged("empty", lambda db: db.write_bytes(b""))
    damaged("garbage", lambda db: db.write_bytes(os.urandom(8192)))
    damaged("foreign", foreign)
    refused = sum(ok for _, ok in cases)
    return {"inputs tried": len(cases), "refused with one line": refused,
            "not refused": [label for label, ok in cases if not ok]}


def nothing_lost(project: Path, originals: dict[int, str]) -> dict[str, object]:
    with ProjectStore(project) as store:
        report = store.check()
        same = sum(store.label(i).sha256 == sha and store.read_label(i) is not None
                   for i, sha in originals.items())
    return {"human labels": len(originals), "unchanged": same, "check ok": report.ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--saves", type=int, default=50, help="per concurrent writer")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as tmp_name:
        tmp = Path(tmp_name)
        project = make_project(tmp, args.images)
        with ProjectStore(project) as store:
            originals = {v.id: v.sha256 for v in store.label_versions(kind="human")}
        rows = [("kill mid-save", kill_mid_save(project, args.kills, rng)),
                ("two concurrent writers", concurrent(project, args.saves)),
                ("malicious / corrupt inputs", abuse(project, tmp)),
                ("nothing lost", nothing_lost(project, originals))]
    print("| check | result |")
    print("|---|---|")
    for name, result in rows:
        text = ", ".join(f"{k}: {v}" for k, v in result.items())
        print(f"| {name} | {text} |")
    print()
    print(f"Command: `python benchmarks/bench_reliability.py --kills {args.kills} "
          f"--saves {args.saves} --images {args.images} --seed {args.seed}` "
          f"({time.monotonic() - start:.0f} s, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
