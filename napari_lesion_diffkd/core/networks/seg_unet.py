"""A plain supervised segmentation UNet: image (B, C, H, W) -> lesion logits (B, 1, H, W).

One small, CPU-friendly network with three roles in the project:

(a) the supervised baseline a user would otherwise pick (trained with
    ``core/training/objectives.segmentation_loss``: BCE + soft Dice);
(b) UniSegDiff's conditional feature extraction network (CFENet, seed 004 §2.1 and §2.3):
    pre-trained for segmentation, then frozen inside
    :class:`~napari_lesion_diffkd.core.networks.unisegdiff.UniSegDiffNet`, which reads its
    per-level features through :meth:`SegUNet.forward_features`;
(c) LEAF's default frozen "vision encoder" (seed 001 §2.2, eq. 5) for the feature-alignment
    loss, through :meth:`SegUNet.features` (see ``objectives.segunet_feature_encoder``).

Layout (``L = len(channel_mults)`` levels, level ``i`` at stride ``stem_stride * 2**i``):
a conv stem (stride ``stem_stride``), one residual block per level (``blocks_per_level``) with
stride-2 convs between levels, a bottleneck block, and a decoder that upsamples, concatenates
the encoder skip and runs one residual block per level. With ``stem_stride=2`` all levels run
at half resolution (about 4x less compute); the head then upsamples the last decoder feature
bilinearly, concatenates the image and refines with two convs at full resolution so that
boundary detail is not lost.

Shapes: H and W must be multiples of ``stem_stride * 2 ** (L - 1)`` (16 at the defaults).
Default config (3 -> 1 channels, base 24, mults (1, 2, 4, 6), stride-2 stem): about 2.1 M
parameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.networks.blocks import ResBlock, group_norm


class SegUNetFeatures(NamedTuple):
    """Everything one forward pass of :class:`SegUNet` computes.

    Attributes:
        logits: (B, out_channels, H, W) float32 lesion logits (> 0 is lesion).
        encoder: ``L`` tensors, finest level first; level ``i`` is (B, widths[i],
            H / (stem_stride * 2**i), W / (stem_stride * 2**i)).
        decoder: ``L`` tensors with the same order, widths and shapes as ``encoder``: the
            decoder block output at each level (after fusing the encoder skip), i.e. the
            features the network turns into the mask.
    """

    logits: torch.Tensor
    encoder: tuple[torch.Tensor, ...]
    decoder: tuple[torch.Tensor, ...]


class SegUNet(nn.Module):
    """Supervised segmentation UNet ``image -> logits`` that also exposes its features.

    Args:
        image_channels: image channels (3 RGB, 1 gray).
        out_channels: logit channels (1 for binary lesion masks).
        base_channels: width of level 0.
        channel_mults: width multiplier per level; each level after the first halves H, W.
        blocks_per_level: residual blocks per encoder level.
        stem_stride: 1, or 2 to run every level at half resolution (CPU-friendly).
    """

    def __init__(
        self,
        image_channels: int = 3,
        out_channels: int = 1,
        base_channels: int = 24,
        channel_mults: tuple[int, ...] | list[int] = (1, 2, 4, 6),
        blocks_per_level: int = 1,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        if len(channel_mults) < 1 or blocks_per_level < 1:
            raise ValueError("need at least one level and one block per level")
        self.config: dict[str, Any] = {
            "image_channels": image_channels,
            "out_channels": out_channels,
            "base_channels": base_channels,
            "channel_mults": list(channel_mults),
            "blocks_per_level": blocks_per_level,
            "stem_stride": stem_stride,
        }
        self.image_channels = image_channels
        self.out_channels = out_channels
        self.stem_stride = stem_stride
        self.levels = len(channel_mults)
        self.widths: list[int] = [base_channels * m for m in channel_mults]
        widths = self.widths

        self.stem = nn.Conv2d(image_channels, widths[0], 3, stride=stem_stride, padding=1)
        self.enc_blocks = nn.ModuleList()
        self.enc_down = nn.ModuleList()
        for i, w in enumerate(widths):
            prev = widths[0] if i == 0 else widths[i - 1]
            blocks = [ResBlock(prev, w)] + [ResBlock(w, w) for _ in range(blocks_per_level - 1)]
            self.enc_blocks.append(nn.Sequential(*blocks))
            if i < self.levels - 1:
                self.enc_down.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
        self.mid = ResBlock(widths[-1], widths[-1])

        # Decoder, deepest level first (index j = L - 1 - level).
        self.dec_blocks = nn.ModuleList()
        self.dec_up = nn.ModuleList()
        for i in reversed(range(self.levels)):
            self.dec_blocks.append(ResBlock(2 * widths[i], widths[i]))
            if i > 0:
                self.dec_up.append(nn.Conv2d(widths[i], widths[i - 1], 3, padding=1))
        self.out_norm = group_norm(widths[0])
        if stem_stride == 1:
            self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        else:
            # Full-resolution refinement: upsampled features + the image itself.
            self.head = nn.Sequential(
                nn.Conv2d(widths[0] + image_channels, widths[0], 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(widths[0], out_channels, 3, padding=1),
            )

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def downsampling_factor(self) -> int:
        """H and W must be multiples of this."""
        return self.stem_stride * 2 ** (self.levels - 1)

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of each entry of :meth:`features` (encoder levels, then decoder levels)."""
        return tuple(self.widths) + tuple(self.widths)

    @property
    def feature_strides(self) -> tuple[int, ...]:
        """Downsampling of each entry of :meth:`features` relative to the input."""
        strides = tuple(self.stem_stride * 2**i for i in range(self.levels))
        return strides + strides

    # -- forward ----------------------------------------------------------------------------------
    def forward_features(self, image: torch.Tensor) -> SegUNetFeatures:
        """Run the network once and return logits with the per-level features.

        Args:
            image: (B, image_channels, H, W) float32, H and W multiples of
                :attr:`downsampling_factor`.

        Returns:
            :class:`SegUNetFeatures` (logits, encoder features, decoder features).
        """
        h = self.stem(image)
        encoder: list[torch.Tensor] = []
        for i, block in enumerate(self.enc_blocks):
            h = block(h)
            encoder.append(h)
            if i < self.levels - 1:
                h = self.enc_down[i](h)
        h = self.mid(h)
        decoder: list[torch.Tensor] = [h] * self.levels  # placeholders, filled below
        up = iter(self.dec_up)
        for j, block in enumerate(self.dec_blocks):
            i = self.levels - 1 - j
            h = block(torch.cat([h, encoder[i]], dim=1))
            decoder[i] = h
            if i > 0:
                h = next(up)(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = F.silu(self.out_norm(h))
        if self.stem_stride == 1:
            logits = self.head(h)
        else:
            h = F.interpolate(h, size=image.shape[-2:], mode="bilinear", align_corners=False)
            logits = self.head(torch.cat([h, image], dim=1))
        return SegUNetFeatures(logits, tuple(encoder), tuple(decoder))

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-level feature maps usable as condition / teacher features.

        Args:
            image: (B, image_channels, H, W) float32.

        Returns:
            ``2 * L`` tensors: the encoder levels finest first (indices ``0 .. L-1``), then the
            decoder levels finest first (indices ``L .. 2L-1``). Entry ``k`` has
            ``feature_channels[k]`` channels at stride ``feature_strides[k]``. Index ``L - 1``
            (deepest encoder level) is the most "semantic"; index ``L`` (finest decoder level)
            the most mask-like.
        """
        out = self.forward_features(image)
        return out.encoder + out.decoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Lesion logits (B, out_channels, H, W) for ``image`` (B, image_channels, H, W)."""
        return self.forward_features(image).logits
