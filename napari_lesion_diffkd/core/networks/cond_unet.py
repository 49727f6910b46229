"""A small conditional diffusion UNet for binary lesion masks.

Two streams, in the spirit of DermoSegDiff (seed 000) but sized for a CPU:

- an *image encoder* (no time input) maps the image (B, C_img, H, W) to one feature map per
  level. It does not depend on the noisy mask or the timestep, so samplers compute it once
  per image through :meth:`CondDiffusionUNet.encode_condition` and reuse it for every sample
  and step: the per-step cost is only the mask stream and the decoder.
- a *mask stream* encodes the noisy mask x_t (B, 1, H, W) with time-conditioned residual
  blocks, adding the image features at each level; a decoder with skips predicts the target
  (epsilon, v or x0; see ``core/diffusion/targets.py``).

Shapes: H and W must be divisible by ``stem_stride * 2 ** (len(channel_mults) - 1)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.networks.blocks import ResBlock, group_norm, timestep_embedding


class CondDiffusionUNet(nn.Module):
    """Conditional denoiser ``(x_t, t, image or image features) -> prediction``.

    Args:
        image_channels: channels of the condition image (3 RGB, 1 gray).
        mask_channels: channels of the mask (1 for binary lesion masks).
        base_channels: width of the first level of the mask stream.
        channel_mults: width multipliers per level (each level but the last halves H, W).
        image_base_channels: width of the first level of the image encoder.
        image_channel_mults: image-encoder multipliers (same length as ``channel_mults``).
        time_dim: size of the timestep embedding.
        output_channels: channels predicted (default ``mask_channels``).
        stem_stride: 2 runs all levels at half resolution (then upsamples the output).
        image_blocks_per_level: residual blocks per level in the image encoder.
    """

    def __init__(
        self,
        image_channels: int = 3,
        mask_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] | list[int] = (1, 2, 4, 4),
        image_base_channels: int = 32,
        image_channel_mults: tuple[int, ...] | list[int] = (1, 2, 4, 8),
        time_dim: int = 128,
        output_channels: int | None = None,
        stem_stride: int = 1,
        image_blocks_per_level: int = 2,
    ) -> None:
        super().__init__()
        if len(channel_mults) != len(image_channel_mults):
            raise ValueError("channel_mults and image_channel_mults need the same length")
        self.config: dict[str, Any] = {
            "image_channels": image_channels,
            "mask_channels": mask_channels,
            "base_channels": base_channels,
            "channel_mults": list(channel_mults),
            "image_base_channels": image_base_channels,
            "image_channel_mults": list(image_channel_mults),
            "time_dim": time_dim,
            "output_channels": output_channels,
            "stem_stride": stem_stride,
            "image_blocks_per_level": image_blocks_per_level,
        }
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.stem_stride = stem_stride
        self.image_channels = image_channels
        self.mask_channels = mask_channels
        self.levels = len(channel_mults)
        widths = [base_channels * m for m in channel_mults]
        img_widths = [image_base_channels * m for m in image_channel_mults]
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, 2 * time_dim), nn.SiLU(), nn.Linear(2 * time_dim, time_dim)
        )

        # Image encoder: one block per level, stride-2 conv between levels.
        # A stride-2 stem runs every level at half resolution: about 4x less compute, which
        # is what makes CPU training and interactive sampling possible at 128 px.
        self.img_stem = nn.Conv2d(image_channels, img_widths[0], 3, stride=stem_stride, padding=1)
        self.img_blocks = nn.ModuleList()
        self.img_down = nn.ModuleList()
        for i, w in enumerate(img_widths):
            prev = img_widths[0] if i == 0 else img_widths[i - 1]
            blocks = [ResBlock(prev, w)] + [ResBlock(w, w) for _ in range(image_blocks_per_level - 1)]
            self.img_blocks.append(nn.Sequential(*blocks))
            if i < self.levels - 1:
                self.img_down.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
        # 1x1 projections of image features to the width entering each mask-stream level.
        in_widths = [widths[0]] + widths[:-1]
        self.img_proj = nn.ModuleList(
            nn.Conv2d(iw, w, 1) for iw, w in zip(img_widths, in_widths)
        )

        # Mask stream (encoder).
        self.mask_stem = nn.Conv2d(mask_channels, widths[0], 3, stride=stem_stride, padding=1)
        self.enc_blocks = nn.ModuleList()
        self.enc_down = nn.ModuleList()
        for i, w in enumerate(widths):
            prev = widths[0] if i == 0 else widths[i - 1]
            self.enc_blocks.append(ResBlock(prev, w, time_dim))
            if i < self.levels - 1:
                self.enc_down.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
        self.mid = ResBlock(widths[-1], widths[-1], time_dim)

        # Decoder: from the deepest level up, concatenating the encoder skip.
        self.dec_blocks = nn.ModuleList()
        self.dec_up = nn.ModuleList()
        for i in reversed(range(self.levels)):
            w = widths[i]
            self.dec_blocks.append(ResBlock(2 * w, w, time_dim))
            if i > 0:
                self.dec_up.append(nn.Conv2d(w, widths[i - 1], 3, padding=1))
        self.out_norm = group_norm(widths[0])
        out_ch = output_channels or mask_channels
        if stem_stride == 1:
            self.out_conv = nn.Conv2d(widths[0], out_ch, 3, padding=1)
        else:
            # Back to full resolution; the noisy mask itself is concatenated so that fine
            # detail lost by the stride-2 stem can be recovered at low noise.
            self.out_conv = nn.Sequential(
                nn.Conv2d(widths[0] + mask_channels, widths[0], 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(widths[0], out_ch, 3, padding=1),
            )

    @property
    def downsampling_factor(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (self.levels - 1) * self.stem_stride

    def encode_condition(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Image features per level, already projected to the mask stream's widths.

        Args:
            image: (B, image_channels, H, W) float32, normalised as in training.

        Returns:
            A tuple of ``levels`` tensors (B, C_i, H / 2**i, W / 2**i), C_i being the width
            entering level i of the mask stream.
        """
        h = self.img_stem(image)
        feats = []
        for i, block in enumerate(self.img_blocks):
            h = block(h)
            feats.append(self.img_proj[i](h))
            if i < self.levels - 1:
                h = self.img_down[i](h)
        return tuple(feats)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | tuple[torch.Tensor, ...],
    ) -> torch.Tensor:
        """Predict the target for noisy masks ``x_t`` at timesteps ``t``.

        Args:
            x_t: (B, mask_channels, H, W) noisy masks.
            t: (B,) timesteps (integer values as float or long).
            cond: the image (B, image_channels, H, W) or the output of
                :meth:`encode_condition` for it.

        Returns:
            (B, output_channels, H, W) prediction.
        """
        feats = self.encode_condition(cond) if isinstance(cond, torch.Tensor) else cond
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h = self.mask_stem(x_t)
        skips = []
        for i, block in enumerate(self.enc_blocks):
            h = block(h + feats[i], emb)
            skips.append(h)
            if i < self.levels - 1:
                h = self.enc_down[i](h)
        h = self.mid(h, emb)
        up = iter(self.dec_up)
        for j, block in enumerate(self.dec_blocks):
            i = self.levels - 1 - j
            h = block(torch.cat([h, skips[i]], dim=1), emb)
            if i > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = next(up)(h)
        h = F.silu(self.out_norm(h))
        if self.stem_stride == 1:
            return self.out_conv(h)
        h = F.interpolate(h, size=x_t.shape[-2:], mode="bilinear", align_corners=False)
        return self.out_conv(torch.cat([h, x_t], dim=1))
