"""Run core job generators in a worker thread (superqt's GeneratorWorker), with progress,
result and cancel.

Core generators yield :class:`core.jobs.JobEvent` and return a result. ``worker.quit()`` is
checked between yields, so Cancel takes effect after the current network call (tens of
milliseconds for a student, one step for a teacher). The generator is then *closed* in the
worker thread (its ``finally`` blocks run there), not left suspended for the garbage
collector, which might run it on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any


class WorkerFailure(Exception):
    """A RuntimeError raised inside a generator worker, carried as a plain Exception
    (``original``) so that superqt reports it through ``errored`` and ``finished``."""

    def __init__(self, original: RuntimeError):
        super().__init__(str(original))
        self.original = original


def unwrap_error(exc: BaseException) -> BaseException:
    """The exception the work raised (undoing :class:`WorkerFailure`)."""
    return exc.original if isinstance(exc, WorkerFailure) else exc


def start_generator_worker(
    factory: Callable[[], Generator[Any, None, Any]],
    on_event: Callable[[Any], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    on_aborted: Callable[[], None] | None = None,
):
    """Start ``factory()`` in a worker thread and wire its signals; returns the worker.

    ``on_event`` gets every yielded event and ``on_result`` the generator's return value,
    both on the GUI thread; ``on_aborted`` is called when the worker was quit;
    ``on_finished`` always, last.
    """
    # superqt's create_worker (which napari's wraps): napari 0.9.2's wrapper adds a task-status
    # hook whose ``errored`` slot takes the wrong number of arguments, so any error in the
    # worker would raise a second TypeError inside the Qt event loop.
    from superqt.utils import create_worker

    holder: dict[str, Any] = {}

    def closing() -> Generator[Any, None, Any]:
        try:
            gen = factory()
            try:
                while True:
                    try:
                        event = next(gen)
                    except StopIteration as stop:
                        return stop.value
                    if holder["worker"].abort_requested:
                        gen.close()  # here, in the worker thread; the worker then stops
                    yield event
            finally:
                gen.close()
        except RuntimeError as exc:
            # superqt's GeneratorWorker takes a RuntimeError for "the worker was deleted":
            # it only warns, and emits neither errored nor finished, so the widget would wait
            # for ever. BundleError, SamCheckpointError and torch's errors are RuntimeErrors.
            raise WorkerFailure(exc) from exc

    # _ignore_errors: our on_error shows the message; otherwise superqt re-raises it in Qt.
    worker = create_worker(closing, _start_thread=False, _ignore_errors=on_error is not None)
    holder["worker"] = worker
    if on_event is not None:
        worker.yielded.connect(on_event)
    if on_result is not None:
        worker.returned.connect(on_result)
    if on_error is not None:
        worker.errored.connect(lambda exc: on_error(unwrap_error(exc)))
    if on_aborted is not None:
        worker.aborted.connect(on_aborted)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker


def start_function_worker(
    function: Callable[[], Any],
    on_result: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
):
    """Run a plain function in a worker thread (imports, file reads, a cancel that waits)."""
    from superqt.utils import create_worker

    worker = create_worker(function, _start_thread=False, _ignore_errors=on_error is not None)
    if on_result is not None:
        worker.returned.connect(on_result)
    if on_error is not None:
        worker.errored.connect(on_error)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker
