"""Loading the simulation's models by name: the promptable SAM and one proposer per folder.

The "best promptable model" is an option; ``auto`` means ``medsam-lite`` (LiteMedSAM, the
strongest zero-shot medical SAM this project can load offline) when it loads on this
machine, else ``lesion-sam-tiny`` with a note saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_lesion_diffkd.core.annotation_sim.proposers import (
    default_model_name,
    segmenter_proposer,
)
from napari_lesion_diffkd.core.annotation_sim.simulate import AnnotationModels

AUTO_SAM = "auto"
PREFERRED_SAM = "medsam-lite"
FALLBACK_SAM = "lesion-sam-tiny"


def load_promptable(name: str = AUTO_SAM, device: str = "cpu") -> tuple[Any, str | None]:
    """(correction backend, note or None) for a SAM name, path, or ``auto``.

    Raises:
        LookupError, OSError, RuntimeError, ValueError: the named SAM cannot be loaded (with
        ``auto``, only when the fallback cannot either).
    """
    from napari_lesion_diffkd.core.sam.correction_backend import load_correction_backend

    if name != AUTO_SAM:
        return load_correction_backend(name, device=device), None
    try:
        return load_correction_backend(PREFERRED_SAM, device=device), None
    except (LookupError, ImportError, OSError, RuntimeError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        note = f"note: {PREFERRED_SAM} unavailable ({why}); using {FALLBACK_SAM}"

        return load_correction_backend(FALLBACK_SAM, device=device), note


def build_models(records: Sequence, sam_backend: Any, sam_name: str, *,
                 model: str | None = None, teacher: str | None = None,
                 modality: str | None = None, need_teacher: bool = False,
                 num_samples: int | None = None, device: str = "cpu") -> AnnotationModels:
    """Proposers for every dataset of ``records`` (bundles loaded once per name).

    Args:
        records: ``PairRecord`` list. sam_backend: from :func:`load_promptable`.
        model / teacher: a model name or bundle path for every folder; None: the default
            student / teacher of each folder's modality (``inputs.folder_modality``).
        modality: force one modality for every folder.
        need_teacher: load teachers (``teacher-first``).
        num_samples: K (default: each bundle's).

    Raises:
        LookupError: no such model; ValueError: undecidable modality; BundleError: bad bundle.
    """
    from napari_lesion_diffkd.core.annotation_sim.inputs import folder_modality
    from napari_lesion_diffkd.core.data.datasets import read_image_file
    from napari_lesion_diffkd.core.registry import load_model

    loaded: dict[str, Any] = {}

    def proposer(name: str):
        if name not in loaded:
            loaded[name] = load_model(name, device=device)
        return segmenter_proposer(loaded[name], num_samples=num_samples)

    models = AnnotationModels(sam=sam_backend, students={}, teachers={},
                              names={"sam": sam_name})
    for rec in records:
        if rec.dataset in models.students:
            continue
        mod = modality
        if (model is None or (need_teacher and teacher is None)) and mod is None:
            rgb = read_image_file(rec.image_path).ndim == 3
            mod = folder_modality(rec.image_path.parent.parent, rgb)
        student_name = model or default_model_name(mod)
        models.students[rec.dataset] = proposer(student_name)
        models.names[f"student:{rec.dataset}"] = student_name
        if need_teacher:
            teacher_name = teacher or default_model_name(mod, "teacher")
            models.teachers[rec.dataset] = proposer(teacher_name)
            models.names[f"teacher:{rec.dataset}"] = teacher_name
    return models
