"""ONNX Runtime vs torch for the shipped students and UNet baselines on real validation
images (PH2 dermoscopy, BUS-BRA + DDTI ultrasound, COVID-19 CT): raw outputs within 1e-4,
identical thresholded masks, dynamic N x K batches, the cache keyed by the weights' hash."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_lesion_diffkd.core.data.datasets import read_pair
from napari_lesion_diffkd.core.data.preprocess import prepare_image
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.onnx.cache import cached_bundle_onnx
from napari_lesion_diffkd.core.onnx.driver import OnnxDenoiser, OnnxSegmenter, onnx_network
from napari_lesion_diffkd.core.onnx.export import read_metadata
from napari_lesion_diffkd.core.onnx.parity import denoiser_outputs
from napari_lesion_diffkd.core.registry import load_model
from napari_lesion_diffkd.core.segmenter import segment_image
from tests.core.onnx_helpers import validation_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STUDENTS = ["dermoscopy-student", "ultrasound-student"]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def exported(onnx_dir):
    """name -> (torch bundle, ONNX Runtime network), exported once per module."""
    out = {}
    for name in [*STUDENTS, "dermoscopy-unet", "ultrasound-unet", "ct-unet"]:
        bundle = load_model(name, device="cpu")
        out[name] = (bundle, onnx_network(bundle, threads=1, folder=onnx_dir))
    return out


def _images(bundle, records) -> torch.Tensor:
    return torch.stack([prepare_image(read_pair(r)[0], bundle.input_size, bundle.image_channels)
                        for r in records])


@pytest.mark.parametrize("name", STUDENTS)
def test_student_x0_matches_torch_on_validation_images(exported, data_root, name) -> None:
    bundle, onnx_net = exported[name]
    assert isinstance(onnx_net, OnnxDenoiser)
    records = validation_records(bundle, data_root, 4)
    if name == "ultrasound-student":  # both datasets of the split
        assert {r.dataset for r in records} == {"busbra_breast_ultrasound",
                                                "ddti_thyroid_ultrasound"}
    images = _images(bundle, records)
    ref, out = denoiser_outputs(bundle, onnx_net, images, num_samples=8, seed=0)
    assert out.shape == (4 * 8, 1, bundle.input_size, bundle.input_size)
    assert np.abs(ref).max() > 0.9  # real masks, not an all-zero output
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(out > 0, ref > 0)


def test_dynamic_batch_k_equals_one_call_per_sample(exported, data_root) -> None:
    """N images x K samples in one graph call equal K calls of one sample (same seeds)."""
    bundle, onnx_net = exported["dermoscopy-student"]
    images = _images(bundle, validation_records(bundle, data_root, 2))
    seen = set()
    for n, k in ((1, 1), (2, 3), (1, 8)):
        _, out = denoiser_outputs(bundle, onnx_net, images[:n], num_samples=k, seed=4)
        assert out.shape[0] == n * k
        seen.add(out.shape[0])
        if k > 1:
            # Row n * K + k is sample k of image n: sample 0's seed alone gives that row.
            _, single = denoiser_outputs(bundle, onnx_net, images[:n], num_samples=1, seed=4)
            np.testing.assert_allclose(out[::k], single, atol=1e-5, rtol=0)
    assert seen == {1, 6, 8}


@pytest.mark.parametrize("name", STUDENTS)
def test_segment_image_backends_give_identical_masks(exported, data_root, name) -> None:
    bundle, _ = exported[name]
    for record in validation_records(bundle, data_root, 2):
        image, _ = read_pair(record)
        a = run_to_completion(segment_image(bundle, image, num_samples=8, seed=2))
        b = run_to_completion(segment_image(bundle, image, num_samples=8, seed=2,
                                            backend="onnxruntime"))
        assert b.settings["backend"] == "onnxruntime" and b.samples.shape == (8, *image.shape[:2])
        # Bilinear resizing to the image's own size can put an x0 value within float32
        # rounding of the threshold 0 (seen: 1 pixel of 1.5 million): allow ties, not more.
        assert (b.samples != a.samples).mean() < 1e-5
        np.testing.assert_array_equal(b.consensus, a.consensus)
        np.testing.assert_allclose(b.uncertainty, a.uncertainty, atol=1e-4)
        # One tied vote moves STAPLE's per-sample sensitivity/specificity a little, and with
        # them the posterior everywhere (seen: 3e-4).
        np.testing.assert_allclose(b.probability, a.probability, atol=1e-3)
        np.testing.assert_allclose(b.sensitivity, a.sensitivity, atol=1e-3)


@pytest.mark.parametrize("name,atol", [("dermoscopy-unet", 1e-4), ("ultrasound-unet", 1e-4),
                                       # 256 px: the channels-last torch model itself is
                                       # 1.7e-4 off a float64 reference (logits up to ~40).
                                       ("ct-unet", 5e-4)])
def test_unet_logits_match_torch(exported, data_root, name, atol) -> None:
    bundle, onnx_net = exported[name]
    assert isinstance(onnx_net, OnnxSegmenter)
    images = _images(bundle, validation_records(bundle, data_root, 3))
    with torch.no_grad():
        ref = bundle.network(images).numpy()
    out = onnx_net(images).numpy()
    np.testing.assert_allclose(out, ref, atol=atol, rtol=0)
    np.testing.assert_array_equal(out > 0, ref > 0)
    assert (ref > 0).any()


def test_cache_is_keyed_by_the_weights_hash(exported, onnx_dir, tmp_path) -> None:
    from napari_lesion_diffkd.core.bundle import save_bundle

    bundle, onnx_net = exported["dermoscopy-student"]
    path = cached_bundle_onnx(bundle, onnx_dir)
    assert path == onnx_net.path and path.name.startswith("dermoscopy-student-")
    stamp = path.stat().st_mtime_ns
    assert cached_bundle_onnx(bundle, onnx_dir).stat().st_mtime_ns == stamp  # not re-exported
    meta = read_metadata(path)
    assert meta["kind"] == "denoiser" and meta["input"]["size"] == 128
    assert meta["weights_sha256"][:16] in path.name
    # Other weights under the same name: another file, never the stale one.
    with torch.no_grad():
        bundle.network.head_out.bias.add_(0.5)
    try:
        save_bundle(tmp_path / "dermoscopy-student", bundle.network, bundle.schedule,
                    dict(bundle.config))
    finally:
        with torch.no_grad():
            bundle.network.head_out.bias.sub_(0.5)
    changed = load_model(tmp_path / "dermoscopy-student")
    other = cached_bundle_onnx(changed, onnx_dir)
    assert other != path and other.name.startswith("dermoscopy-student-")


def test_unknown_backend_is_a_clear_error(exported, ph2_pairs) -> None:
    bundle, _ = exported["dermoscopy-student"]
    image, _ = read_pair_paths(ph2_pairs[0])
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        run_to_completion(segment_image(bundle, image, backend="tensorrt"))


def read_pair_paths(pair):
    from skimage.io import imread

    return imread(pair[0]), imread(pair[1])


def test_numpy_one_step_driver_reproduces_the_torch_sampler(exported, data_root) -> None:
    from napari_lesion_diffkd.core.diffusion.sampling_common import draw_noise, make_generators
    from napari_lesion_diffkd.core.onnx.driver import one_step_numpy
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler, sample_seeds

    bundle, onnx_net = exported["ultrasound-student"]
    images = _images(bundle, validation_records(bundle, data_root, 2))
    seeds = sample_seeds(7, 8)
    ref = run_to_completion(build_bundle_sampler(bundle, None, None).sample(
        bundle.network, images, 8, seeds=seeds)).numpy()
    noise = draw_noise(make_generators(seeds), (2, 1, *images.shape[2:]), torch.device("cpu"))
    # The shipped ultrasound student widens its samples' spread (sampler.spread_inflation);
    # the numpy driver must apply the same factor to match the torch sampler.
    factor = bundle.config["sampler"].get("spread_inflation", 1.0)
    assert factor != 1.0
    out = one_step_numpy(onnx_net, images.numpy(), noise.numpy(),
                         bundle.schedule.num_timesteps, spread_inflation=factor)
    assert out.shape == ref.shape == (2, 8, 1, 128, 128)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(out > 0, ref > 0)
