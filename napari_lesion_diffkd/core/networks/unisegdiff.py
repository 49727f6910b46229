"""UniSegDiff denoiser (seed 004, Hu et al., MICCAI 2025), sized for a CPU.

Architecture (seed 004 §2.1, "2.5 UNets"):

- **CFENet** (conditional feature extraction network, ``self.condition``): a
  :class:`~napari_lesion_diffkd.core.networks.seg_unet.SegUNet`, pre-trained for segmentation
  and frozen during denoiser training (§2.3). Load its weights with
  :meth:`UniSegDiffNet.load_condition_state`; :meth:`UniSegDiffNet.freeze_condition` (called by
  the constructor unless ``condition_frozen=False``) turns off its gradients and keeps it in
  eval mode. Its weights are part of this network's ``state_dict`` and its config is part of
  this network's config, so a model bundle rebuilds and reloads the whole thing.
- **DNet**: one encoder over the noisy mask x_t (time-conditioned residual blocks) and *two*
  decoders, one predicting eps and one predicting x0 (§2.1: "the two decoders of DNet
  separately learn to model the eps and the x0"). Output (B, 2 * mask_channels, H, W):
  eps first, then x0 (``output_targets = ("epsilon", "x0")``, read by the staged sampler).

Condition features. ``CF_i`` (§2.1) are CFENet's *decoder* features, one per level: after
segmentation pre-training they are the features the CFENet turns into a mask, which is the
paper's point of pre-training ("transforms lesion images ... into distributions similar to the
masks", §2.3). In addition CFENet's own prediction, ``tanh(logits / 2) = 2 sigmoid(logits) - 1``
(a mask estimate on the [-1, 1] scale of x0), is concatenated to x_t at the input of the
denoising encoder and at the full-resolution heads (``use_condition_logits``, our addition: the
pre-trained segmentation is a strong prior that the denoiser only has to refine; the paper does
not say whether the logits are used).

Injection of the condition (our reading of §2.1 and §2.3):

- *Feature fusion* (Fig. 1 "FF"): at every encoder level ``CF_i`` is projected by a 1x1 conv
  and added to the denoising features before the level's block ("the encoder of DNet ...
  progressively receives CF_i", §2.1). Cheap at any resolution.
- *Dual cross-attention* (Fig. 1 "DCA", §2.3: "two cascaded cross-attention blocks, with
  conditional features and noise mask features alternating as queries"): block 1 takes the
  condition features as queries and the denoising features as keys/values (the condition
  "reads" the current noisy-mask state); block 2 takes the denoising features as queries and
  the updated condition features as keys/values; the result replaces the denoising features.
  Each of the two decoders has its own DCA modules, so the eps and the x0 head attend to the
  condition independently. Attention is global over the tokens of one level, so its cost grows
  with (H * W)^2: at CPU scale it runs only at the low-resolution levels whose stride is in
  ``attention_strides`` (default 1/8 and 1/16 of the input: 8x8 + 4x4 tokens at 64 px,
  16x16 + 8x8 at 128 px). Fixed 2D sinusoidal position codes are added to queries and keys so
  that attention can match positions between the two maps.

The denoiser's levels match the CFENet's: ``len(channel_mults)`` must equal the CFENet's number
of levels and the denoiser uses the CFENet's ``stem_stride``. H and W must be multiples of
``stem_stride * 2 ** (levels - 1)``.

Default config (CFENet = SegUNet defaults, denoiser base 32, mults (1, 2, 4, 4), stride-2
stem, DCA at strides 8 and 16): about 2.1 M frozen + 5.3 M trainable parameters.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.networks.blocks import ResBlock, group_norm, timestep_embedding
from napari_lesion_diffkd.core.networks.seg_unet import SegUNet


class ConditionFeatures(NamedTuple):
    """Output of :meth:`UniSegDiffNet.encode_condition` (frozen CFENet, computed once per image).

    Attributes:
        prior: (B, mask_channels, H, W) float32, ``tanh(logits / 2)`` of the CFENet, in [-1, 1].
        levels: ``L`` tensors, finest first: the CFENet decoder features ``CF_i``.
    """

    prior: torch.Tensor
    levels: tuple[torch.Tensor, ...]


def sincos_position_2d(
    height: int, width: int, channels: int, device: torch.device
) -> torch.Tensor:
    """Fixed 2D sinusoidal position code (ViT/MAE style) of shape (height * width, channels).

    A quarter of the channels each hold sin/cos of the row and of the column index at
    geometrically spaced frequencies; channels beyond a multiple of 4 are zero.
    """
    quarter = channels // 4
    code = torch.zeros(height * width, channels, device=device)
    if quarter == 0:
        return code
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(quarter, dtype=torch.float32, device=device) / quarter
    )
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    ay = ys.reshape(-1, 1) * freqs
    ax = xs.reshape(-1, 1) * freqs
    code[:, : 4 * quarter] = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)
    return code


class CrossAttentionBlock(nn.Module):
    """Pre-norm multi-head cross-attention plus MLP, both residual, on flattened feature maps.

    Args:
        channels: token width (of both inputs).
        heads: attention heads (must divide ``channels``).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention heads {heads} must divide channels {channels}")
        self.heads = heads
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)
        self.norm_mlp = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, 2 * channels), nn.SiLU(), nn.Linear(2 * channels, channels)
        )

    def forward(
        self, query: torch.Tensor, context: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """Update ``query`` tokens by attending to ``context`` tokens.

        Args:
            query: (B, N, C) tokens; context: (B, M, C) tokens.
            position: (N, C) position code added to queries and keys (N == M here).

        Returns:
            (B, N, C) updated query tokens.
        """
        b, n, c = query.shape
        d = c // self.heads
        q_in = self.norm_q(query)
        kv_in = self.norm_kv(context)
        q = self.to_q(q_in + position).view(b, n, self.heads, d).transpose(1, 2)
        k = self.to_k(kv_in + position).view(b, -1, self.heads, d).transpose(1, 2)
        v = self.to_v(kv_in).view(b, -1, self.heads, d).transpose(1, 2)
        attn = F.scaled_dot_product_attention(q, k, v)
        h = query + self.out(attn.transpose(1, 2).reshape(b, n, c))
        return h + self.mlp(self.norm_mlp(h))


class DualCrossAttention(nn.Module):
    """DCA (seed 004 §2.3): two cascaded cross-attention blocks with alternating queries.

    Block 1: condition features query the denoising features; block 2: denoising features query
    the updated condition features. Returns the updated denoising features.

    Args:
        channels: width of the denoising features at this level.
        cond_channels: width of the condition features at this level (1x1-projected).
        heads: attention heads.
    """

    def __init__(self, channels: int, cond_channels: int, heads: int) -> None:
        super().__init__()
        self.cond_proj = nn.Conv2d(cond_channels, channels, 1)
        self.cond_block = CrossAttentionBlock(channels, heads)
        self.denoise_block = CrossAttentionBlock(channels, heads)

    def forward(self, denoise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Args: denoise (B, C, h, w); cond (B, C_cond, h', w') (resized to h, w if needed).

        Returns:
            (B, C, h, w) denoising features after the dual cross-attention.
        """
        b, c, h, w = denoise.shape
        if cond.shape[-2:] != denoise.shape[-2:]:
            cond = F.interpolate(cond, size=(h, w), mode="bilinear", align_corners=False)
        cf = self.cond_proj(cond).flatten(2).transpose(1, 2)  # (B, hw, C)
        df = denoise.flatten(2).transpose(1, 2)
        pos = sincos_position_2d(h, w, c, denoise.device).to(denoise.dtype)
        cf = self.cond_block(cf, df, pos)  # conditional features as queries
        df = self.denoise_block(df, cf, pos)  # noisy-mask features as queries
        return df.transpose(1, 2).reshape(b, c, h, w)


class _Decoder(nn.Module):
    """One DNet decoder (eps or x0 head) with skips, time FiLM and DCA at chosen levels."""

    def __init__(
        self,
        widths: list[int],
        cond_widths: list[int],
        attention_levels: set[int],
        heads: int,
        time_dim: int,
        full_res_channels: int,
        out_channels: int,
        stem_stride: int,
    ) -> None:
        super().__init__()
        self.levels = len(widths)
        self.stem_stride = stem_stride
        self.blocks = nn.ModuleList()
        self.up = nn.ModuleList()
        self.dca = nn.ModuleDict()
        for i in reversed(range(self.levels)):
            self.blocks.append(ResBlock(2 * widths[i], widths[i], time_dim))
            if i in attention_levels:
                self.dca[str(i)] = DualCrossAttention(widths[i], cond_widths[i], heads)
            if i > 0:
                self.up.append(nn.Conv2d(widths[i], widths[i - 1], 3, padding=1))
        self.out_norm = group_norm(widths[0])
        if stem_stride == 1:
            self.out_conv = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        else:
            # Back to full resolution with the full-resolution inputs (x_t and the prior).
            self.out_conv = nn.Sequential(
                nn.Conv2d(widths[0] + full_res_channels, widths[0], 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(widths[0], out_channels, 3, padding=1),
            )

    def forward(
        self,
        h: torch.Tensor,
        skips: list[torch.Tensor],
        emb: torch.Tensor,
        cond_levels: tuple[torch.Tensor, ...],
        full_res: torch.Tensor,
    ) -> torch.Tensor:
        up = iter(self.up)
        for j, block in enumerate(self.blocks):
            i = self.levels - 1 - j
            h = block(torch.cat([h, skips[i]], dim=1), emb)
            if str(i) in self.dca:
                h = self.dca[str(i)](h, cond_levels[i])
            if i > 0:
                h = next(up)(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = F.silu(self.out_norm(h))
        if self.stem_stride == 1:
            return self.out_conv(h)
        h = F.interpolate(h, size=full_res.shape[-2:], mode="bilinear", align_corners=False)
        return self.out_conv(torch.cat([h, full_res], dim=1))


class UniSegDiffNet(nn.Module):
    """Frozen pre-trained CFENet + DNet (one encoder, eps and x0 decoders) of seed 004.

    Call contract: ``forward(x_t (B, mask_channels, H, W), t (B,) float, cond)`` where ``cond``
    is the image (B, C, H, W) or :meth:`encode_condition` of it; returns
    (B, 2 * mask_channels, H, W) with eps in the first ``mask_channels`` channels and x0 in the
    next ones (``output_targets``).

    Args:
        condition_network: constructor kwargs of the CFENet :class:`SegUNet` (a
            ``"_class_name": "SegUNet"`` entry is accepted and dropped); None: SegUNet defaults.
        image_channels: image channels; None keeps the CFENet config's value, otherwise it
            overrides it (the trainer passes ``image_channels`` to every network).
        mask_channels: mask channels (1 for binary lesions; must equal the CFENet's
            ``out_channels`` when ``use_condition_logits``).
        base_channels: width of the denoiser's first level.
        channel_mults: denoiser width multipliers, one per CFENet level.
        time_dim: timestep embedding size.
        attention_strides: input strides (relative to H, W) of the levels that get dual
            cross-attention in each decoder (default 8 and 16).
        attention_heads: heads of every attention block.
        use_condition_logits: feed the CFENet's mask estimate to the denoiser (module docstring).
        condition_frozen: freeze the CFENet at construction (seed 004 §2.3).
    """

    output_targets: tuple[str, ...] = ("epsilon", "x0")

    def __init__(
        self,
        condition_network: Mapping[str, Any] | None = None,
        image_channels: int | None = None,
        mask_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] | list[int] = (1, 2, 4, 4),
        time_dim: int = 128,
        attention_strides: tuple[int, ...] | list[int] = (8, 16),
        attention_heads: int = 4,
        use_condition_logits: bool = True,
        condition_frozen: bool = True,
    ) -> None:
        super().__init__()
        cond_cfg = {k: v for k, v in dict(condition_network or {}).items() if not k.startswith("_")}
        class_name = dict(condition_network or {}).get("_class_name", "SegUNet")
        if class_name != "SegUNet":
            raise ValueError(f"condition_network must be a SegUNet config, got {class_name!r}")
        if image_channels is not None:
            cond_cfg["image_channels"] = int(image_channels)
        self.condition = SegUNet(**cond_cfg)
        if len(channel_mults) != self.condition.levels:
            raise ValueError(
                f"channel_mults has {len(channel_mults)} levels, the condition network "
                f"{self.condition.levels}; they must match"
            )
        if use_condition_logits and self.condition.out_channels != mask_channels:
            raise ValueError("use_condition_logits needs condition out_channels == mask_channels")
        self.config: dict[str, Any] = {
            "condition_network": dict(self.condition.config),
            "image_channels": self.condition.image_channels,
            "mask_channels": mask_channels,
            "base_channels": base_channels,
            "channel_mults": list(channel_mults),
            "time_dim": time_dim,
            "attention_strides": list(attention_strides),
            "attention_heads": attention_heads,
            "use_condition_logits": use_condition_logits,
            "condition_frozen": condition_frozen,
        }
        self.mask_channels = mask_channels
        self.use_condition_logits = use_condition_logits
        self.stem_stride = self.condition.stem_stride
        self.levels = self.condition.levels
        self.time_dim = time_dim
        widths = [base_channels * m for m in channel_mults]
        cond_widths = list(self.condition.widths)
        strides = [self.stem_stride * 2**i for i in range(self.levels)]
        attention_levels = {i for i, s in enumerate(strides) if s in set(attention_strides)}

        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, 2 * time_dim), nn.SiLU(), nn.Linear(2 * time_dim, time_dim)
        )
        full_res_channels = mask_channels * (2 if use_condition_logits else 1)
        self.stem = nn.Conv2d(full_res_channels, widths[0], 3, stride=self.stem_stride, padding=1)
        # Encoder with feature fusion (1x1 projection + add) of CF_i at every level (§2.1).
        in_widths = [widths[0]] + widths[:-1]
        self.fuse = nn.ModuleList(nn.Conv2d(cw, w, 1) for cw, w in zip(cond_widths, in_widths))
        self.enc_blocks = nn.ModuleList()
        self.enc_down = nn.ModuleList()
        for i, w in enumerate(widths):
            self.enc_blocks.append(ResBlock(in_widths[i], w, time_dim))
            if i < self.levels - 1:
                self.enc_down.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
        self.mid = ResBlock(widths[-1], widths[-1], time_dim)
        decoder_args = (
            widths,
            cond_widths,
            attention_levels,
            attention_heads,
            time_dim,
            full_res_channels,
            mask_channels,
            self.stem_stride,
        )
        self.eps_decoder = _Decoder(*decoder_args)
        self.x0_decoder = _Decoder(*decoder_args)
        self._condition_frozen = False
        if condition_frozen:
            self.freeze_condition()

    # -- condition network ------------------------------------------------------------------------
    @property
    def downsampling_factor(self) -> int:
        """H and W must be multiples of this."""
        return self.condition.downsampling_factor

    @property
    def condition_frozen(self) -> bool:
        """Whether the CFENet is frozen (no gradients, eval mode)."""
        return self._condition_frozen

    def freeze_condition(self) -> None:
        """Freeze the CFENet: no gradients, always eval mode (seed 004 §2.3)."""
        for p in self.condition.parameters():
            p.requires_grad_(False)
        self.condition.eval()
        self._condition_frozen = True
        self.config["condition_frozen"] = True

    def load_condition_state(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load pre-trained SegUNet weights into the CFENet (strict).

        Args:
            state_dict: a :class:`SegUNet` ``state_dict`` (keys may also carry this network's
                ``"condition."`` prefix). Frozen parameters stay frozen.
        """
        prefix = "condition."
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
        self.condition.load_state_dict(dict(state_dict), strict=True)

    def train(self, mode: bool = True) -> UniSegDiffNet:
        """Set train/eval mode; a frozen CFENet stays in eval mode."""
        super().train(mode)
        if self._condition_frozen:
            self.condition.eval()
        return self

    def encode_condition(self, image: torch.Tensor) -> ConditionFeatures:
        """Run the CFENet once (no gradient when frozen); samplers reuse the result.

        Args:
            image: (B, C, H, W) float32, normalised as for the CFENet's pre-training.

        Returns:
            :class:`ConditionFeatures` (prior (B, mask_channels, H, W), per-level ``CF_i``).
        """
        guard = torch.no_grad() if self._condition_frozen else contextlib.nullcontext()
        with guard:
            out = self.condition.forward_features(image)
        prior = torch.tanh(0.5 * out.logits)  # = 2 sigmoid(logits) - 1, x0's [-1, 1] scale
        return ConditionFeatures(prior, out.decoder)

    # -- denoiser ---------------------------------------------------------------------------------
    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | ConditionFeatures | tuple[Any, ...],
    ) -> torch.Tensor:
        """Predict eps and x0 for noisy masks ``x_t`` at timesteps ``t``.

        Args:
            x_t: (B, mask_channels, H, W) noisy masks.
            t: (B,) timesteps (integer values, float or long).
            cond: the image (B, C, H, W) or :meth:`encode_condition` of it (any
                ``(prior, levels)`` pair, e.g. after batch repetition by a sampler).

        Returns:
            (B, 2 * mask_channels, H, W) float32: eps, then x0.
        """
        if isinstance(cond, torch.Tensor):
            cond = self.encode_condition(cond)
        prior, cond_levels = cond[0], tuple(cond[1])
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        full_res = torch.cat([x_t, prior], dim=1) if self.use_condition_logits else x_t
        h = self.stem(full_res)
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.enc_blocks):
            h = block(h + self.fuse[i](cond_levels[i]), emb)
            skips.append(h)
            if i < self.levels - 1:
                h = self.enc_down[i](h)
        h = self.mid(h, emb)
        eps = self.eps_decoder(h, skips, emb, cond_levels, full_res)
        x0 = self.x0_decoder(h, skips, emb, cond_levels, full_res)
        return torch.cat([eps, x0], dim=1)
