"""The correction panel with ``medsam-lite`` (LiteMedSAM), the default SAM where its wheel is
installed: the image embedding starts in the background as soon as the panel shows an
image, a box prompt then runs the decoder only, a prompt given before the embedding is
ready is answered when it is (the GUI thread never waits), the embedding can be cancelled,
and ONNX Runtime answers too. No wall-clock assertions."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from skimage.io import imread

from napari_lesion_diffkd.core.sam import medsam_lite

pytestmark = [pytest.mark.gui,
              pytest.mark.skipif(not medsam_lite.is_available(),
                                 reason=f"needs {medsam_lite.INSTALL_COMMAND}")]

HELD_OUT = "IMD009"  # a validation image of the project's split
WAIT_MS = 240_000  # a generous bound for a loaded 2-core machine, not a latency claim


@pytest.fixture(autouse=True)
def _default_sam(monkeypatch):
    monkeypatch.delenv("LESION_DIFFKD_SAM", raising=False)  # the installed default


@pytest.fixture
def held_out(data_root) -> tuple[np.ndarray, np.ndarray]:
    root = data_root / "ph2_dermoscopy"
    return (imread(next((root / "images").glob(f"{HELD_OUT}.*"))),
            imread(root / "masks" / f"{HELD_OUT}.png") > 127)


def rectangle(gt: np.ndarray, margin: int = 8) -> np.ndarray:
    rows, cols = np.nonzero(gt)
    r0, r1, c0, c1 = rows.min() - margin, rows.max() + margin, cols.min() - margin, \
        cols.max() + margin
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def panel(viewer, qtbot, image, runtime: str | None = None):
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget

    viewer.add_image(image, name="lesion", rgb=True)
    w = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: w.sam_models.is_ready, timeout=WAIT_MS)
    assert w.sam_models.combo.currentText() == "medsam-lite"
    if runtime is not None:
        qtbot.waitUntil(lambda: w.backend is not None, timeout=WAIT_MS)
        w.sam_models.runtime_combo.setCurrentText(runtime)
        w.sam_models.load()
        qtbot.waitUntil(lambda: w.backend is not None and "ONNX Runtime" in w.backend.name,
                        timeout=WAIT_MS)
    qtbot.waitUntil(lambda: w.backend is not None, timeout=WAIT_MS)
    assert w.backend.sam.name == "medsam-lite"
    return w


class Gate:
    """Holds the backend's encoder (inside its lock) until released: the embedding is
    'still running' for as long as the test needs."""

    def __init__(self, session) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._real = session.set_image
        session.set_image = self

    def __call__(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(WAIT_MS / 1000)
        return self._real(*args, **kwargs)


def test_background_embedding_then_a_box_runs_the_decoder_only(viewer, qtbot,
                                                                held_out) -> None:
    image, gt = held_out
    w = panel(viewer, qtbot, image)
    # The embedding started by itself when the SAM came up with an image in the panel.
    qtbot.waitUntil(lambda: w.prefetch.state == "ready", timeout=WAIT_MS)
    session = w.backend.session
    assert session.encode_count == 1 and "ready" in w.embed_status.text()
    w.source_combo.setCurrentText("empty")
    w.start()
    viewer.layers["lesion box"].add_rectangles(rectangle(gt))
    qtbot.waitUntil(lambda: w.proposals == 1 and not w.is_busy, timeout=WAIT_MS)
    assert dice(viewer.layers["lesion proposal"].data, gt) > 0.85
    assert session.encode_count == 1  # the prompt hit the background embedding
    w.source_combo.setCurrentText("empty")
    w.start()  # the same image again: a cache hit, no second encoding
    qtbot.waitUntil(lambda: w.prefetch.worker is None, timeout=WAIT_MS)
    assert session.encode_count == 1


def test_a_prompt_before_the_embedding_is_answered_when_it_is_ready(viewer, qtbot,
                                                                    held_out) -> None:
    image, gt = held_out
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget

    viewer.add_image(image, name="lesion", rgb=True)
    w = CorrectionWidget(viewer)
    qtbot.waitUntil(lambda: w.backend is not None, timeout=WAIT_MS)
    # The panel's own prefetch may have run already: drop it, hold the next one.
    qtbot.waitUntil(lambda: w.prefetch.worker is None, timeout=WAIT_MS)
    w.backend.session.clear_cache()
    gate = Gate(w.backend.session)
    w.prefetch_image()
    assert gate.entered.wait(WAIT_MS / 1000)
    w.source_combo.setCurrentText("empty")
    w.start()
    viewer.layers["lesion box"].add_rectangles(rectangle(gt))
    qtbot.waitUntil(lambda: w.worker is not None, timeout=WAIT_MS)  # the prompt waits...
    qtbot.wait(300)  # ...in its worker, while the GUI thread keeps running events
    assert w.proposals == 0 and w.prefetch.is_running
    gate.release.set()
    qtbot.waitUntil(lambda: w.proposals == 1 and not w.is_busy, timeout=WAIT_MS)
    assert w.prefetch.state == "ready"
    assert dice(viewer.layers["lesion proposal"].data, gt) > 0.85


def test_cancel_the_embedding(viewer, qtbot, held_out) -> None:
    image, _ = held_out
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget

    viewer.add_image(image, name="lesion", rgb=True)
    w = CorrectionWidget(viewer)
    qtbot.waitUntil(lambda: w.backend is not None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: w.prefetch.worker is None, timeout=WAIT_MS)
    session = w.backend.session
    session.clear_cache()
    before = session.encode_count
    gate = Gate(session)
    w.prefetch_image()
    assert gate.entered.wait(WAIT_MS / 1000)
    assert w.cancel_embed_button.isEnabled()
    w.cancel_embed_button.click()
    gate.release.set()
    qtbot.waitUntil(lambda: w.prefetch.worker is None, timeout=WAIT_MS)
    assert w.prefetch.state == "cancelled" and "cancelled" in w.embed_status.text()
    assert session.encode_count == before and not w.cancel_embed_button.isEnabled()


def test_onnx_runtime_backend_answers_a_box(viewer, qtbot, held_out) -> None:
    image, gt = held_out
    w = panel(viewer, qtbot, image, runtime="onnxruntime")
    qtbot.waitUntil(lambda: w.prefetch.state == "ready" and w.prefetch.worker is None,
                    timeout=WAIT_MS)
    w.source_combo.setCurrentText("empty")
    w.start()
    viewer.layers["lesion box"].add_rectangles(rectangle(gt))
    qtbot.waitUntil(lambda: w.proposals == 1 and not w.is_busy, timeout=WAIT_MS)
    assert dice(viewer.layers["lesion proposal"].data, gt) > 0.85
    assert w.backend.session.encode_count == 1
