"""The project's fast diffusion student: image features once, a tiny noise-to-mask head per sample.

Why this shape (issue 4; seed 000's lite student cuts parameters, not compute per step):

- The seed's LiteDermoSegDiff still runs its whole UNet, image stream included, for every one
  of its 250 steps x 9 samples. Here the image is encoded **once per image** by a small
  :class:`~napari_lesion_diffkd.core.networks.seg_unet.SegUNet` (``encode_condition``, which the
  samplers call once and repeat over the K samples), and only a tiny head runs per sample.
- The head works at ``1 / head_stride`` of the input resolution: the initial noise x_T is
  folded into channels by ``pixel_unshuffle`` (no information is lost), mixed with the image
  features and the encoder's own mask estimate, refined by ``head_blocks`` time-conditioned
  residual blocks and unfolded again by ``pixel_shuffle`` into a full-resolution x0 residual
  that is added to the encoder's mask estimate ``tanh(logits / 2)``.
- Trained by trajectory distillation (``core/training/kd/trajectory.py``): x0 prediction at
  t = T - 1 from the same initial noise the teacher's deterministic sampler started from, so
  one call maps x_T to the teacher's mask for that noise. K noises give K different masks
  whose spread follows the teacher's; the uncertainty is kept, not collapsed.

Interface: the denoiser contract of the samplers, ``forward(x_t, t, cond) -> x0`` with
``x_t`` (B, mask_channels, H, W) float32, ``t`` (B,) float timesteps and ``cond`` either the
image (B, image_channels, H, W) in [-1, 1] or the output of :meth:`encode_condition`. Output
(B, mask_channels, H, W) float32 x0 estimate on the [-1, 1] mask scale. H and W must be
multiples of ``max(encoder downsampling, head_stride)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.networks.blocks import ResBlock, group_norm, timestep_embedding
from napari_lesion_diffkd.core.networks.seg_unet import SegUNet

DEFAULT_ENCODER: dict[str, Any] = {
    "base_channels": 8,
    "channel_mults": [1, 2, 4, 8],
    "blocks_per_level": 1,
    "stem_stride": 2,
}


class FastStudentNet(nn.Module):
    """One-call x0 student: ``SegUNet`` image encoder + per-sample noise head.

    Args:
        image_channels: image channels (3 RGB, 1 gray).
        mask_channels: mask channels (1).
        encoder: SegUNet kwargs (``image_channels``/``out_channels`` are set here).
        head_stride: 2 or 4: resolution of the per-sample head relative to the input; the head
            reads the encoder's decoder feature of the same stride.
        head_channels: width of the head.
        head_blocks: residual blocks in the head.
        time_dim: size of the timestep embedding (FiLM in the head), so the network also
            serves few-step samplers.
    """

    def __init__(
        self,
        image_channels: int = 3,
        mask_channels: int = 1,
        encoder: dict[str, Any] | None = None,
        head_stride: int = 4,
        head_channels: int = 24,
        head_blocks: int = 2,
        time_dim: int = 32,
    ) -> None:
        super().__init__()
        encoder_cfg = {**DEFAULT_ENCODER, **(encoder or {})}
        encoder_cfg = {k: v for k, v in encoder_cfg.items() if not k.startswith("_")}
        encoder_cfg.pop("image_channels", None)
        encoder_cfg.pop("out_channels", None)
        self.config: dict[str, Any] = {
            "image_channels": image_channels,
            "mask_channels": mask_channels,
            "encoder": dict(encoder_cfg),
            "head_stride": head_stride,
            "head_channels": head_channels,
            "head_blocks": head_blocks,
            "time_dim": time_dim,
        }
        self.encoder = SegUNet(image_channels=image_channels, out_channels=mask_channels,
                               **encoder_cfg)
        strides = self.encoder.feature_strides[: self.encoder.levels]
        if head_stride not in strides:
            raise ValueError(f"head_stride {head_stride} must be one of the encoder's level "
                             f"strides {strides}")
        self.level = strides.index(head_stride)
        self.head_stride = head_stride
        self.mask_channels = mask_channels
        self.time_dim = time_dim
        folded = mask_channels * head_stride**2
        feat = self.encoder.widths[self.level]
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU())
        # Input: image feature, folded encoder mask estimate, folded noise.
        self.head_in = nn.Conv2d(feat + 2 * folded, head_channels, 3, padding=1)
        self.head_blocks = nn.ModuleList(
            [ResBlock(head_channels, head_channels, time_dim) for _ in range(head_blocks)]
        )
        self.head_norm = group_norm(head_channels)
        self.head_out = nn.Conv2d(head_channels, folded, 3, padding=1)
        # Start as "the encoder's mask": the residual head learns the noise dependence.
        nn.init.zeros_(self.head_out.weight)
        nn.init.zeros_(self.head_out.bias)

    output_targets = ("x0",)

    @property
    def downsampling_factor(self) -> int:
        return max(self.encoder.downsampling_factor, self.head_stride)

    def encode_condition(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image work, done once for all K samples.

        Args:
            image: (N, image_channels, H, W) float32 in [-1, 1].

        Returns:
            ``(feature, mask_estimate)``: (N, widths[level], H/s, W/s) decoder feature and the
            encoder's mask estimate ``tanh(logits / 2)`` (N, mask_channels, H, W) in (-1, 1).
        """
        out = self.encoder.forward_features(image)
        return out.decoder[self.level], torch.tanh(out.logits.float() / 2)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """x0 estimate (B, mask_channels, H, W) float32; see the module docstring."""
        if isinstance(cond, torch.Tensor):
            cond = self.encode_condition(cond)
        feature, estimate = cond
        s = self.head_stride
        emb = self.time_mlp(timestep_embedding(t.float(), self.time_dim).to(x_t.dtype))
        h = torch.cat([feature.to(x_t.dtype), F.pixel_unshuffle(estimate.to(x_t.dtype), s),
                       F.pixel_unshuffle(x_t, s)], dim=1)
        h = self.head_in(h)
        for block in self.head_blocks:
            h = block(h, emb)
        residual = F.pixel_shuffle(self.head_out(F.silu(self.head_norm(h))), s)
        return (estimate + residual).float()
