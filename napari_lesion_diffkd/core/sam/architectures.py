"""SAM architectures: the official ViT-B/L/H models and the project's small ``lesion-sam-tiny``.

All models are ``segment_anything.modeling.Sam`` instances built from ``segment_anything``'s
own classes, so every tool that works on SAM (``SamPredictor``, the ONNX decoder export, LoRA
on ``Attention.qkv``) works on all of them. Nothing here loads weights: see ``loading.py``.

Frames: a SAM image encoder takes a (B, 3, S, S) float tensor, the image resized so that its
longest side is S (``img_size``), normalised with ``pixel_mean``/``pixel_std`` (0-255 scale)
and zero-padded at the bottom/right. Its embedding is (B, C, S/p, S/p) (p = patch size); the
mask decoder's low-resolution logits are (B, M, 4·S/p, 4·S/p) in that same padded frame:
256 x 256 for the official models (S = 1024, p = 16), 64 x 64 for ``lesion-sam-tiny``
(S = 256, p = 16).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import nn

from napari_lesion_diffkd.core.sam.torchvision_shim import import_segment_anything

#: Official SAM image-encoder variants (``segment_anything.sam_model_registry`` keys).
OFFICIAL_ARCHS: tuple[str, ...] = ("vit_b", "vit_l", "vit_h")
TINY_ARCH = "tiny"


@dataclass(frozen=True)
class TinySamConfig:
    """Constructor settings of a small SAM (``lesion-sam-tiny`` by default).

    The image encoder is SAM's ``ImageEncoderViT`` (windowed attention with a few global
    blocks, relative positions, a conv neck to ``prompt_embed_dim`` channels); prompt encoder
    and mask decoder are SAM's own classes with a narrower transformer. Defaults: about 3.0M
    parameters, 256 px input, 16 x 16 embedding, 64 x 64 low-resolution logits; on a 2-core
    CPU about 10 ms to encode an image and a few ms per prompt.
    """

    img_size: int = 256
    patch_size: int = 16
    encoder_embed_dim: int = 192
    encoder_depth: int = 4
    encoder_num_heads: int = 3
    encoder_global_attn_indexes: tuple[int, ...] = (1, 3)
    window_size: int = 8
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 128
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 512
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 128
    num_multimask_outputs: int = 3
    pixel_mean: tuple[float, ...] = field(default=(123.675, 116.28, 103.53))
    pixel_std: tuple[float, ...] = field(default=(58.395, 57.12, 57.375))

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size "
                             f"{self.patch_size}")
        if any(not 0 <= i < self.encoder_depth for i in self.encoder_global_attn_indexes):
            raise ValueError(f"global_attn_indexes {self.encoder_global_attn_indexes} outside "
                             f"0..{self.encoder_depth - 1}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TinySamConfig:
        """Build from a JSON/YAML dict; unknown keys are an error that names them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown tiny SAM config keys {unknown}; known: {sorted(known)}")
        data = dict(data)
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def build_official_sam(arch: str) -> nn.Module:
    """An official SAM architecture with random weights, in eval mode.

    Args:
        arch: ``"vit_b"`` (93.7M parameters), ``"vit_l"`` or ``"vit_h"``. MedSAM is a
            ``vit_b``.
    """
    if arch not in OFFICIAL_ARCHS:
        raise ValueError(f"unknown SAM architecture {arch!r}; known: {OFFICIAL_ARCHS}")
    sa = import_segment_anything()
    # checkpoint=None: weights are loaded by loading.py, never through segment_anything's
    # own torch.load call.
    return sa.sam_model_registry[arch](checkpoint=None).eval()


def build_tiny_sam(config: TinySamConfig | dict[str, Any] | None = None) -> nn.Module:
    """A small SAM from ``segment_anything``'s classes, random weights, eval mode."""
    if config is None:
        config = TinySamConfig()
    elif isinstance(config, dict):
        config = TinySamConfig.from_dict(config)
    import_segment_anything()
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    grid = config.img_size // config.patch_size
    encoder = ImageEncoderViT(
        img_size=config.img_size,
        patch_size=config.patch_size,
        embed_dim=config.encoder_embed_dim,
        depth=config.encoder_depth,
        num_heads=config.encoder_num_heads,
        mlp_ratio=config.mlp_ratio,
        out_chans=config.prompt_embed_dim,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=config.window_size,
        global_attn_indexes=tuple(config.encoder_global_attn_indexes),
    )
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.img_size, config.img_size),
        mask_in_chans=config.mask_in_chans,
    )
    decoder = MaskDecoder(
        transformer_dim=config.prompt_embed_dim,
        transformer=TwoWayTransformer(
            depth=config.decoder_depth,
            embedding_dim=config.prompt_embed_dim,
            mlp_dim=config.decoder_mlp_dim,
            num_heads=config.decoder_num_heads,
        ),
        num_multimask_outputs=config.num_multimask_outputs,
        iou_head_depth=3,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    sam = Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder,
              pixel_mean=list(config.pixel_mean), pixel_std=list(config.pixel_std))
    return sam.eval()


def build_sam(arch: str, tiny_config: TinySamConfig | dict[str, Any] | None = None) -> nn.Module:
    """``build_official_sam(arch)`` or, for ``arch == "tiny"``, ``build_tiny_sam``."""
    if arch == TINY_ARCH:
        return build_tiny_sam(tiny_config)
    return build_official_sam(arch)


def low_res_size(sam: nn.Module) -> tuple[int, int]:
    """(H, W) of the decoder's low-resolution logits (= the prompt encoder's mask input)."""
    return tuple(int(v) for v in sam.prompt_encoder.mask_input_size)  # type: ignore[return-value]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
