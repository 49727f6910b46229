"""Cancelling an image encoding that runs in a background thread.

A LiteMedSAM embedding costs about 75 GFLOPs (seconds on a CPU), so the correction panel
computes it as soon as an image is shown, in a worker thread, and the user (or a newer
image) may cancel it. Torch has no way to stop a running ``forward`` from outside, so
:func:`cancellable_encoder` registers a forward pre-hook on every submodule of the image
encoder for the duration of one encoding: each hook checks the :class:`CancelToken` and
raises :class:`EncodeCancelled` between two layers (TinyViT has ~50 of them, so a cancel
takes effect within tens of milliseconds). ONNX Runtime sessions stop through
``RunOptions.terminate`` instead (``core.onnx.sam_session.OnnxPromptSession``), registered with
:meth:`CancelToken.on_cancel`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn


class EncodeCancelled(RuntimeError):
    """The encoding was cancelled before it finished (nothing was cached)."""


class CancelToken:
    """A thread-safe cancel flag with callbacks (run once, on the first :meth:`cancel`)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on cancel (at once when already cancelled)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise EncodeCancelled("image encoding cancelled")


@contextmanager
def cancellable_encoder(encoder: nn.Module, token: CancelToken | None) -> Iterator[None]:
    """While active, every submodule call of ``encoder`` first checks ``token``.

    The caller must hold the session's lock: the hooks are on the shared module.
    """
    if token is None:
        yield
        return
    token.raise_if_cancelled()

    def check(_module: nn.Module, _args: object) -> None:
        token.raise_if_cancelled()

    handles = [m.register_forward_pre_hook(check) for m in encoder.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
