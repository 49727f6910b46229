"""TinyViT image encoder in LiteMedSAM's configuration, in plain torch (no timm).

Written for this project from the TinyViT design (Wu et al., ECCV 2022) as MobileSAM and
LiteMedSAM use it, so that LiteMedSAM's checkpoint loads without importing timm (which needs
torchvision, unavailable here). Parameter and buffer names follow the checkpoint's
``image_encoder.*`` keys exactly, so ``load_state_dict(strict=True)`` takes all of them.

Shapes for LiteMedSAM (img_size 256, embed dims 64/128/160/320, depths 2/2/6/2):

* input: (B, 3, 256, 256) float32, min-max normalised to [0, 1], zero-padded bottom/right
  (``medsam_lite.MedSamLite.preprocess``);
* ``patch_embed``: two 1 x 1 conv + BatchNorm (GELU between), stride 1: (B, 64, 256, 256)
  (LiteMedSAM keeps full resolution here, unlike MobileSAM's stride-4 stem);
* stage 0: MBConv blocks at 256 x 256, then a patch merge (stride 2) -> 128 x 128 tokens;
* stage 1: windowed attention (window 7) at 128 x 128, merge (stride 2) -> 64 x 64;
* stage 2: window 14 at 64 x 64, merge to 320 channels with stride 1 (the SAM variants
  keep 64 x 64 for the last stage);
* stage 3: window 7 at 64 x 64;
* ``neck``: 1 x 1 conv -> LayerNorm2d -> 3 x 3 conv -> LayerNorm2d: (B, 256, 64, 64), the
  image embedding SAM's mask decoder takes.

Token tensors are (B, L, C) with L = H * W in row-major (row, col) order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (children ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups,
                                       bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W) (eps 1e-6, as SAM's neck)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """(B, 3, S, S) -> (B, D, S, S): 1 x 1 ConvBN (D/2) -> GELU -> 1 x 1 ConvBN (D)."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2), nn.GELU(), ConvBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1 x 1 expand -> 3 x 3 depthwise -> 1 x 1 project, + input, GELU.

    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        return self.act(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Downsampling between stages: 1 x 1 ConvBN -> GELU -> 3 x 3 depthwise ConvBN (stride
    ``stride``) -> GELU -> 1 x 1 ConvBN. Takes (B, C, H, W) or (B, H*W, C) tokens at
    ``resolution``; returns (B, H'*W', C_out) tokens."""

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int,
                 stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.resolution
            x = x.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a (w, w) window with a learned bias per head and per
    absolute (|d_row|, |d_col|) offset between two tokens (LeViT-style).

    ``qkv`` is laid out per head as [q | k | v] (each ``head_dim`` wide), heads one after
    the other: the checkpoint's layout. (B', w*w, C) -> (B', w*w, C).
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        cells = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        index = []
        for a in cells:
            for b in cells:
                off = (abs(a[0] - b[0]), abs(a[1] - b[1]))
                # Offsets numbered in order of first appearance: the checkpoint's order.
                index.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        # Not in the checkpoint (derived from the window size), so not persistent.
        self.register_buffer("bias_index", torch.tensor(index, dtype=torch.long).view(
            len(cells), len(cells)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn + self.attention_biases[:, self.bias_index]
        out = attn.softmax(dim=-1) @ v  # (b, heads, n, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear on (..., C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (+ residual) -> 3 x 3 depthwise ConvBN -> MLP (+ residual).

    The token grid is zero-padded at the bottom/right to a multiple of the window before
    partitioning, and cropped back after (the padding tokens pass the attention's
    LayerNorm like any other token, as in the original). (B, H*W, C) -> (B, H*W, C).
    """

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int,
                 mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2,
                                 groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        win = self.window
        b, _, c = x.shape
        pad_b, pad_r = (win - h % win) % win, (win - w % win) % win
        grid = x.view(b, h, w, c)
        if pad_b or pad_r:
            grid = F.pad(grid, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // win, pw // win
        parts = grid.view(b, nh, win, nw, win, c).transpose(2, 3).reshape(
            b * nh * nw, win * win, c)
        parts = self.attn(parts)
        grid = parts.view(b, nh, nw, win, win, c).transpose(2, 3).reshape(b, ph, pw, c)
        return grid[:, :h, :w].reshape(b, h * w, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        x = x + self._windows(x)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w))
        x = x.reshape(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv ``blocks`` on (B, C, H, W), then a ``downsample`` to tokens."""

    def __init__(self, dim: int, out_dim: int, resolution: tuple[int, int], depth: int,
                 expand_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim, expand_ratio) for _ in range(depth)])
        self.downsample = PatchMerging(resolution, dim, out_dim, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT ``blocks`` on (B, H*W, C) tokens, then an optional
    ``downsample`` (stride 2, or 1 into the last stage)."""

    def __init__(self, dim: int, out_dim: int | None, resolution: tuple[int, int], depth: int,
                 num_heads: int, window: int, mlp_ratio: float, local_conv_size: int,
                 merge_stride: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            TinyViTBlock(dim, resolution, num_heads, window, mlp_ratio, local_conv_size)
            for _ in range(depth)])
        self.downsample = (None if out_dim is None
                           else PatchMerging(resolution, dim, out_dim, stride=merge_stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT image encoder for a SAM: (B, 3, S, S) -> (B, out_chans, S/4, S/4).

    Args:
        img_size: S, the square input size (256 for LiteMedSAM).
        embed_dims, depths, num_heads, window_sizes: per stage (4 stages).
        mlp_ratio: MLP width / dim. mbconv_expand_ratio: stage-0 expansion.
        local_conv_size: depthwise kernel between attention and MLP.
        out_chans: embedding channels of the neck (SAM's prompt embedding dim).

    Attributes:
        img_size: S (``PromptSession`` and the ONNX export read it).
    """

    def __init__(self, img_size: int = 256, in_chans: int = 3,
                 embed_dims: Sequence[int] = (64, 128, 160, 320),
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (2, 4, 5, 10),
                 window_sizes: Sequence[int] = (7, 7, 14, 7), mlp_ratio: float = 4.0,
                 mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3,
                 out_chans: int = 256) -> None:
        super().__init__()
        if not (len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes) == 4):
            raise ValueError("TinyViT needs 4 stages of embed_dims/depths/num_heads/windows")
        if img_size % 4:
            raise ValueError(f"img_size must be a multiple of 4, got {img_size}")
        self.img_size = int(img_size)
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        # Token grid per stage: S, S/2, S/4, S/4 (the merge into the last stage keeps S/4).
        sides = (img_size, img_size // 2, img_size // 4, img_size // 4)
        self.layers = nn.ModuleList([ConvStage(embed_dims[0], embed_dims[1],
                                               (sides[0], sides[0]), depths[0],
                                               mbconv_expand_ratio)])
        for i in range(1, 4):
            last = i == 3
            self.layers.append(AttentionStage(
                embed_dims[i], None if last else embed_dims[i + 1], (sides[i], sides[i]),
                depths[i], num_heads[i], window_sizes[i], mlp_ratio, local_conv_size,
                merge_stride=1 if i == 2 else 2))
        self.embed_side = sides[3]
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[3], out_chans, 1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float32 -> (B, out_chans, S/4, S/4) float32."""
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"TinyViT takes (B, C, {self.img_size}, {self.img_size}), "
                             f"got {tuple(x.shape)}")
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        side = self.embed_side
        return self.neck(x.reshape(b, side, side, c).permute(0, 3, 1, 2))
