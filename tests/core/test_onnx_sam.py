"""The shipped ``lesion-sam-tiny`` through ONNX Runtime (encoder + decoder files) against the
torch ``PromptSession`` on real images of several aspect ratios."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_diffkd.core.onnx.cache import cached_sam_onnx
from napari_lesion_diffkd.core.onnx.driver import OnnxSam
from napari_lesion_diffkd.core.onnx.export import read_metadata
from napari_lesion_diffkd.core.sam.loading import load_sam
from napari_lesion_diffkd.core.sam.session import PromptSession

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real_images(data_root):
    """(image, mask) of the first PH2 (RGB landscape), BUS-BRA (gray portrait) and CT
    (square) records."""
    from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs

    names = {"ph2": "ph2_dermoscopy", "busbra": "busbra_breast_ultrasound",
             "ct": "covid19_ct_infection"}
    return {k: read_pair(scan_pairs(data_root / v)[0]) for k, v in names.items()}


@pytest.fixture(scope="module")
def sam_pair(tmp_path_factory):
    loaded = load_sam("lesion-sam-tiny")
    enc, dec = cached_sam_onnx(loaded, tmp_path_factory.mktemp("onnx"))
    return loaded, OnnxSam(enc, dec, threads=1), (enc, dec)


def test_files_and_metadata(sam_pair) -> None:
    loaded, _, (enc, dec) = sam_pair
    assert enc.name.endswith(".encoder.onnx") and dec.name.endswith(".decoder.onnx")
    assert enc.name.replace(".encoder.onnx", "") == dec.name.replace(".decoder.onnx", "")
    meta = read_metadata(enc)
    assert meta["kind"] == "sam-encoder" and meta["img_size"] == loaded.img_size == 256
    assert read_metadata(dec)["kind"] == "sam-decoder" and meta["low_res_size"] == [64, 64]


@pytest.mark.parametrize("which", ["ph2", "busbra", "ct", "wide"])
def test_encoder_and_decoder_match_torch(sam_pair, real_images, which) -> None:
    """Landscape RGB (PH2), portrait gray (BUS-BRA), square (CT) and a 1:4 crop."""
    loaded, runtime, _ = sam_pair
    if which == "wide":
        image, mask = real_images["ph2"]
        image, mask = image[150:250], mask[150:250]
    else:
        image, mask = real_images[which]
    hw = image.shape[:2]
    session = PromptSession(loaded, test_time_flip=False)  # the ONNX driver has no flip
    session.set_image(image)
    emb = runtime.embed(image)
    np.testing.assert_allclose(emb, session.current.features.numpy(), atol=1e-4, rtol=0)
    ys, xs = np.nonzero(mask)
    assert len(ys), "the real mask is empty"
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)
    centre = np.array([[xs.mean(), ys.mean()]])
    prompts = [{"box_xyxy": box, "multimask": False},
               {"points_xy": centre, "point_labels": np.array([1]), "multimask": True}]
    for prompt in prompts:
        ref = session.predict(return_logits=True, clip_to_box=False, **prompt)
        full, score, low = runtime.predict(emb, hw, **prompt)
        assert full.shape == hw
        np.testing.assert_allclose(full, ref.logits, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(full > 0, ref.mask)
        np.testing.assert_allclose(low, ref.low_res_logits, atol=1e-4, rtol=0)
        assert score == pytest.approx(ref.score, abs=1e-4)
