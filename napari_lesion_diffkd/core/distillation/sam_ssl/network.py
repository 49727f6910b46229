"""The seed-003 student: a MobileNetV2-style encoder-decoder with a mask head and an SDF head.

Encoder: a stride-2 stem, then stages of inverted residual blocks (1x1 expansion, 3x3
depthwise, linear 1x1 projection, identity shortcut where shapes allow; Sandler et al.,
CVPR 2018) at 1/2, 1/4, 1/8 and 1/16 of the input. Decoder: U-Net style, bilinear x2
upsampling, concatenation with the encoder's skip, one depthwise-separable block per level,
up to 1/2 (or 1/4) resolution. Two heads (one depthwise-separable block + a 1x1 conv each,
bilinear back to the input size): the **mask head** gives lesion logits, the **SDF head** a
signed-distance map squashed by ``tanh`` to [-1, 1] (``sdf.normalised_sdf`` convention:
positive inside). Only this network runs at inference (seed 003: SAM is a training-time
teacher).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class ConvBNAct(nn.Sequential):
    """conv (k x k, stride, groups) -> BatchNorm -> ReLU6 (or no activation)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand (1x1) -> depthwise 3x3 (stride) -> linear project (1x1)."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(cin, hidden, 1))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
                   ConvBNAct(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class SeparableBlock(nn.Sequential):
    """Depthwise 3x3 -> pointwise 1x1, each with BatchNorm and ReLU6 (decoder and heads)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(ConvBNAct(cin, cin, 3, groups=cin), ConvBNAct(cin, cout, 1))


class DualTaskNet(nn.Module):
    """MobileNet-style encoder-decoder with a mask head and a signed-distance head.

    Args:
        in_channels: image channels (3: RGB; gray images are repeated by the data code).
        widths: channels of the stem/1/2 stage, then the 1/4, 1/8, 1/16 stages and the
            last (1/16, stride 1) stage: 5 values.
        depths: inverted residual blocks per stage (5 values).
        expand_ratio: expansion of the inverted residual blocks.
        decoder_widths: channels of the decoder at 1/8, 1/4 (and 1/2): 2 or 3 values. With
            2 the heads work at 1/4 resolution and upsample x4 (cheaper on a CPU: the
            masks are bilinearly resized to the image size afterwards anyway).

    Input (B, in_channels, S, S) float32 in [-1, 1] with S a multiple of 16. ``forward``
    returns ``(mask_logits, sdf)``, both (B, 1, S, S) float32: lesion logits and the
    normalised signed distance in [-1, 1] (positive inside).
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 24, 40, 80, 112),
                 depths: Sequence[int] = (1, 2, 3, 3, 2), expand_ratio: int = 4,
                 decoder_widths: Sequence[int] = (64, 40)) -> None:
        super().__init__()
        if len(widths) != 5 or len(depths) != 5 or len(decoder_widths) not in (2, 3):
            raise ValueError("widths and depths need 5 values, decoder_widths 2 or 3")
        self._kwargs: dict[str, Any] = {
            "in_channels": int(in_channels), "widths": [int(w) for w in widths],
            "depths": [int(d) for d in depths], "expand_ratio": int(expand_ratio),
            "decoder_widths": [int(w) for w in decoder_widths]}
        self.stem = ConvBNAct(in_channels, widths[0], 3, stride=2)
        strides = (1, 2, 2, 2, 1)  # stage resolutions: 1/2, 1/4, 1/8, 1/16, 1/16
        stages = []
        cin = widths[0]
        for width, depth, stride in zip(widths, depths, strides):
            # MobileNetV2's first block does not expand (its input is the thin stem).
            blocks = [InvertedResidual(cin if i == 0 else width, width, stride if i == 0 else 1,
                                       1 if not stages and i == 0 else expand_ratio)
                      for i in range(max(1, depth))]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.ModuleList(stages)
        skips = (widths[2], widths[1], widths[0])[: len(decoder_widths)]  # 1/8, 1/4, 1/2
        ups = []
        cin = widths[4]
        for skip, width in zip(skips, decoder_widths):
            ups.append(SeparableBlock(cin + skip, width))
            cin = width
        self.decoder = nn.ModuleList(ups)
        self.mask_head = nn.Sequential(SeparableBlock(cin, cin), nn.Conv2d(cin, 1, 1))
        self.sdf_head = nn.Sequential(SeparableBlock(cin, cin), nn.Conv2d(cin, 1, 1))

    def config(self) -> dict[str, Any]:
        """Constructor kwargs (JSON-able): ``DualTaskNet(**net.config())`` rebuilds it."""
        return dict(self._kwargs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        h = self.stem(x)
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        skips = (feats[2], feats[1], feats[0])[: len(self.decoder)]  # 1/8, 1/4, 1/2
        for block, skip in zip(self.decoder, skips):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        mask = F.interpolate(self.mask_head(h), size=size, mode="bilinear", align_corners=False)
        sdf = F.interpolate(self.sdf_head(h), size=size, mode="bilinear", align_corners=False)
        return mask, torch.tanh(sdf)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
