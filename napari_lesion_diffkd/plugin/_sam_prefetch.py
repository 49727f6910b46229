"""The correction panel's background image embedding: encode as soon as an image is shown.

A LiteMedSAM embedding costs seconds on a CPU, so the panel does not wait for the first
prompt: when an image is shown (chosen in the panel, or a SAM gets loaded while one is), its
pixels go to the backend's ``prepare`` (``core.sam.correction_backend.SamCorrection``) in a
worker thread. The backend caches the embedding under the same key a prompt uses, so a
prompt then runs the decoder only; a prompt given while the embedding runs waits for it in
its own worker (the backend's lock), never on the GUI thread. :meth:`cancel` (the panel's
"Cancel embedding" button, or a newer image) stops the encoder between two layers
(``core.sam.prefetch``). Backends without ``prepare`` are simply not prefetched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal


class EmbeddingPrefetch(QObject):
    """One background embedding at a time; a newer one cancels the older.

    Signals:
        changed(str): a readable state line ("embedding <name>...", "embedding ready",
            "embedding cancelled", "embedding failed: ...").
        idle(): no embedding runs any more (its worker finished, none queued).

    Public attributes used by tests: ``worker`` (None when idle), ``state`` (``idle`` |
    ``running`` | ``ready`` | ``cancelled`` | ``failed``), ``ready_count``, ``key`` (the
    image key being or last embedded).
    """

    changed = Signal(str)
    idle = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker: Any = None
        self.state = "idle"
        self.ready_count = 0
        self.key: Any = None
        self._token: Any = None
        self._next: tuple | None = None  # asked for while another ran
        self._running: tuple = (None, None)  # (backend, pixels) being embedded

    @property
    def is_running(self) -> bool:
        return self.worker is not None

    def start(self, backend: Any, pixels: np.ndarray, key: Any) -> None:
        """Embed ``pixels`` ((Y, X) or (Y, X, 3), the image or the slice) for ``backend``
        under the request key ``key`` (``(layer name, z)``)."""
        if backend is None or not hasattr(backend, "prepare"):
            return
        if self.worker is not None:
            if self._same(backend, pixels, key):
                return  # already embedding exactly this (Start on the shown image)
            if self._token is not None:
                self._token.cancel()  # the newest image wins
            self._next = (backend, pixels, key)
            return
        from napari_lesion_diffkd.core.sam.prefetch import CancelToken
        from napari_lesion_diffkd.plugin._workers import start_function_worker

        token = CancelToken()
        self._token, self.key, self.state = token, key, "running"
        self._running = (backend, pixels)
        self.changed.emit(f"embedding {key[0] if isinstance(key, tuple) else key} in the "
                          "background (prompts are answered when it is ready)...")
        # Bound methods, not closures: Qt drops them if this object is deleted first.
        self.worker = start_function_worker(lambda: backend.prepare(pixels, key, token),
                                            on_result=self._on_ready,
                                            on_error=self._on_error,
                                            on_finished=self._on_finished)

    def _same(self, backend: Any, pixels: np.ndarray, key: Any) -> bool:
        running_backend, running_pixels = self._running
        if backend is not running_backend or key != self.key or running_pixels is None:
            return False
        return pixels is running_pixels or (
            pixels.shape == running_pixels.shape and np.array_equal(pixels, running_pixels))

    def cancel(self) -> bool:
        """Stop the running embedding (True when one was running)."""
        self._next = None
        if self.worker is None or self._token is None:
            return False
        self._token.cancel()
        return True

    def _on_ready(self, _: Any) -> None:
        self.state = "ready"
        self.ready_count += 1
        self.changed.emit("embedding ready: prompts run the decoder only")

    def _on_error(self, exc: BaseException) -> None:
        from napari_lesion_diffkd.core.sam.prefetch import EncodeCancelled

        if isinstance(exc, EncodeCancelled):
            self.state = "cancelled"
            self.changed.emit("embedding cancelled (a prompt will compute it)")
        else:
            self.state = "failed"
            self.changed.emit(f"embedding failed: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self._token = None
        self._running = (None, None)
        pending, self._next = self._next, None
        if pending is not None:
            self.start(*pending)
        if self.worker is None:
            self.idle.emit()
