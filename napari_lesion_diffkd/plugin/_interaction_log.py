"""The app's interaction log: every change of an image's label, consensus and proposal
layers, every SAM prompt and model call, stored in the open project
(``core/store/interactions.py``; ``lesion-diffkd project replay`` / ``effort`` read it).

One :class:`InteractionLog` per viewer (:func:`interaction_log`). It tracks the plugin's
``label`` (project), ``consensus`` (segment) and ``proposal`` (correction) layers from the
moment they appear: the content then is the session's *base*
(``core.store.interaction_session.SessionRecorder``), each later change is one event with
the changed pixels only. What a change was:

* inside :meth:`InteractionLog.cause` (the panels wrap accept, undo / redo, model writes
  and SAM answers in it): that kind; the layers are compared when the block ends;
* a napari ``paint`` event outside it: a brush / fill / erase ``stroke`` (compared on the
  next event-loop turn: ``data_setitem`` reports before it writes);
* the layer's history moving without a paint (napari's own Ctrl-Z / Ctrl-Shift-Z):
  ``undo`` / ``redo``;
* ``layer.data`` replaced: an ``edit`` (``source: replaced``).

Saving (project panel): :meth:`InteractionLog.mark_save` catches up any change no event
reported (an ``edit``, ``source: unlogged``) and reserves the save's place;
:meth:`InteractionLog.link_save` stores the ``save`` event with the new label version once
the background save is done. Events wait in memory while no project is open or the image is
not in it, and are stored as soon as they can be. The log never breaks the GUI: a store
error leaves the events pending.

GUI thread only; no Qt widgets.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_lesion_diffkd.core.store.interaction_session import SessionRecorder
from napari_lesion_diffkd.plugin._layers import digest, managed

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

#: (role, group) of the layers whose pixels are logged.
TRACKED = {("label", "project"): "label", ("consensus", "segment"): "consensus",
           ("proposal", "correction"): "proposal"}


@dataclass
class _Tracked:
    layer: Any
    image: str
    recorder: SessionRecorder
    undo_len: int = 0
    redo_len: int = 0
    deferred: bool = False
    handlers: list[tuple[Any, Any]] = field(default_factory=list)


def _history(layer: Any) -> tuple[int, int]:
    return len(getattr(layer, "_undo_history", ())), len(getattr(layer, "_redo_history", ()))


class InteractionLog:
    """See the module docstring. Attributes: ``store_errors`` (store failures so far)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_lesion_diffkd.plugin._context import app_context

        self._viewer = weakref.ref(viewer)
        self.context = app_context(viewer)
        self._tracked: dict[int, _Tracked] = {}
        self._finished: list[_Tracked] = []  # removed layers whose events wait for a store
        self._notes: dict[str, SessionRecorder] = {}
        self._causes: list[tuple[str, dict[str, Any]]] = []
        self._saves: dict[int, tuple[Any, _Tracked, int]] = {}
        self._futures: dict[int, Any] = {}
        self.store_errors = 0
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        self.context.project_changed.connect(self._on_project_changed)
        for layer in list(viewer.layers):
            self.attach(layer)

    # -- what the panels call ------------------------------------------------------------
    @contextlib.contextmanager
    def cause(self, kind: str, data: dict[str, Any] | None = None) -> Iterator[None]:
        """Changes of the tracked layers inside the block are ``kind`` events (the
        outermost block wins); they are compared when the outermost block ends."""
        self._causes.append((kind, dict(data or {})))
        try:
            yield
        finally:
            outer = self._causes[0]
            self._causes.pop()
            if not self._causes:
                for tracked in list(self._tracked.values()):
                    self._check(tracked, *outer)

    def note(self, image: str, kind: str, data: dict[str, Any] | None = None) -> None:
        """An event without pixels for ``image`` (``prompt``, ``model``, ``review``)."""
        notes = self._notes.get(image)
        if notes is None:
            notes = self._notes[image] = SessionRecorder(None, None)
        notes.note(kind, data)
        self._persist(image, notes)

    def check(self, layer: Any, kind: str = "edit", data: dict[str, Any] | None = None) -> int:
        """Compare a tracked layer with its last logged content now; returns the pixels
        logged as ``kind`` (0 when unchanged or untracked)."""
        tracked = self._tracked.get(id(layer))
        return 0 if tracked is None else self._check(tracked, kind, data or {})

    def mark_save(self, item: Any, layer: Any) -> None:
        """``layer``'s content is being saved as ``item`` (a ``PendingSave``)."""
        tracked = self._tracked.get(id(layer))
        if tracked is None:
            return
        try:
            seq = tracked.recorder.reserve_save(np.asarray(layer.data))
        except ValueError:  # the layer changed shape without an event: a new session
            self._restart(tracked)
            seq = tracked.recorder.reserve_save(np.asarray(layer.data))
        tracked.deferred = False
        self._saves[id(item)] = (item, tracked, seq)
        self._persist(tracked.image, tracked.recorder)

    def saving(self, item: Any, future: Any) -> None:
        """The save queue's Future for ``item`` (see :meth:`link_finished`)."""
        if id(item) in self._saves:
            self._futures[id(item)] = future

    def link_finished(self) -> None:
        """Link every save whose write is done (the viewer closes: the queue's ``saved``
        signals may not be delivered any more)."""
        for key, (item, _tracked, _seq) in list(self._saves.items()):
            future = self._futures.get(key)
            if future is not None and future.done() and future.result() is not None:
                self.link_save(item, future.result())

    def link_save(self, item: Any, version: Any) -> None:
        """The save of ``item`` became label ``version`` (a ``LabelVersion``)."""
        entry = self._saves.get(id(item))
        if entry is None or entry[0] is not item:
            return
        del self._saves[id(item)]
        self._futures.pop(id(item), None)
        _, tracked, seq = entry
        tracked.recorder.saved(seq, version.id, {"kind": version.kind})
        self._persist(tracked.image, tracked.recorder)

    def _on_project_changed(self, _path: Any) -> None:
        self.persist()

    def persist(self) -> int:
        """Store every pending event that can be stored now; returns how many remain."""
        for tracked in [*self._tracked.values(), *self._finished]:
            self._persist(tracked.image, tracked.recorder)
        for image, notes in self._notes.items():
            self._persist(image, notes)
        self._finished = [t for t in self._finished if t.recorder.pending]
        return sum(len(t.recorder.pending) for t in [*self._tracked.values(), *self._finished]) \
            + sum(len(n.pending) for n in self._notes.values())

    def session(self, layer: Any) -> SessionRecorder | None:
        """The recorder of a tracked layer (tests, scripts)."""
        tracked = self._tracked.get(id(layer))
        return None if tracked is None else tracked.recorder

    # -- tracking ------------------------------------------------------------------------
    def attach(self, layer: Any) -> bool:
        """Track ``layer`` if it is one of :data:`TRACKED`; True if it is tracked now."""
        marker = managed(layer)
        role = None if marker is None else TRACKED.get((marker.get("role"), marker.get("group")))
        if role is None or layer.__class__.__name__ != "Labels":
            return False
        if id(layer) in self._tracked:
            return True
        tracked = _Tracked(layer, str(marker.get("image")), self._recorder(layer, role))
        tracked.undo_len, tracked.redo_len = _history(layer)
        ref = weakref.ref(self)

        def on(event_name: str, via: str) -> None:
            def handler(event: Any = None) -> None:
                me = ref()
                if me is not None:
                    me._on_layer_event(tracked, via)

            emitter = getattr(layer.events, event_name)
            emitter.connect(handler)
            tracked.handlers.append((emitter, handler))

        on("paint", "paint")
        on("data", "data")
        on("set_data", "history")
        self._tracked[id(layer)] = tracked
        self._persist(tracked.image, tracked.recorder)
        return True

    def _recorder(self, layer: Any, role: str) -> SessionRecorder:
        marker = managed(layer) or {}
        data = np.asarray(layer.data)
        source: dict[str, Any] = {}
        if role == "label" and marker.get("version") is not None \
                and marker.get("clean") == digest(data):
            source = {"source": "label", "version": int(marker["version"])}
        return SessionRecorder(role, data, source)

    def _restart(self, tracked: _Tracked) -> None:
        self._persist(tracked.image, tracked.recorder)
        if tracked.recorder.pending:
            self._finished.append(_Tracked(None, tracked.image, tracked.recorder))
        tracked.recorder = self._recorder(tracked.layer, tracked.recorder.layer or "label")
        tracked.undo_len, tracked.redo_len = _history(tracked.layer)
        self._persist(tracked.image, tracked.recorder)

    def _on_inserted(self, event: Any) -> None:
        self.attach(event.value)

    def _on_removed(self, event: Any) -> None:
        tracked = self._tracked.pop(id(event.value), None)
        if tracked is None:
            return
        for emitter, handler in tracked.handlers:
            with contextlib.suppress(Exception):
                emitter.disconnect(handler)
        with contextlib.suppress(ValueError):
            self._check(tracked, "edit", {"source": "unlogged"})
        self._persist(tracked.image, tracked.recorder)
        if tracked.recorder.pending:
            self._finished.append(tracked)

    def _on_layer_event(self, tracked: _Tracked, via: str) -> None:
        if self._causes:
            return  # compared when the cause block ends
        if via == "paint":
            if not tracked.deferred:  # data_setitem reports before it writes
                tracked.deferred = True
                from qtpy.QtCore import QTimer

                ref = weakref.ref(self)
                QTimer.singleShot(0, lambda: (me := ref()) is not None
                                  and me._deferred(tracked))
            return
        if via == "data":
            self._check(tracked, "edit", {"source": "replaced"})
            return
        undo, redo = _history(tracked.layer)
        if (undo, redo) == (tracked.undo_len, tracked.redo_len):
            return  # a refresh that changed nothing we log
        self._check(tracked, "undo" if redo > tracked.redo_len else "redo", {})

    def _deferred(self, tracked: _Tracked) -> None:
        if tracked.deferred and id(tracked.layer) in self._tracked:
            self._check(tracked, "stroke", {})

    def _check(self, tracked: _Tracked, kind: str, data: dict[str, Any]) -> int:
        if tracked.deferred:
            tracked.deferred = False
            kind, data = ("stroke", {}) if kind in ("edit", "undo", "redo") else (kind, data)
        current = np.asarray(tracked.layer.data)
        if current.shape != tracked.recorder.shape:
            self._restart(tracked)
            return 0
        start = time.perf_counter()
        count = tracked.recorder.change(current, kind, data or None)
        tracked.undo_len, tracked.redo_len = _history(tracked.layer)
        if count:
            log.debug("logged %s of %d px on %s in %.1f ms", kind, count, tracked.image,
                      1e3 * (time.perf_counter() - start))
            self._persist(tracked.image, tracked.recorder)
        return count

    # -- storing -------------------------------------------------------------------------
    def _persist(self, image: str, recorder: SessionRecorder) -> None:
        store = self.context.store
        if store is None or not recorder.pending:
            return
        from napari_lesion_diffkd.core.store import StoreError
        from napari_lesion_diffkd.core.store.errors import InvalidInputError
        from napari_lesion_diffkd.core.store.interactions import record_events

        events = recorder.take()
        try:
            record_events(store, image, events)
        except InvalidInputError:
            recorder.give_back(events)  # not a project image (yet)
        except (StoreError, OSError) as exc:
            recorder.give_back(events)
            self.store_errors += 1
            if self.store_errors == 1:  # once: the events wait, the GUI goes on
                log.warning("interaction log not stored yet, kept in memory (%s)", exc)


_LOGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def interaction_log(viewer: napari.viewer.Viewer) -> InteractionLog:
    """The viewer's :class:`InteractionLog` (created, and tracking, on first use)."""
    found = _LOGS.get(viewer)
    if found is None:
        found = _LOGS[viewer] = InteractionLog(viewer)
    return found
