"""The image -> K samples -> fusion -> uncertainty path on real images."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imread

from napari_lesion_diffkd.core.jobs import JobEvent, run_to_completion
from napari_lesion_diffkd.core.registry import load_model
from napari_lesion_diffkd.core.segmenter import segment_image


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_model(tiny_bundle)


@pytest.mark.parametrize("fusion", ["staple", "mean", "majority"])
def test_maps_follow_the_input_frame(bundle, ph2_pairs, fusion) -> None:
    image = imread(ph2_pairs[0][0])
    events: list[JobEvent] = []
    result = run_to_completion(segment_image(bundle, image, num_samples=3, fusion=fusion),
                               on_event=events.append)
    h, w = image.shape[:2]
    assert result.samples.shape == (3, h, w) and result.samples.dtype == bool
    assert result.consensus.shape == (h, w) and result.probability.shape == (h, w)
    assert result.uncertainty.shape == (h, w)
    assert 0 <= result.uncertainty.min() and result.uncertainty.max() <= 1
    assert [e.step for e in events if e.kind == "progress"] == [1, 2]  # DDIM, 2 steps
    if fusion == "staple":
        assert result.sensitivity.shape == (3,) and result.specificity.shape == (3,)
    else:
        assert result.sensitivity is None
    assert set(result.scores) >= {"sample_disagreement", "boundary_entropy"}


def test_gray_images_feed_an_rgb_model(bundle, busbra_pairs) -> None:
    image = imread(busbra_pairs[0][0])
    assert image.ndim == 2
    result = run_to_completion(segment_image(bundle, image, num_samples=2))
    assert result.consensus.shape == image.shape


def test_closing_the_generator_cancels_between_steps(bundle, ph2_pairs) -> None:
    gen = segment_image(bundle, imread(ph2_pairs[0][0]), num_samples=2, sampler="ddpm")
    first = next(gen)
    assert first.kind == "progress" and first.total == 50  # every timestep of T = 50
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


def test_bad_arguments_are_rejected(bundle) -> None:
    with pytest.raises(ValueError, match="2D image"):
        run_to_completion(segment_image(bundle, np.zeros((4, 5, 6, 7))))
    with pytest.raises(ValueError, match="fusion"):
        run_to_completion(segment_image(bundle, np.zeros((8, 8)), fusion="vote"))


def test_bundle_sampler_keeps_its_stored_options(bundle) -> None:
    import copy

    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler

    staged = copy.copy(bundle)
    staged.config = {**bundle.config, "sampler": {"name": "staged", "num_samples": 4,
                                                  "final_head": "x0", "middle_branch": "x0"}}
    sampler = build_bundle_sampler(staged, None, None)
    assert (sampler.name, sampler.final_head, sampler.middle_branch) == ("staged", "x0", "x0")
    # Another sampler asked for by name does not inherit the staged sampler's options.
    assert build_bundle_sampler(staged, "ddim", 2).num_steps == 2
