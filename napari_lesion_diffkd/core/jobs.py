"""Progress events yielded by long-running core generators, and helpers to drive them.

Every long operation in core (sampling, training, distillation) is a generator that yields
small :class:`JobEvent` objects and *returns* its result (``StopIteration.value``). A consumer
can stop it between yields simply by not asking for the next event (``gen.close()``); the GUI
runs the generator in a worker thread, the CLI with a progress bar, tests inline.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class JobEvent:
    """One progress report.

    Attributes:
        kind: ``"progress"`` (a step done), ``"metric"`` (values such as loss/Dice),
            ``"log"`` (a message) or ``"checkpoint"`` (a file was written).
        step: steps done so far (0-based count, i.e. ``step == total`` when finished).
        total: total number of steps, or 0 when unknown.
        message: short human-readable text.
        values: numbers attached to the event (e.g. ``{"loss": 0.12}``).
    """

    kind: str = "progress"
    step: int = 0
    total: int = 0
    message: str = ""
    values: dict[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Progress in [0, 1] (0 when the total is unknown)."""
        return min(1.0, self.step / self.total) if self.total else 0.0


class Cancelled(Exception):
    """Raised by :func:`run_to_completion` when ``should_stop`` asked to stop."""


def run_to_completion(
    gen: Generator[JobEvent, None, T],
    on_event: Callable[[JobEvent], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> T:
    """Drive a job generator to its end and return its return value.

    Args:
        gen: a generator yielding :class:`JobEvent` and returning a result.
        on_event: called with every event (e.g. to update a progress bar).
        should_stop: polled after each event; when it returns True the generator is closed
            and :class:`Cancelled` is raised.

    Returns:
        The generator's return value.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
        if should_stop is not None and should_stop():
            gen.close()
            raise Cancelled("stopped by request")
