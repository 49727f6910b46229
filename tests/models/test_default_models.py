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


@pytest.mark.parametrize("name, dataset", [("ct-student", "covid19_ct_infection"),
                                           ("ultrasound-student", "busbra_breast_ultrasound")])
def test_default_student_samples_with_its_fitted_spread_on_held_out_images(data_root, name,
                                                                          dataset):
    """The calibrated students store the factor their calibration picked (the best-scoring
    candidate, on training images only), and their K samples on held-out images are the raw
    one-step samples inflated by that factor: wider spread, first mask (K = 1) unchanged."""
    import torch

    from napari_lesion_diffkd.core.data.preprocess import prepare_image
    from napari_lesion_diffkd.core.diffusion.samplers import build_sampler
    from napari_lesion_diffkd.core.diffusion.sampling_common import inflate_spread
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler, sample_seeds

    bundle = load_model(name)
    record = bundle.config["provenance"]["spread_calibration"]
    best = max(record["candidates"], key=lambda c: c["variance_correlation"])
    factor = bundle.config["sampler"]["spread_inflation"]
    assert factor == record["factor"] == best["factor"] > 1
    val_ids = set(bundle.config["provenance"]["split"]["val_ids"])
    assert not val_ids & set(record["image_ids"])  # fitted on training slices only

    sampler = build_bundle_sampler(bundle, None, None)
    raw = build_sampler("one-step", bundle.schedule, bundle.prediction_target)
    seeds = sample_seeds(0, 8)
    spreads = []
    for r in _val_records(bundle, data_root / dataset)[:3]:
        image = prepare_image(read_pair(r)[0], bundle.input_size, bundle.image_channels)[None]
        inflated = run_to_completion(sampler.sample(bundle.network, image, 8, seeds=seeds))
        plain = run_to_completion(raw.sample(bundle.network, image, 8, seeds=seeds))
        torch.testing.assert_close(inflated, inflate_spread(plain, factor))
        first = run_to_completion(sampler.sample(bundle.network, image, 1, seeds=seeds[:1]))
        torch.testing.assert_close(first, plain[:, :1])
        spreads.append(((inflated > 0).float().var(1).mean() - (plain > 0).float().var(1).mean())
                       .item())
    assert np.mean(spreads) > 0  # the hard masks disagree on more pixels
