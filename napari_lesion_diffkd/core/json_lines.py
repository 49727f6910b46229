"""Strict JSON lines for the CLI's stdout: non-finite numbers become ``null``.

Why: Python's ``json.dumps`` writes ``NaN`` / ``Infinity`` by default, which is not JSON;
``jq`` and most parsers reject the whole line. A NaN score (e.g. from a broken image or
model) printed that way made ``predict``'s machine-readable output unreadable.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (also numpy floats) replaced by None, recursively
    through dicts, lists and tuples (tuples become lists, as JSON has no tuples)."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):  # numpy float64 is a float
        return None
    if hasattr(value, "dtype") and getattr(value, "shape", None) == ():  # numpy scalar
        item = value.item()
        return finite_or_none(item) if isinstance(item, float) else item
    return value


def json_line(obj: Any) -> str:
    """One line of strict JSON (``allow_nan=False``) with non-finite numbers as null."""
    return json.dumps(finite_or_none(obj), allow_nan=False)
