"""Active learning: query strategies, scoring, and a simulated loop on real PH2 pairs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_lesion_diffkd.core.active_learning.strategies import select_batch

FIXTURES = Path(__file__).parents[1] / "fixtures"
IDS = [f"im{i}" for i in range(8)]


def test_uncertainty_takes_the_highest_scores():
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.0, 0.5, 0.7, 0.2])
    got = select_batch("uncertainty", IDS, 3, np.random.default_rng(0), scores=scores)
    assert got == ["im1", "im3", "im6"]


def test_diversity_spreads_the_batch_over_clusters():
    # The four most uncertain images are near-duplicates (one cluster) except im5.
    scores = np.array([0.9, 0.85, 0.8, 0.1, 0.1, 0.75, 0.1, 0.1])
    emb = np.array([[0, 0], [0.01, 0], [0, 0.01], [5, 5], [5, 5], [3, 0], [5, 5], [5, 5]],
                   dtype=float)
    got = select_batch("uncertainty-diversity", IDS, 2, np.random.default_rng(0),
                       scores=scores, embeddings=emb, pool_factor=2)
    assert got == ["im0", "im5"]  # plain uncertainty would take im0 and its duplicate im1
    assert select_batch("uncertainty", IDS, 2, np.random.default_rng(0),
                        scores=scores) == ["im0", "im1"]


def test_random_is_reproducible_and_without_repeats():
    a = select_batch("random", IDS, 5, np.random.default_rng(3))
    assert a == select_batch("random", IDS, 5, np.random.default_rng(3))
    assert len(set(a)) == 5 and set(a) <= set(IDS)
    assert sorted(select_batch("random", IDS, 50, np.random.default_rng(0))) == sorted(IDS)


def test_bad_requests_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown strategy"):
        select_batch("margin", IDS, 2, rng)
    with pytest.raises(ValueError, match="one score per candidate"):
        select_batch("uncertainty", IDS, 2, rng, scores=np.zeros(3))
    # With the default pool of 3 batches the certain cluster at (5, 5) is reachable too.
    with pytest.raises(ValueError, match="embedding"):
        select_batch("uncertainty-diversity", IDS, 2, rng, scores=np.zeros(8))


def test_scores_come_from_the_apps_samples(tiny_bundle):
    """A real (tiny) model's per-image disagreement, with embeddings of unit length."""
    from napari_lesion_diffkd.core.active_learning.scoring import score_images
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import load_model

    bundle = load_model(tiny_bundle)
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    scores, emb = run_to_completion(score_images(bundle, images, num_samples=4))
    assert scores.shape == (5,) and np.all((scores >= 0) & (scores <= 1))
    assert emb.shape[0] == 5
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    # The score of an image is the one of the samples the app would show for it.
    from napari_lesion_diffkd.core.ensemble.uncertainty import image_scores
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler, sample_seeds

    sampler = build_bundle_sampler(bundle, None, None)
    x0 = run_to_completion(sampler.sample(bundle.network, images[3:4], 4,
                                          seeds=sample_seeds(0, 4)))
    direct = float(image_scores(x0[:, :, 0])["sample_disagreement"][0])
    assert scores[3] == pytest.approx(direct, abs=1e-6)


def test_simulation_end_to_end_on_real_pairs(ph2_subset, tmp_path, capsys):
    from napari_lesion_diffkd.cli import main
    from napari_lesion_diffkd.core.data.datasets import group_split, scan_pairs

    code = main(["simulate-al", "--config", str(FIXTURES / "tiny_train.yaml"), "--data",
                 str(ph2_subset), "--out", str(tmp_path), "--strategies", "random",
                 "uncertainty", "uncertainty-diversity", "--rounds", "2", "--initial", "3",
                 "--per-round", "2", "--seeds", "0", "--k", "3"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["mean_val_dice"]) == {"random", "uncertainty", "uncertainty-diversity"}
    with (tmp_path / "learning_curves.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 3  # round 0 + 2 rounds, per strategy
    _, val = group_split(scan_pairs(ph2_subset), 0.2, 0)
    val_ids = {r.id for r in val}
    for strategy in ("random", "uncertainty", "uncertainty-diversity"):
        mine = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["round"])
        assert [int(r["n_labels"]) for r in mine] == [3, 5, 7]
        added = [i for r in mine for i in json.loads(r["added_ids"])]
        assert len(added) == len(set(added)) == 7  # never the same image twice
        assert not set(added) & val_ids  # never a validation image
        assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in mine)
    # Round 0 is one model shared by all strategies.
    assert len({r["val_dice"] for r in rows if r["round"] == "0"}) == 1
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000


def test_simulation_refuses_too_small_pools(ph2_subset, tmp_path, capsys):
    from napari_lesion_diffkd.cli import main

    code = main(["simulate-al", "--config", str(FIXTURES / "tiny_train.yaml"), "--data",
                 str(ph2_subset), "--out", str(tmp_path), "--initial", "50"])
    assert code == 2 and "too few" in capsys.readouterr().err
