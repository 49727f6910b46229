"""SAM as the teacher of seed 003: refine the student's fused prompt into pseudo-labels.

``SamTeacher`` wraps a frozen SAM (``lesion-sam-tiny`` by default, any ``core.sam.load_sam``
model works). The image encoder runs **once per unlabelled image** (embeddings cached, no
augmentation on SAM's side); each training step then runs only the prompt encoder and mask
decoder (``core.sam.decoding.decode_batch``) on the student's current fused mask prompt
(``fusion.py``), single-mask output. SAM's low-resolution logits are mapped back to the
student's S x S frame the way SAM post-processes its masks (bilinear up to SAM's input
size, crop of the image's (H', W'), bilinear to S x S). Their sign is the pseudo-label,
their sigmoid the soft target of the KL term.

Frames: student maps are (B, 1, S, S) over the whole image (square resize, aspect ratio not
kept); SAM's are (B, 1, L, L) over its padded S_sam x S_sam input (longest side resized).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.distillation.sam_ssl.fusion import (
    FusionMode,
    fused_boxes,
    fused_mask_prompt,
)
from napari_lesion_diffkd.core.sam.architectures import low_res_size
from napari_lesion_diffkd.core.sam.decoding import decode_batch
from napari_lesion_diffkd.core.sam.inputs import image_to_input


@dataclass(frozen=True)
class Refinement:
    """SAM's answer to a batch of fused prompts.

    Attributes:
        logits: (B, 1, S, S) float32 SAM logits in the student's frame (> 0: lesion).
        low_res: (B, 1, L, L) float32 SAM logits in SAM's padded input frame.
        prompt: (B, 1, L, L) float32 the fused mask prompt that was decoded.
        score: (B,) float32 SAM's predicted IoU of each mask.
    """

    logits: torch.Tensor
    low_res: torch.Tensor
    prompt: torch.Tensor
    score: torch.Tensor

    @property
    def pseudo_labels(self) -> torch.Tensor:
        """(B, 1, S, S) float32 {0, 1}: SAM's refined masks, the pseudo-labels."""
        return (self.logits > 0).float()


class SamTeacher:
    """A frozen SAM that encodes images once and refines student prompts.

    Args:
        sam: a ``segment_anything`` ``Sam`` (e.g. ``load_sam("lesion-sam-tiny").model``).
        device: where SAM runs.
    """

    def __init__(self, sam: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.sam = sam.to(self.device).eval()
        for p in self.sam.parameters():
            p.requires_grad_(False)
        self.size = int(self.sam.image_encoder.img_size)
        self.low_res_hw = low_res_size(self.sam)

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray],
               chunk: int = 16) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Images as stored ((Y, X) gray or (Y, X, 3) RGB) -> embeddings (N, C, h, w) float32
        and each image's (H', W') inside SAM's padded input."""
        feats, hws = [], []
        for start in range(0, len(images), chunk):
            batch = []
            for image in images[start:start + chunk]:
                tensor, hw = image_to_input(image, self.size)
                batch.append(self.sam.preprocess(tensor.to(self.device))[0])
                hws.append(hw)
            feats.append(self.sam.image_encoder(torch.stack(batch)))
        return torch.cat(feats), hws

    def to_student_frame(self, low_res: torch.Tensor, input_hw: Sequence[tuple[int, int]],
                         size: int) -> torch.Tensor:
        """(B, 1, L, L) SAM logits -> (B, 1, S, S) logits in the student's frame."""
        up = F.interpolate(low_res.float(), size=(self.size, self.size), mode="bilinear",
                           align_corners=False)
        out = [F.interpolate(up[i:i + 1, :, :h, :w], size=(size, size), mode="bilinear",
                             align_corners=False) for i, (h, w) in enumerate(input_hw)]
        return torch.cat(out)

    @torch.no_grad()
    def refine(
        self,
        embeddings: torch.Tensor,
        input_hw: Sequence[tuple[int, int]],
        prob: torch.Tensor,
        sdf: torch.Tensor,
        mode: FusionMode = "sdf-ramp",
        mask_weight: float = 0.5,
        soft_gain: float = 16.0,
        with_box: bool = False,
    ) -> Refinement:
        """Decode the student's fused prompt for a batch of cached images.

        Args:
            embeddings: (B, C, h, w) from :meth:`encode`. input_hw: their (H', W').
            prob: (B, 1, S, S) student probability. sdf: (B, 1, S, S) student SDF.
            mode, mask_weight, soft_gain: the fusion (``fusion.fused_mask_prompt``).
            with_box: also give SAM the box around the fused lesion.
        """
        size = int(prob.shape[-1])
        prompt = fused_mask_prompt(prob, sdf, input_hw, self.size, self.low_res_hw, mode,
                                   mask_weight, soft_gain).to(self.device)
        boxes = (fused_boxes(prob, sdf, input_hw, self.size, mask_weight).to(self.device)
                 if with_box else None)
        low, iou = decode_batch(self.sam, embeddings.to(self.device), None, boxes, prompt,
                                multimask=False)
        low = low.float()
        return Refinement(self.to_student_frame(low, input_hw, size).to(prob.device),
                          low, prompt, iou[:, 0].float())
