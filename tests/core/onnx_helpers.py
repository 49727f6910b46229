"""Helpers of the ONNX tests: validation records of a shipped bundle, read from ../shared/data."""

from __future__ import annotations

from pathlib import Path

from napari_lesion_diffkd.core.data.datasets import PairRecord, scan_pairs


def validation_records(bundle, data_root: Path, n: int) -> list[PairRecord]:
    """``n`` records evenly spread over the bundle's stored validation split (every dataset of
    a multi-dataset split represented), never its training images."""
    prov = bundle.config["provenance"]
    val_ids = set(prov["split"]["val_ids"])
    records = [r for d in prov["data"] for r in scan_pairs(data_root / Path(d).name)
               if r.id in val_ids]
    assert len(records) >= n, f"{bundle.name}: only {len(records)} validation records found"
    step = len(records) / n
    return [records[int(i * step)] for i in range(n)]
