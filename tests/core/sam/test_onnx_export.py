"""The exported decoder matches torch for every aspect ratio (the stock export does not)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_lesion_diffkd.core.sam.onnx_export import (
    OnnxDecoder,
    SamDecoderOnnx,
    export_decoder_onnx,
    prompt_arrays,
)
from napari_lesion_diffkd.core.sam.session import PromptSession

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPES = [(385, 512), (353, 274), (256, 256), (97, 411)]  # landscape, portrait, square, wide


@pytest.fixture(scope="module")
def exported(tmp_path_factory, _tiny_sam_master):
    import copy

    sam = copy.deepcopy(_tiny_sam_master)
    # Random-init decoders give tiny logits; scale the hypernetwork outputs up so that a
    # 1e-4 agreement is a real test (logit spread of several units).
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(50)
    path = export_decoder_onnx(sam, tmp_path_factory.mktemp("onnx") / "decoder.onnx")
    return sam, OnnxDecoder(path, threads=1)


@pytest.mark.parametrize("hw", SHAPES)
def test_onnxruntime_matches_torch(exported, hw) -> None:
    sam, decoder = exported
    rng = np.random.default_rng(hw[0])
    image = rng.integers(0, 255, size=(*hw, 3), dtype=np.uint8)
    session = PromptSession(sam)
    session.set_image(image)
    emb = session.current.features.numpy()
    y, x = hw[0] - 1, hw[1] - 1
    prompts = [
        {"points_xy": np.array([[x * 0.4, y * 0.6]]), "point_labels": np.array([1])},
        {"box_xyxy": np.array([x * 0.1, y * 0.2, x * 0.7, y * 0.9])},
        {"points_xy": np.array([[x * 0.5, y * 0.5], [3.0, 4.0]]),
         "point_labels": np.array([1, 0]), "box_xyxy": np.array([2.0, 3.0, x * 0.8, y * 0.8]),
         "mask_logits": rng.normal(0, 5, size=(64, 64)).astype(np.float32)},
    ]
    for prompt in prompts:
        multimask = "box_xyxy" not in prompt and len(prompt["points_xy"]) == 1
        ref = session.predict(return_logits=True, multimask=multimask, clip_to_box=False,
                              **prompt)
        full, score, low = decoder.run(emb, hw, 256, (64, 64), multimask=multimask, **prompt)
        assert full.shape == hw
        assert ref.logits.std() > 0.5  # a real spread of logits, not all ~0
        np.testing.assert_allclose(full, ref.logits, atol=1e-4, rtol=0)
        np.testing.assert_allclose(low, ref.low_res_logits, atol=1e-4, rtol=0)
        assert score == pytest.approx(ref.score, abs=1e-4)


def test_prompt_arrays_follow_the_prompt_encoder_order() -> None:
    coords, labels = prompt_arrays((100, 200), 256, np.array([[10.0, 20.0]]), np.array([0]),
                                   np.array([0.0, 0.0, 100.0, 50.0]))
    assert labels.tolist() == [[0.0, 2.0, 3.0]]
    np.testing.assert_allclose(coords[0], [[12.8, 25.6], [0, 0], [128, 64]])
    _, labels = prompt_arrays((100, 200), 256, np.array([[10.0, 20.0]]))
    assert labels.tolist() == [[1.0, -1.0]]


def test_the_stock_export_gets_other_aspect_ratios_wrong(tmp_path, exported) -> None:
    """Why the crop fix exists: segment_anything's own wrapper freezes the crop size."""
    import onnxruntime as ort
    from segment_anything.utils.onnx import SamOnnxModel

    sam, _ = exported
    stock = SamOnnxModel(sam, return_single_mask=False)
    dummy = (torch.randn(1, 128, 16, 16), torch.rand(1, 2, 2) * 256,
             torch.tensor([[1.0, -1.0]]), torch.zeros(1, 1, 64, 64), torch.tensor([0.0]),
             torch.tensor([385.0, 512.0]))
    names = ["image_embeddings", "point_coords", "point_labels", "mask_input",
             "has_mask_input", "orig_im_size"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(stock, dummy, str(tmp_path / "stock.onnx"), input_names=names,
                          output_names=["masks", "scores", "low"], opset_version=17,
                          dynamo=False)
    run = ort.InferenceSession(str(tmp_path / "stock.onnx"), providers=["CPUExecutionProvider"])
    ours = SamDecoderOnnx(sam)
    for hw, should_match in (((385, 512), True), ((353, 274), False)):
        feeds = {n: t.numpy() for n, t in zip(names, dummy)}
        feeds["orig_im_size"] = np.array(hw, dtype=np.float32)
        masks, _, low = run.run(None, feeds)
        with torch.no_grad():
            ref = ours._postprocess(torch.from_numpy(low), torch.tensor(hw, dtype=torch.float32))
        assert masks.shape[-2:] == hw
        assert np.allclose(masks, ref.numpy(), atol=1e-4) is should_match
