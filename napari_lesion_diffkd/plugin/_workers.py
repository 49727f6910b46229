"""Run core job generators in a worker thread (napari's GeneratorWorker), with progress, result and cancel.

Core generators yield :class:`core.jobs.JobEvent` and return a result; napari's
``GeneratorWorker`` checks for ``quit()`` between yields, so Cancel takes effect after the
current network call (tens of milliseconds for a student, one step for a teacher).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any


def start_generator_worker(
    factory: Callable[[], Generator[Any, None, Any]],
    on_event: Callable[[Any], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    on_aborted: Callable[[], None] | None = None,
):
    """Start ``factory()`` in a worker thread and wire its signals; returns the worker.

    ``on_result`` is called on the GUI thread with the generator's return value;
    ``on_aborted`` when the worker was quit; ``on_finished`` always, last.
    """
    # superqt's create_worker (which napari's wraps): napari 0.9.2's wrapper adds a task-status
    # hook whose ``errored`` slot takes the wrong number of arguments, so any error in the
    # worker would raise a second TypeError inside the Qt event loop.
    from superqt.utils import create_worker

    # _ignore_errors: our on_error shows the message; otherwise superqt re-raises it in Qt.
    worker = create_worker(factory, _start_thread=False, _ignore_errors=on_error is not None)
    if on_event is not None:
        worker.yielded.connect(on_event)
    if on_result is not None:
        worker.returned.connect(on_result)
    if on_error is not None:
        worker.errored.connect(on_error)
    if on_aborted is not None:
        worker.aborted.connect(on_aborted)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker
