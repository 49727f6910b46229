"""Where the real datasets live: an environment variable, or ``../shared/data`` near the checkout."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "LESION_DIFFKD_DATA"

#: Dataset folder names in the shared data tree, by modality.
DATASETS_BY_MODALITY: dict[str, tuple[str, ...]] = {
    "dermoscopy": ("ph2_dermoscopy",),
    "ultrasound": ("busbra_breast_ultrasound", "ddti_thyroid_ultrasound"),
    "ct": ("covid19_ct_infection",),
}


def find_data_root() -> Path | None:
    """Return the folder holding the datasets (``ph2_dermoscopy/`` etc.), or None.

    Looks at ``$LESION_DIFFKD_DATA`` first, then ``../shared/data`` beside the repository
    checkout this package was imported from, then beside the current directory.
    """
    candidates: list[Path] = []
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        candidates.append(Path(env))
    repo_root = Path(__file__).resolve().parents[3]
    candidates += [repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for path in candidates:
        if path.is_dir() and any((path / name).is_dir() for name in _all_dataset_names()):
            return path
    return None


def _all_dataset_names() -> list[str]:
    return [n for names in DATASETS_BY_MODALITY.values() for n in names]
