"""Large images: samples, STAPLE and uncertainty at a working shape of 4 S, maps upsampled
back to the input's shape, and the consensus close to a 512 px run's (a real PH2 image
upscaled to 4000 x 3000)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imread
from skimage.transform import resize

from napari_lesion_diffkd.core.data.preprocess import upsample_masks, working_shape
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.registry import load_model
from napari_lesion_diffkd.core.segmenter import segment_image

LARGE = (3000, 4000)


def _resized(image: np.ndarray, shape) -> np.ndarray:
    return (resize(image, shape, order=1, preserve_range=True, anti_aliasing=False)
            .round().clip(0, 255).astype(np.uint8))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def test_working_shape_caps_large_images_only() -> None:
    assert working_shape((572, 765), 128) == (572, 765)  # a PH2 image keeps its size
    assert working_shape((1024, 900), 128) == (1024, 900)
    assert working_shape((3000, 4000), 128) == (384, 512)
    assert working_shape((3000, 4000), 256) == (768, 1024)
    assert working_shape((3000, 4000), 128, max_side=0) == (3000, 4000)
    masks = np.zeros((1, 2, 3), bool)
    masks[0, 1, 2] = True
    up = upsample_masks(masks, (4, 6))
    assert up.shape == (1, 4, 6) and up[0, 2:, 4:].all() and up.sum() == 4


def test_a_4000x3000_image_matches_the_512px_run(ph2_pairs) -> None:
    bundle = load_model("dermoscopy-student")
    source = imread(ph2_pairs[0][0])[..., :3]
    y, x = source.shape[:2]
    small = _resized(source, (round(512 * y / x), 512))
    large = _resized(source, LARGE)
    r_small = run_to_completion(segment_image(bundle, small))
    r_large = run_to_completion(segment_image(bundle, large))
    assert r_small.working_shape is None and r_small.working_note == ""
    assert r_large.working_shape == (384, 512) and "512x384" in r_large.working_note
    assert r_large.settings["working_shape"] == [384, 512]
    k = r_large.samples.shape[0]
    assert r_large.samples.shape == (k, 384, 512)
    assert r_large.full_samples().shape == (k, *LARGE)
    for name in ("consensus", "probability", "uncertainty"):
        assert getattr(r_large, name).shape == LARGE, name
    assert r_large.consensus.dtype == bool and r_large.uncertainty.dtype == np.float32
    assert 0 <= r_large.uncertainty.min() and r_large.uncertainty.max() <= 1
    assert r_large.consensus.any()
    up = upsample_masks(r_small.consensus, LARGE)
    assert _dice(r_large.consensus, up) > 0.97


def test_predict_writes_large_outputs_at_the_input_size(tmp_path, ph2_pairs) -> None:
    import tifffile

    from napari_lesion_diffkd.core.predict_files import write_outputs

    bundle = load_model("dermoscopy-student")
    large = _resized(imread(ph2_pairs[0][0])[..., :3], (2100, 2800))
    result = run_to_completion(segment_image(bundle, large, num_samples=2))
    assert result.working_shape is not None
    paths = write_outputs(tmp_path, "big", result)
    assert imread(paths["consensus"]).shape == (2100, 2800)
    assert imread(paths["uncertainty"]).shape == (2100, 2800)
    assert tifffile.imread(paths["samples"]).shape == (2, 2100, 2800)


@pytest.mark.parametrize("channels", [1, 3])
def test_large_uint8_images_take_the_fast_input_path(channels) -> None:
    from napari_lesion_diffkd.core.data import preprocess

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2200, 2300, 3), dtype=np.uint8)
    fast = preprocess.prepare_image(image, 128, channels)
    saved = preprocess.LARGE_UINT8_SIDE
    preprocess.LARGE_UINT8_SIDE = 10**6
    try:
        slow = preprocess.prepare_image(image, 128, channels)
    finally:
        preprocess.LARGE_UINT8_SIDE = saved
    assert fast.shape == slow.shape == (channels, 128, 128)
    assert float((fast - slow).abs().max()) < 2.5 / 255 * 2  # under ~1 grey level each way
