"""The batched decoder equals segment_anything's per-image MaskDecoder."""

from __future__ import annotations

import pytest
import torch

from napari_lesion_diffkd.core.sam.decoding import decode_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("multimask", [False, True])
def test_batch_of_images_equals_one_by_one(tiny_sam, multimask: bool) -> None:
    torch.manual_seed(0)
    emb = torch.randn(3, 128, 16, 16)
    coords = torch.rand(3, 2, 2) * 256
    labels = torch.tensor([[1, 0], [1, -1], [1, 1]])
    boxes = torch.tensor([[10.0, 20, 100, 120], [0, 0, 255, 255], [50, 60, 70, 90]])
    masks = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        low, iou = decode_batch(tiny_sam, emb, (coords, labels), boxes, masks, multimask)
        for i in range(3):
            sparse, dense = tiny_sam.prompt_encoder(
                points=(coords[i:i + 1], labels[i:i + 1]), boxes=boxes[i:i + 1],
                masks=masks[i:i + 1])
            ref_low, ref_iou = tiny_sam.mask_decoder(
                image_embeddings=emb[i:i + 1], image_pe=tiny_sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=multimask)
            torch.testing.assert_close(low[i:i + 1], ref_low, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(iou[i:i + 1], ref_iou, rtol=1e-4, atol=1e-5)
    assert low.shape == (3, 3 if multimask else 1, 64, 64)


def test_prompt_count_must_match_images(tiny_sam) -> None:
    with pytest.raises(ValueError, match="prompts"):
        decode_batch(tiny_sam, torch.randn(2, 128, 16, 16), None,
                     torch.tensor([[0.0, 0, 5, 5]]), None, False)
