"""The TS-KD student (seed 002 §3.3.2): a plain ViT encoder and an FPN segmentation head.

Prompt-free: image -> mask logits. The input is the SAM input convention (see
``data.py``): (B, 3, S, S) float32, the image resized so that its longest side is S,
normalised with ``pixel_mean``/``pixel_std`` (0-255 scale) and zero-padded at the
bottom/right. With patch p the encoder works on a (S/p) x (S/p) token grid, which for
S = 256, p = 16 is exactly the grid of ``lesion-sam-tiny``'s image embedding, so the
hidden-state KD needs no resampling, only a 1x1 channel adapter (``HiddenAdapter``).

Encoder: patch embedding (conv p x p, stride p), learned absolute position embedding, no
class token, ``depth`` pre-norm transformer blocks (global multi-head self-attention, GELU
MLP), final LayerNorm. The preset ``vit-tiny`` is the standard ViT-Tiny (embed 192, depth
12, heads 3, patch 16, MLP ratio 4): at 224 px plus a class token and a 1000-class head it
has exactly timm's ``vit_tiny_patch16_224`` count, 5,717,416 parameters (tested).

Head (a ViTDet-style simple feature pyramid + FPN, as SETR-MLA does for a single-scale ViT):
hidden states of four evenly spaced blocks become maps at strides p/4, p/2, p, 2p
(transposed convs, identity, max-pool), each projected to ``fpn_dim`` channels; a top-down
FPN merges them; a small conv head turns the finest level into one channel of logits at
stride p/4: (B, 1, 4·S/p, 4·S/p) = 64 x 64 for S = 256, p = 16, the size of SAM's
low-resolution logits, so the decoder-level KD compares like with like.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.networks.blocks import group_norm

#: Named student sizes (overrides of :class:`StudentConfig`).
PRESETS: dict[str, dict[str, Any]] = {
    # The standard ViT-Tiny (DeiT-Ti / timm vit_tiny_patch16_224): the seed's student.
    "vit-tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3, "patch_size": 16,
                 "mlp_ratio": 4.0, "fpn_dim": 64},
    # A smaller student for CPU budgets and for a teacher as small as lesion-sam-tiny
    # (2.9M parameters): about 0.8M parameters with the head.
    "vit-mini": {"embed_dim": 96, "depth": 6, "num_heads": 3, "patch_size": 16,
                 "mlp_ratio": 4.0, "fpn_dim": 48},
}


@dataclass(frozen=True)
class StudentConfig:
    """Constructor settings of :class:`ViTFPNStudent` (JSON/YAML keys = attribute names).

    Attributes:
        img_size: S, the square padded input size. patch_size: p (S must be a multiple).
        embed_dim, depth, num_heads, mlp_ratio: the ViT.
        fpn_dim: channels of every pyramid level and of the head.
        taps: 0-based indices of the four blocks whose outputs feed the pyramid (finest
            level first); empty = evenly spaced, ending at the last block.
        pixel_mean, pixel_std: input normalisation on the 0-255 scale (SAM's values, so the
            teacher and the student see the same tensor).
    """

    img_size: int = 256
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    fpn_dim: int = 64
    taps: tuple[int, ...] = ()
    pixel_mean: tuple[float, ...] = field(default=(123.675, 116.28, 103.53))
    pixel_std: tuple[float, ...] = field(default=(58.395, 57.12, 57.375))

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        if self.patch_size % 4:
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of 4 (the head "
                             "works at stride patch_size / 4)")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by {self.num_heads} heads")
        if self.taps and (len(self.taps) != 4
                          or any(not 0 <= t < self.depth for t in self.taps)):
            raise ValueError(f"taps must be 4 block indices in 0..{self.depth - 1}, "
                             f"got {self.taps}")

    @property
    def grid(self) -> int:
        """Tokens per side, S / p."""
        return self.img_size // self.patch_size

    @property
    def logits_size(self) -> int:
        """Side of the output logits, 4·S/p."""
        return 4 * self.grid

    @property
    def tap_indices(self) -> tuple[int, ...]:
        if self.taps:
            return tuple(self.taps)
        d = self.depth
        return tuple(max(0, round(d * (i + 1) / 4) - 1) for i in range(4))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        """Build from a dict; ``preset`` names a :data:`PRESETS` entry the other keys override.

        Raises:
            ValueError: unknown keys or preset (the message lists the known ones).
        """
        data = dict(data)
        preset = data.pop("preset", None)
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown student preset {preset!r}; known: {sorted(PRESETS)}")
            data = {**PRESETS[preset], **data}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown student config keys {unknown}; known: {sorted(known)}")
        for key in ("taps", "pixel_mean", "pixel_std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


class _Attention(nn.Module):
    """Global multi-head self-attention with a fused qkv projection. (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    """Pre-norm transformer block (ViT / DeiT). (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTEncoder(nn.Module):
    """Plain ViT over a (S/p)^2 token grid; no class token."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        c = config
        self.patch_embed = nn.Conv2d(3, c.embed_dim, c.patch_size, stride=c.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.grid * c.grid, c.embed_dim))
        self.blocks = nn.ModuleList(_Block(c.embed_dim, c.num_heads, c.mlp_ratio)
                                    for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) -> every block's output, (B, N, D) each; the last one normalised."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        outs = []
        for block in self.blocks:
            tokens = block(tokens)
            outs.append(tokens)
        outs[-1] = self.norm(outs[-1])
        return outs


class FPNHead(nn.Module):
    """Simple feature pyramid + FPN + conv head: 4 token maps -> (B, 1, 4g, 4g) logits."""

    def __init__(self, embed_dim: int, fpn_dim: int) -> None:
        super().__init__()
        d, f = embed_dim, fpn_dim
        self.lateral = nn.ModuleList(nn.Conv2d(d, f, 1) for _ in range(4))
        # Resampling of the four taps to strides p/4, p/2, p and 2p.
        self.resample = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(f, f, 2, stride=2), group_norm(f), nn.GELU(),
                          nn.ConvTranspose2d(f, f, 2, stride=2)),
            nn.ConvTranspose2d(f, f, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2),
        ])
        self.smooth = nn.ModuleList(nn.Sequential(nn.Conv2d(f, f, 3, padding=1), group_norm(f),
                                                  nn.GELU()) for _ in range(4))
        self.out = nn.Sequential(nn.Conv2d(f, f, 3, padding=1), group_norm(f), nn.GELU(),
                                 nn.Conv2d(f, 1, 1))

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """``maps``: four (B, D, g, g) token maps, finest level first."""
        levels = [res(lat(m)) for m, lat, res in zip(maps, self.lateral, self.resample)]
        top = self.smooth[3](levels[3])
        for i in (2, 1, 0):  # top-down: coarse context added to finer levels
            up = F.interpolate(top, size=levels[i].shape[-2:], mode="nearest")
            top = self.smooth[i](levels[i] + up)
        return self.out(top)


class StudentOutput(NamedTuple):
    """``logits``: (B, 1, 4g, 4g) mask logits in the padded input frame.
    ``hidden``: (B, D, g, g) final (normalised) encoder hidden states."""

    logits: torch.Tensor
    hidden: torch.Tensor


class ViTFPNStudent(nn.Module):
    """ViT encoder + FPN head. ``forward(x)`` -> (B, 1, 4g, 4g) logits (g = S/p).

    Args:
        config: a :class:`StudentConfig`, a dict of its keys (``preset`` allowed) or None
            (the ``vit-tiny`` preset).
    """

    def __init__(self, config: StudentConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        if config is None:
            config = StudentConfig.from_dict({"preset": "vit-tiny"})
        elif isinstance(config, dict):
            config = StudentConfig.from_dict(config)
        self.config = config
        self.encoder = ViTEncoder(config)
        self.head = FPNHead(config.embed_dim, config.fpn_dim)

    def _to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        g = self.config.grid
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, g, g)

    def forward_all(self, x: torch.Tensor) -> StudentOutput:
        """Logits and final hidden states of (B, 3, S, S) normalised padded inputs."""
        if tuple(x.shape[-2:]) != (self.config.img_size,) * 2:
            raise ValueError(f"expected (B, 3, {self.config.img_size}, {self.config.img_size})"
                             f" input, got {tuple(x.shape)}")
        hidden = self.encoder(x)
        maps = [self._to_map(hidden[i]) for i in self.config.tap_indices]
        return StudentOutput(self.head(maps), self._to_map(hidden[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x).logits


class HiddenAdapter(nn.Module):
    """1x1 conv from the student's hidden width D to the teacher's embedding width C.

    Used only for the encoder-level KD (seed 002 eq. 5) and dropped from the saved student.
    (B, D, g, g) -> (B, C, g, g); a different teacher grid is matched by bilinear resizing.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(student_dim, teacher_dim, 1)

    def forward(self, hidden: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.proj(hidden)
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
