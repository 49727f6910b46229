"""Annotation project store: images, label versions, predictions, models and a job queue in
one folder with an SQLite index (see ``project.py`` for the layout and write protocol,
``queue.py`` for job states, ``core/job_runner.py`` for running jobs in their own process).

Headless: imports neither napari nor Qt, and not torch until a job runs.
"""

from __future__ import annotations

from napari_lesion_diffkd.core.store.errors import (
    InvalidInputError,
    JobStateError,
    StoreError,
    StoreWriteError,
)
from napari_lesion_diffkd.core.store.project import ProjectStore
from napari_lesion_diffkd.core.store.records import (
    ImageRecord,
    JobRecord,
    LabelVersion,
    ModelRecord,
    PredictionRecord,
)
from napari_lesion_diffkd.core.store.schema import SCHEMA_VERSION
from napari_lesion_diffkd.core.store.transfer import (
    ImportReport,
    export_labels,
    import_folder,
    import_image,
)

__all__ = [
    "SCHEMA_VERSION",
    "ImageRecord",
    "ImportReport",
    "InvalidInputError",
    "JobRecord",
    "JobStateError",
    "LabelVersion",
    "ModelRecord",
    "PredictionRecord",
    "ProjectStore",
    "StoreError",
    "StoreWriteError",
    "export_labels",
    "import_folder",
    "import_image",
]
