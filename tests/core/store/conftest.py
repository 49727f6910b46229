"""Fixtures for the project-store tests: small real PH2 folders and fresh projects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from napari_lesion_diffkd.core.store import ProjectStore, import_folder

#: Images of the project fixture that get no mask (so they are "unlabelled").
UNLABELLED = 2


@pytest.fixture()
def ph2_folder(tmp_path: Path, ph2_subset: Path) -> Path:
    """A dataset folder with the first 8 PH2 images (symlinks) and masks for all but the
    last two."""
    folder = tmp_path / "ph2"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    images = sorted((ph2_subset / "images").iterdir())[:8]
    for i, image in enumerate(images):
        (folder / "images" / image.name).symlink_to(image.resolve())
        if i < len(images) - UNLABELLED:
            mask = ph2_subset / "masks" / f"{image.stem}.png"
            (folder / "masks" / mask.name).symlink_to(mask.resolve())
    return folder


@pytest.fixture()
def project(tmp_path: Path, ph2_folder: Path) -> Iterator[ProjectStore]:
    """A fresh project holding the 8 PH2 images, 6 of them with a human label."""
    store = ProjectStore.create(tmp_path / "project")
    import_folder(store, ph2_folder, modality="dermoscopy")
    yield store
    store.close()


def child_env() -> dict[str, str]:
    """Environment for subprocesses: one OpenMP thread (a 2-core machine, other jobs)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


#: Helper processes started by :func:`start_python` and not yet stopped.
_STARTED: list[subprocess.Popen] = []


def start_python(script: Path, *args: str) -> subprocess.Popen:
    """Run a helper script in its own process group, stdout piped (text lines). Tests get
    it stopped by :func:`_stop_helper_processes` in teardown, pass or fail."""
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(),
                            start_new_session=True)
    _STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _stop_helper_processes() -> Iterator[None]:
    """Kill (whole process group) and reap every helper a test started, pass or fail."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
