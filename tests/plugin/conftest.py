"""Fixtures for the napari widgets: a viewer with the plugin's context, real PH2 images, a
project folder and helpers that wait on workers (never sleep, never click)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

ROOT = Path(__file__).resolve().parents[2]
STUDENT, TEACHER = "dermoscopy-student", "dermoscopy-teacher"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op torch thread: tiny models gain nothing from a second one, and the GUI
    thread needs a core on a 2-core machine (see tests/conftest.one_torch_thread)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _none_refcount_guard(qapp):
    """The plugin's guard against the Qt binding's None leak (plugin/_qt_guard.py), also for
    tests that only use napari: it aborts the interpreter otherwise."""
    from napari_lesion_diffkd.plugin._qt_guard import guard_none_refcount

    guard_none_refcount()


@pytest.fixture(autouse=True)
def _only_shipped_models(monkeypatch, tmp_path):
    """The registry sees the committed models/ only (no user cache from this machine)."""
    monkeypatch.setenv("NAPARI_LESION_DIFFKD_MODELS", "")
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "no-cache"))
    monkeypatch.delenv("NAPARI_LESION_DIFFKD_CACHE", raising=False)


@pytest.fixture
def ph2_image(ph2_pairs) -> np.ndarray:
    """The first PH2 image, (Y, X, 3) uint8."""
    return imread(ph2_pairs[0][0])


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def flat_images(tmp_path, data_root) -> Path:
    """A flat folder with two more PH2 images (not in ``ph2_subset``, no masks): they
    import as unlabelled."""
    folder = tmp_path / "flat"
    folder.mkdir()
    for image in sorted((data_root / "ph2_dermoscopy" / "images").iterdir())[12:14]:
        (folder / image.name).symlink_to(image)
    return folder


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    """A copy of the shipped student bundle under another folder name ("Add checkpoint")."""
    dst = tmp_path / "my-student"
    shutil.copytree(ROOT / "models" / STUDENT, dst)
    return dst


def wait_idle(qtbot, widget, timeout: int = 180_000) -> None:
    """Wait until the widget's worker has finished."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def wait_ready(qtbot, *pickers) -> None:
    """Wait until model pickers have read the catalogue."""
    qtbot.waitUntil(lambda: all(p.is_ready for p in pickers), timeout=120_000)


HANG_S = 10.0  # a heartbeat gap this long means the GUI hung, not that the machine was busy


class Heartbeat:
    """A QTimer on the GUI thread that counts its beats, for tests that the GUI keeps turning
    while work runs elsewhere - with no claim on how fast (that is machine load; see
    benchmarks/bench_gui_responsiveness.py for the numbers).

    Work in a worker thread calls :meth:`wait_beats` to block until the GUI has beaten ``n``
    more times: that returns True only if the event loop turns while the work is under way,
    however slow the machine is, and False at once when called on the GUI thread itself.
    ``gui_thread`` is the thread that created it; ``longest_gap`` is for a hang detector
    (``< HANG_S``) only.
    """

    def __init__(self, interval_ms: int = 20) -> None:
        from qtpy.QtCore import QTimer

        self.gui_thread = threading.get_ident()
        self.count = 0
        self.times: list[float] = []
        self._cond = threading.Condition()
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        with self._cond:
            self.count += 1
            self.times.append(time.perf_counter())
            self._cond.notify_all()

    def wait_beats(self, n: int, timeout_s: float = 120.0) -> bool:
        if threading.get_ident() == self.gui_thread:
            return False  # would only wait out the timeout: nothing can beat meanwhile
        with self._cond:
            target = self.count + n
            return self._cond.wait_for(lambda: self.count >= target, timeout_s)

    @property
    def longest_gap(self) -> float:
        return max((b - a for a, b in zip(self.times, self.times[1:])), default=0.0)

    def __enter__(self) -> Heartbeat:
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()
