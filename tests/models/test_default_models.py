"""The registered default models, on real validation images they never trained on.

These are the shipped weights (models/), so the tests check the claims of their model cards
on a few held-out images: accuracy near the card's, and an uncertainty map that points at the
consensus's wrong pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs
from napari_lesion_diffkd.core.ensemble.uncertainty_eval import auroc_from_counts, error_counts
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.metrics import dice
from napari_lesion_diffkd.core.registry import load_model
from napari_lesion_diffkd.core.segmenter import segment_image


def _val_records(bundle, folder):
    val_ids = set(bundle.config["provenance"]["split"]["val_ids"])
    records = [r for r in scan_pairs(folder) if r.id in val_ids]
    assert records, "the model card's validation ids are not in the data folder"
    return records


@pytest.fixture(scope="module")
def student_results(data_root):
    bundle = load_model("dermoscopy-student")
    records = _val_records(bundle, data_root / "ph2_dermoscopy")[:12]
    out = []
    for record in records:
        image, mask = read_pair(record)
        result = run_to_completion(segment_image(bundle, image, num_samples=8, seed=0))
        out.append((result, mask > 0))
    return out


def test_default_student_is_accurate_on_held_out_ph2(student_results):
    dices = [dice(r.consensus, m) for r, m in student_results]
    assert np.mean(dices) > 0.9, dices


def test_default_student_uncertainty_detects_its_errors(student_results):
    """Pooled error-detection AUROC of the soft-entropy map over held-out images ≥ 0.8."""
    counts = [error_counts(r.uncertainty, r.consensus, m) for r, m in student_results]
    pooled = auroc_from_counts(*(np.concatenate([c[i] for c in counts]) for i in range(3)))
    assert pooled >= 0.8


def test_default_student_samples_differ(student_results):
    assert any(np.any(r.samples != r.samples[:1]) for r, _ in student_results)
