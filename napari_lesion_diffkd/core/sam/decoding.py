"""SAM's prompt encoder + mask decoder over a batch of *different* images (for training).

``segment_anything``'s ``MaskDecoder.predict_masks`` serves one image with many prompts: it
repeats a single image embedding once per prompt. Training wants one prompt per image for B
images at once, so this runs the same decoder modules (same weights, same maths) with the
image embeddings taken as they are, one per prompt. For B = 1 it equals
``MaskDecoder.forward`` (tested).
"""

from __future__ import annotations

import torch
from torch import nn


def decode_batch(
    sam: nn.Module,
    embeddings: torch.Tensor,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    boxes: torch.Tensor | None,
    mask_logits: torch.Tensor | None,
    multimask: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one prompt per image.

    Args:
        sam: a ``segment_anything`` ``Sam``.
        embeddings: (B, C, h, w) image embeddings (one per image).
        points: ((B, N, 2) float model-input-frame (x, y), (B, N) int labels: 1 positive,
            0 negative, -1 padding) or None.
        boxes: (B, 4) float model-input-frame XYXY or None.
        mask_logits: (B, 1, L, L) low-resolution mask prompts or None.
        multimask: return the 3 multimask outputs (else the single-mask output).

    Returns:
        low-resolution logits (B, M, L, L) and predicted IoUs (B, M); M = 3 or 1.
    """
    pe = sam.prompt_encoder
    dec = sam.mask_decoder
    sparse, dense = pe(points=points, boxes=boxes, masks=mask_logits)
    batch = embeddings.shape[0]
    if sparse.shape[0] != batch:
        raise ValueError(f"{batch} images but {sparse.shape[0]} prompts")
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(batch, -1, -1).to(sparse.dtype), sparse],
                       dim=1)
    src = embeddings + dense
    pos = pe.get_dense_pe().expand(batch, -1, -1, -1)
    hs, src = dec.transformer(src, pos, tokens)
    _, c, h, w = embeddings.shape
    upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(batch, c, h, w))
    # One hypernetwork MLP per mask token turns that token into per-channel weights.
    weights = torch.stack(
        [mlp(hs[:, 1 + i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
    masks = torch.einsum("bmc,bchw->bmhw", weights, upscaled)
    iou = dec.iou_prediction_head(hs[:, 0])
    keep = slice(1, None) if multimask else slice(0, 1)
    return masks[:, keep], iou[:, keep]
