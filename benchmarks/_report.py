"""Update one marked section of docs/benchmarks.md, leaving the others as they are."""

from __future__ import annotations

from pathlib import Path

HEADER = (
    "# Benchmarks\n\nMeasured on this project's 2-core, 24 GiB CPU VM unless marked otherwise. "
    "Each section names the command that produced it; ratios are measured side by side in one "
    "run, absolute times on these machines are noisy.\n"
)


def update_section(path: Path, key: str, text: str) -> None:
    """Replace the text between ``<!-- key:start -->`` and ``<!-- key:end -->`` (append if
    absent)."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    doc = path.read_text() if path.exists() else HEADER
    block = f"{start}\n{text.strip()}\n{end}"
    if start in doc and end in doc:
        before, rest = doc.split(start, 1)
        _, after = rest.split(end, 1)
        doc = before + block + after
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
