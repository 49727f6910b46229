"""The one user cache folder and its parts.

``<cache>`` is ``$LESION_DIFFKD_CACHE``, default ``~/.cache/napari-lesion-diffkd``:

* ``<cache>/models/``: downloaded or user-installed model bundles (``core/registry.py``);
* ``<cache>/sam/``: official SAM / MedSAM checkpoints (``core/sam/loading.py``);
* ``<cache>/onnx/``: ONNX exports keyed by the weights' SHA-256 (``core/onnx/cache.py``).

``$NAPARI_LESION_DIFFKD_CACHE``, the models folder's own variable in version 0.1.0, still
overrides ``<cache>/models`` so that existing set-ups keep finding their bundles.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "LESION_DIFFKD_CACHE"
#: Older name of the models folder alone (kept working; prefer ``$LESION_DIFFKD_CACHE``).
LEGACY_MODELS_CACHE_ENV_VAR = "NAPARI_LESION_DIFFKD_CACHE"


def cache_root() -> Path:
    """``$LESION_DIFFKD_CACHE`` or ``~/.cache/napari-lesion-diffkd`` (may not exist yet)."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env) if env else Path.home() / ".cache" / "napari-lesion-diffkd"


def models_cache_dir() -> Path:
    """Folder of cached model bundles: ``$NAPARI_LESION_DIFFKD_CACHE`` if set, else
    ``<cache>/models``."""
    legacy = os.environ.get(LEGACY_MODELS_CACHE_ENV_VAR)
    return Path(legacy) if legacy else cache_root() / "models"
