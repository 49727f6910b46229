"""Writing a simulation's results: ``summary.json``, ``images.csv``, ``triage.json``,
``settings.json`` in one output folder (created; existing files of these names replaced)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

SUMMARY_NAME = "summary.json"
CSV_NAME = "images.csv"
TRIAGE_NAME = "triage.json"
SETTINGS_NAME = "settings.json"


def clean_json(value: Any) -> Any:
    """JSON-safe: NaN/Inf -> None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def write_report(result, out: str | Path) -> dict[str, Path]:
    """Write a ``SimulationResult`` to ``out``; returns ``{kind: path}``.

    Raises:
        OSError: ``out`` cannot be created or written (e.g. it is a file).
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: --out exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"summary": folder / SUMMARY_NAME, "csv": folder / CSV_NAME,
             "triage": folder / TRIAGE_NAME, "settings": folder / SETTINGS_NAME}
    paths["summary"].write_text(json.dumps(clean_json(result.summary), indent=1, allow_nan=False))
    paths["triage"].write_text(json.dumps(clean_json(result.triage), indent=1, allow_nan=False))
    settings = dict(result.settings, skipped=[list(s) for s in result.skipped])
    paths["settings"].write_text(json.dumps(clean_json(settings), indent=1, allow_nan=False))
    fields = list(result.rows[0]) if result.rows else ["dataset", "id", "workflow"]
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(result.rows)
    return paths
