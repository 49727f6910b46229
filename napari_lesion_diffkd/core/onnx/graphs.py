"""Traceable wrappers that turn the project's networks into ONNX-exportable graphs.

Two graph kinds, both with a dynamic batch axis:

* **denoiser** (diffusion students, and teachers where the tracer copes): inputs
  ``image`` (N, C, S, S) float32 in [-1, 1], ``x_t`` (B, mask_channels, S, S) float32 and
  ``t`` (B,) float32 timesteps, with B = N * K image-major (row ``n * K + k`` is sample k of
  image n, the samplers' convention, ``core/diffusion/sampling_common.py``). Output ``x0``
  (B, heads * mask_channels, S, S) float32: the network's raw prediction, exactly what
  ``network(x_t, t, cond)`` returns in torch. The image condition (``encode_condition`` when
  the network has it) is computed **once per image inside the graph** and repeated K times,
  so K samples cost one encoder pass, as in torch.
* **segmenter** (plain :class:`~napari_lesion_diffkd.core.networks.seg_unet.SegUNet`
  baselines): input ``image`` (N, C, S, S), output ``logits`` (N, 1, S, S).
* **SAM image encoder**: input ``image`` (1, 3, S, S) float32, already normalised by the SAM's
  pixel mean/std and zero-padded bottom/right (``sam_encoder_input``), output
  ``image_embeddings`` (1, C, h, w). Its channel LayerNorms (the neck's ``LayerNorm2d``) are
  traced as 1 x 1 convolutions (``onnx_export.with_conv_layer_norms``: same maths, no slow
  axis-1 ``ReduceMean``). The prompt decoder's graph lives in ``core/sam/onnx_export.py``
  (with its crop-size fix) and is reused as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def repeat_rows(value: Any, repeats: torch.Tensor | int) -> Any:
    """Repeat every tensor of a (nested) condition ``repeats`` times along dim 0, image-major.

    ``unsqueeze + expand + reshape`` rather than ``repeat_interleave``: the tracer keeps the
    sizes symbolic, so K stays a dynamic axis of the exported graph.
    """
    if isinstance(value, torch.Tensor):
        n = value.shape[0]
        rest = value.shape[1:]
        expanded = value.unsqueeze(1).expand(n, repeats, *rest)
        return expanded.reshape(-1, *rest)
    if isinstance(value, Mapping):
        return type(value)((k, repeat_rows(v, repeats)) for k, v in value.items())
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(repeat_rows(v, repeats) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(repeat_rows(v, repeats) for v in value)
    return value


class DenoiserGraph(nn.Module):
    """``(image, x_t, t) -> x0``: condition once per image, then the denoiser on N * K rows."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = x_t.shape[0] // image.shape[0]
        encode = getattr(self.network, "encode_condition", None)
        cond = encode(image) if callable(encode) else image
        return self.network(x_t, t, repeat_rows(cond, k)).float()


class SegmenterGraph(nn.Module):
    """``image -> logits`` of a plain segmentation network."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image).float()


class SamEncoderGraph(nn.Module):
    """``normalised padded image -> image embedding`` of a ``segment_anything`` ``Sam``."""

    def __init__(self, sam: nn.Module) -> None:
        from napari_lesion_diffkd.core.sam.onnx_export import with_conv_layer_norms

        super().__init__()
        self.image_encoder = with_conv_layer_norms(sam.image_encoder)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)
