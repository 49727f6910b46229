"""Processes killed while writing, and processes writing at once, never damage the project."""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from pathlib import Path

import numpy as np

from napari_lesion_diffkd.core.store import ProjectStore
from tests.core.store.conftest import start_python
from tests.core.store.label_writer import expected

WRITER = Path(__file__).with_name("label_writer.py")


def _base(store: ProjectStore, image: str) -> np.ndarray:
    return store.read_label(store.label_versions(image)[0])


def test_a_writer_killed_mid_save_loses_no_earlier_label(project: ProjectStore) -> None:
    image = project.images()[0].name
    base = _base(project, image)
    saved: dict[int, int] = {}  # version id -> save number, as reported after each commit
    rng = random.Random(0)
    for round_ in range(3):
        proc = start_python(WRITER, str(project.root), image, "100000", f"w{round_}")
        target = 4 + 3 * round_
        lines = []
        while len(lines) < target:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        time.sleep(rng.uniform(0.0, 0.02))  # land anywhere inside a later save
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        lines += proc.stdout.read().splitlines()
        for line in lines:
            version_id, i = map(int, line.split())
            saved[version_id] = i

        with ProjectStore(project.root) as store:  # a fresh open, as after a crash
            report = store.check()
            assert report.ok, report
            assert len(report.orphan_files) <= round_ + 1  # at most the save cut short
            versions = {v.id: v for v in store.label_versions(image)}
            for version_id, i in saved.items():
                np.testing.assert_array_equal(store.read_label(versions[version_id]),
                                              expected(base, i))
            # Any version beyond those reported is complete too (killed after the commit).
            for v in versions.values():
                store.read_label(v)
    with ProjectStore(project.root) as store:
        store.cleanup(min_age_s=0)
        report = store.check()
        assert report.ok and not report.orphan_files and not report.temp_files


def test_two_processes_writing_at_once(project: ProjectStore) -> None:
    image = project.images()[1].name
    base = _base(project, image)
    before = len(project.label_versions())
    procs = [start_python(WRITER, str(project.root), image, "100", name)
             for name in ("a", "b")]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    with ProjectStore(project.root) as store:
        report = store.check()
        assert report.ok and not report.orphan_files, report
        assert len(store.label_versions()) == before + 200
        versions = store.label_versions(image)
        ids = [v.id for v in versions]
        assert ids == sorted(set(ids))
        for author in ("a", "b"):
            mine = [v for v in versions if v.author == author]
            assert [int(v.note) for v in mine] == list(range(100))
            np.testing.assert_array_equal(store.read_label(mine[-1]), expected(base, 99))
        # Each save superseded the version that was current when it committed.
        for previous, v in itertools.pairwise(versions):
            assert v.parent_id == previous.id
        # The two writers really interleaved (both held the lock in turns).
        authors = "".join(v.author for v in versions[1:])
        assert "ab" in authors and "ba" in authors
