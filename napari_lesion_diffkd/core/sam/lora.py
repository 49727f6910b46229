"""LoRA adapters on the query and value projections of SAM's image-encoder attention.

Seed 002 (§3.3.1) fine-tunes SAM with LoRA on the query and value projections of every
transformer block of the image encoder, the rest frozen. In ``segment_anything`` those
projections are one fused ``nn.Linear(dim, 3·dim)`` per block (``Attention.qkv``), whose
output columns are ``[q (dim) | k (dim) | v (dim)]`` (heads are split *after* the q/k/v axis,
see ``Attention.forward``'s reshape to (B, N, 3, heads, head_dim)).

:class:`LoRAQKV` replaces that Linear and adds, for x of shape (..., dim_in)::

    q += (alpha / r) · B_q (A_q x)        A_q: (r, dim_in)  B_q: (dim_q, r)
    v += (alpha / r) · B_v (A_v x)        A_v: (r, dim_in)  B_v: (dim_v, r)

k is untouched. A is Kaiming-uniform initialised, B is zero, so a freshly adapted model
computes exactly what the base model computed. Added parameters per block:
``r·(dim_in + dim_q) + r·(dim_in + dim_v)`` = ``4·r·dim`` for SAM (dim_in = dim_q = dim_v =
dim). The base weight and bias keep their parameter names (``...attn.qkv.weight``/``bias``),
so official state dicts load into an adapted model unchanged.

Adapters are saved on their own (safetensors, a few hundred kB for ViT-B at r = 4) with
rank/alpha in the file's metadata, and can be merged into the base weight for export.

``medsam-lite``'s TinyViT encoder (``tiny_vit.WindowAttention``) has a fused qkv too, but laid
out *per head*: ``[q_0 | k_0 | v_0 | q_1 | k_1 | v_1 | ...]`` (each ``head_dim`` wide). There
the same adapters are used with ``heads`` = the block's head count: the q and v updates
(``dim`` wide each) are split into heads and interleaved into that layout, k still zero. Its
attention blocks are those of stages 1-3 (``image_encoder.layers[1:]``; stage 0 is MBConv);
10 blocks for LiteMedSAM, ``4·r·dim`` parameters each (dims 128, 128, 160 x 6, 320 x 2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.bundle import atomic_write_bytes

#: Name fragment of every adapter parameter (used to pick them out of a state dict).
LORA_KEY = "lora_"


class LoRAQKV(nn.Module):
    """A fused qkv ``nn.Linear`` with low-rank updates on its q and v thirds.

    Input (..., dim_in) float; output (..., 3·dim) float, the same layout as the Linear.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0,
                 heads: int | None = None) -> None:
        super().__init__()
        if base.out_features % 3:
            raise ValueError(f"qkv layer has {base.out_features} outputs, not a multiple of 3")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.dim = base.out_features // 3
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.rank
        # None: [q | k | v] blocks (segment_anything); H: per-head [q_h | k_h | v_h] (TinyViT).
        self.heads = None if heads is None else int(heads)
        if self.heads is not None and self.dim % self.heads:
            raise ValueError(f"qkv width {self.dim} is not a multiple of {self.heads} heads")
        # Same Parameter objects, same names: the base state-dict keys do not change.
        self.weight = base.weight
        self.bias = base.bias
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_q_a = nn.Parameter(torch.empty(rank, self.in_features, **like))
        self.lora_q_b = nn.Parameter(torch.zeros(self.dim, rank, **like))
        self.lora_v_a = nn.Parameter(torch.empty(rank, self.in_features, **like))
        self.lora_v_b = nn.Parameter(torch.zeros(self.dim, rank, **like))
        # A as in nn.Linear's default init; B = 0 keeps the initial output unchanged.
        nn.init.kaiming_uniform_(self.lora_q_a, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_v_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> torch.Tensor:
        """The (3·dim, dim_in) update ``scaling · [B_q A_q; 0; B_v A_v]`` to the base weight."""
        dq = (self.lora_q_b @ self.lora_q_a).t()  # (dim_in, dim): rows as outputs, below
        dv = (self.lora_v_b @ self.lora_v_a).t()
        return self.scaling * self._interleave(dq, dv).t()

    def _interleave(self, dq: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
        """(..., dim) q and v updates -> (..., 3·dim) in the layer's output layout."""
        zeros = torch.zeros_like(dq)
        if self.heads is None:
            return torch.cat([dq, zeros, dv], dim=-1)
        lead = dq.shape[:-1]
        split = (*lead, self.heads, self.dim // self.heads)
        return torch.cat([dq.reshape(split), zeros.reshape(split), dv.reshape(split)],
                         dim=-1).reshape(*lead, 3 * self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        h = self.dropout(x)
        dq = F.linear(F.linear(h, self.lora_q_a), self.lora_q_b) * self.scaling
        dv = F.linear(F.linear(h, self.lora_v_a), self.lora_v_b) * self.scaling
        return out + self._interleave(dq, dv)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight includes the update (for export/inference)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight + self.delta_weight())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin


def added_parameters_per_block(dim_in: int, dim_q: int, dim_v: int, rank: int) -> int:
    """Adapter parameters one block gets: ``r·(dim_in + dim_q) + r·(dim_in + dim_v)``."""
    return rank * (dim_in + dim_q) + rank * (dim_in + dim_v)


def _attention_blocks(sam: nn.Module) -> list[nn.Module]:
    """The attention modules (each with a fused ``qkv``) of the image encoder: the ViT's
    ``blocks``, or TinyViT's attention stages (``layers[1:]``)."""
    encoder = sam.image_encoder
    if hasattr(encoder, "blocks"):
        return [block.attn for block in encoder.blocks]
    return [block.attn for layer in list(encoder.layers)[1:] for block in layer.blocks]


def _per_head_layout(attn: nn.Module) -> int | None:
    """TinyViT's head count (its qkv is laid out per head), None for segment_anything's."""
    from napari_lesion_diffkd.core.sam.tiny_vit import WindowAttention

    return int(attn.num_heads) if isinstance(attn, WindowAttention) else None


def apply_lora(sam: nn.Module, rank: int = 4, alpha: float | None = None,
               dropout: float = 0.0, freeze_base: bool = True) -> int:
    """Wrap every image-encoder block's ``attn.qkv`` in :class:`LoRAQKV`, in place.

    Args:
        sam: a ``segment_anything`` ``Sam`` (official, tiny, or ``medsam-lite``'s TinyViT).
        rank: r. alpha: scaling numerator (default r, i.e. scaling 1).
        dropout: dropout on the adapter input (0 = none).
        freeze_base: set ``requires_grad=False`` on every non-adapter parameter of ``sam``
            (the caller may unfreeze e.g. the mask decoder afterwards).

    Returns:
        The number of adapted blocks.
    """
    alpha = float(rank if alpha is None else alpha)
    count = 0
    for attn in _attention_blocks(sam):
        if isinstance(attn.qkv, LoRAQKV):
            raise ValueError("this model already has LoRA adapters")
        attn.qkv = LoRAQKV(attn.qkv, rank, alpha, dropout, heads=_per_head_layout(attn))
        count += 1
    if freeze_base:
        for name, p in sam.named_parameters():
            p.requires_grad_(LORA_KEY in name)
    return count


def has_lora(sam: nn.Module) -> bool:
    return any(isinstance(attn.qkv, LoRAQKV) for attn in _attention_blocks(sam))


def lora_settings(sam: nn.Module) -> dict[str, float] | None:
    """``{"rank": r, "alpha": alpha}`` of an adapted model, or None."""
    for attn in _attention_blocks(sam):
        if isinstance(attn.qkv, LoRAQKV):
            return {"rank": attn.qkv.rank, "alpha": attn.qkv.alpha}
    return None


def lora_state_dict(sam: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter tensors only, keyed as in ``sam.state_dict()``."""
    return {k: v for k, v in sam.state_dict().items() if LORA_KEY in k}


def save_lora(path: str | Path, sam: nn.Module,
              extra: dict[str, torch.Tensor] | None = None,
              metadata: dict[str, str] | None = None) -> Path:
    """Write the adapters (float32) to a safetensors file.

    Args:
        path: output ``.safetensors`` file.
        sam: an adapted model.
        extra: more tensors to store beside them (e.g. a fine-tuned mask decoder).
        metadata: extra string metadata (base model name, ...).
    """
    from safetensors.torch import save as save_tensors

    settings = lora_settings(sam)
    if settings is None:
        raise ValueError("the model has no LoRA adapters to save")
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in lora_state_dict(sam).items()}
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    meta = {"format": "pt", "lora": json.dumps(settings), **(metadata or {})}
    path = Path(path)
    atomic_write_bytes(path, save_tensors(tensors, metadata=meta))
    return path


def load_lora(path: str | Path, sam: nn.Module, freeze_base: bool = True) -> dict[str, str]:
    """Load adapters (and any extra tensors) saved by :func:`save_lora` into ``sam``.

    Adapters are added first when ``sam`` has none. Every adapter slot must be filled from
    the file (a missing one is an error, never silently zero).

    Returns:
        The file's metadata.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "lora" not in meta:
        raise ValueError(f"{path}: not a LoRA adapter file (no 'lora' metadata)")
    settings = json.loads(meta["lora"])
    if not has_lora(sam):
        apply_lora(sam, rank=int(settings["rank"]), alpha=float(settings["alpha"]),
                   freeze_base=freeze_base)
    elif lora_settings(sam) != settings:
        raise ValueError(f"{path}: adapters are {settings}, model has {lora_settings(sam)}")
    tensors = load_file(str(path))
    own = sam.state_dict()
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise ValueError(f"{path}: tensors not in the model: {unknown[:5]} ...")
    missing = sorted(set(lora_state_dict(sam)) - set(tensors))
    if missing:
        raise ValueError(f"{path}: adapter tensors missing: {missing[:5]} ...")
    sam.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
    return meta


def merge_lora(sam: nn.Module) -> int:
    """Fold every adapter into its base weight and restore plain ``nn.Linear`` layers.

    Returns:
        The number of merged blocks.
    """
    count = 0
    for attn in _attention_blocks(sam):
        if isinstance(attn.qkv, LoRAQKV):
            requires_grad = attn.qkv.weight.requires_grad
            attn.qkv = attn.qkv.merged()
            attn.qkv.requires_grad_(requires_grad)
            count += 1
    return count
