"""Turn a layer's successive contents into interaction events (headless, no napari).

:class:`SessionRecorder` keeps a copy (the *shadow*) of what one tracked layer held at the
last event; :meth:`SessionRecorder.change` compares the layer's current pixels with it and
queues one event holding only the changed pixels (``interactions.encode_diff``). Events
wait in :attr:`SessionRecorder.pending` until the caller stores them
(``interactions.record_events``), so a log started before the image is in a project is
stored once it is. The GUI (``plugin/_interaction_log.py``) and scripted tests drive it the
same way; ``replay.py`` rebuilds the saved label from what it stored.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.store.files import unique_name
from napari_lesion_diffkd.core.store.interactions import NewEvent, encode_diff
from napari_lesion_diffkd.core.store.schema import now

#: Pending events kept per session while no project can take them; beyond it the oldest
#: non-base events are dropped (the session is then marked incomplete, replay will differ).
MAX_PENDING = 5000


class SessionRecorder:
    """One tracked layer of one image, from its base on.

    Args:
        layer: the layer's role (``label``, ``consensus``, ``proposal``), or None for a
            session of the image's notes only (prompts, model calls, reviews).
        base: the layer's content when tracking starts (None: a notes session, no pixels).
        source: where the base came from: ``{"source": "label", "version": id}`` when it
            equals a stored label version, else ``{}`` (stored as ``empty`` or
            ``pixels``).
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(self, layer: str | None, base: np.ndarray | None,
                 source: dict[str, Any] | None = None, clock: Any = time.monotonic) -> None:
        self.layer = layer
        self.session = unique_name("s")
        self.shadow = None if base is None else np.array(base, copy=True, order="C")
        self.pending: list[NewEvent] = []
        self.incomplete = False
        self._clock = clock
        self._t0 = clock()
        self._seq = 0
        if self.shadow is None:
            return
        info = dict(source or {})
        data: dict[str, Any] = {"shape": list(self.shadow.shape),
                                "dtype": str(self.shadow.dtype)}
        blob = None
        count = 0
        if info.get("source") == "label":
            data.update(source="label", version=int(info["version"]))
        else:
            blob, count = encode_diff(None, self.shadow)
            data["source"] = "pixels" if blob is not None else "empty"
        self._queue("base", data, blob, count)

    @property
    def shape(self) -> tuple[int, ...]:
        return () if self.shadow is None else tuple(self.shadow.shape)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _queue(self, kind: str, data: dict[str, Any] | None = None, blob: bytes | None = None,
               pixels: int = 0, seq: int | None = None,
               label_version_id: int | None = None) -> NewEvent:
        event = NewEvent(session=self.session, seq=self._next_seq() if seq is None else seq,
                         kind=kind, at=now(), layer=self.layer,
                         elapsed=round(self._clock() - self._t0, 4), pixels=pixels,
                         data=data, payload=blob, label_version_id=label_version_id)
        self.pending.append(event)
        if len(self.pending) > MAX_PENDING:
            self.pending.pop(1 if self.pending[0].kind == "base" else 0)
            self.incomplete = True
        return event

    def change(self, current: np.ndarray, kind: str, data: dict[str, Any] | None = None
               ) -> int:
        """Queue the pixels of ``current`` that differ from the shadow as one ``kind``
        event; returns how many (0: no event). ``current`` must have the base's shape."""
        current = np.asarray(current)
        if self.shadow is None:
            raise ValueError("a notes session has no pixels")
        if current.shape != self.shadow.shape:
            raise ValueError(f"layer shape {current.shape} != session shape {self.shape}")
        blob, count = encode_diff(self.shadow, current)
        if not count:
            return 0
        np.copyto(self.shadow, current, casting="unsafe")
        self._queue(kind, data, blob, count)
        return count

    def note(self, kind: str, data: dict[str, Any] | None = None) -> NewEvent:
        """Queue an event without pixels (a prompt, a model call, a review)."""
        return self._queue(kind, data)

    def reserve_save(self, current: np.ndarray) -> int:
        """Before a save of ``current``: queue whatever changed unnoticed (an ``edit``), and
        return the seq the ``save`` event will get (:meth:`saved`)."""
        self.change(current, "edit", {"source": "unlogged"})
        return self._next_seq()

    def saved(self, seq: int, version_id: int, data: dict[str, Any] | None = None) -> None:
        """The save reserved as ``seq`` became label version ``version_id``."""
        self._queue("save", data, seq=seq, label_version_id=int(version_id))

    def take(self) -> list[NewEvent]:
        """The pending events (now the caller's to store)."""
        out, self.pending = self.pending, []
        return out

    def give_back(self, events: list[NewEvent]) -> None:
        """Events that could not be stored, to try again later (kept first)."""
        self.pending = events + self.pending
