"""Label saves off the GUI thread, in order, with nothing lost.

Saves are written first-in first-out by one background thread that exists only while there
is something to write, with its own :class:`core.store.ProjectStore` (SQLite connections are
per thread). The caller hands over a *copy* of the labels at the moment of the save, so the
layer may change or disappear right after. A failed save keeps its array in
:attr:`SaveQueue.failed_saves` for :meth:`SaveQueue.retry_failed`; :meth:`SaveQueue.flush`
waits until everything queued is written (used when the viewer closes).
"""

from __future__ import annotations

import collections
import getpass
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QObject, Signal


@dataclass
class PendingSave:
    """A label waiting to be written (``ProjectStore.save_label`` arguments).

    Attributes:
        image_id: the store's image id.
        labels: (Y, X) or (Z, Y, X) integer label ids in the image's pixel frame (a copy).
        kind: label kind, ``human`` for everything a person saved or edited.
        note: free text (what was saved, and why: button or autosave).
        source: the layer it came from.
    """

    image_id: int
    labels: np.ndarray
    kind: str = "human"
    note: str | None = None
    source: str | None = None


class SaveQueue(QObject):
    """FIFO label writer for one project folder.

    Signals (delivered on the GUI thread, where this QObject lives):
        saved(object, object): the :class:`PendingSave` and the new ``LabelVersion``.
        failed(object, str): the :class:`PendingSave` and the error text.
    """

    saved = Signal(object, object)
    failed = Signal(object, str)

    def __init__(self, project: str | os.PathLike) -> None:
        super().__init__()
        self.project = str(project)
        self.failed_saves: list[PendingSave] = []
        self.author = _user()
        self._items: collections.deque[tuple[PendingSave, Future]] = collections.deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, item: PendingSave) -> Future:
        """Queue a save; the Future's result is the new ``LabelVersion`` (None if it failed)."""
        future: Future = Future()
        with self._lock:
            self._items.append((item, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="lesion-save")
                self._thread.start()
        return future

    def pending(self) -> int:
        """Saves queued or being written."""
        with self._lock:
            return len(self._items) + (self._thread is not None)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every save queued so far is written (or failed)."""
        while True:
            with self._lock:
                thread = self._thread
            if thread is None or thread is threading.current_thread():
                return
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"label saves still running after {timeout} s")

    def retry_failed(self) -> int:
        """Queue the failed saves again; returns how many."""
        items, self.failed_saves = self.failed_saves, []
        for item in items:
            self.submit(item)
        return len(items)

    def _drain(self) -> None:
        from napari_lesion_diffkd.core.store import ProjectStore

        store = None
        try:
            while True:
                with self._lock:
                    if not self._items:
                        self._thread = None
                        return
                    item, future = self._items.popleft()
                try:
                    if store is None:
                        store = ProjectStore(self.project)
                    version = store.save_label(item.image_id, item.labels, kind=item.kind,
                                               author=self.author, note=item.note)
                except Exception as exc:  # store / disk errors: keep the data, tell the user
                    self.failed_saves.append(item)
                    future.set_result(None)
                    self.failed.emit(item, f"{type(exc).__name__}: {exc}")
                    continue
                future.set_result(version)
                self.saved.emit(item, version)
        finally:
            if store is not None:
                store.close()
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None  # an unexpected exit: the next submit restarts


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): still record who saved it
        return "napari"
