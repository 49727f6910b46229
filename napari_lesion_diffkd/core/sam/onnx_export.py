"""Export a SAM's prompt encoder + mask decoder to ONNX (the image encoder stays in torch).

The exported graph follows ``segment_anything``'s own ONNX wrapper (``SamOnnxModel``):
prompts arrive as one point list in which box corners are points with labels 2 and 3 and a
padding point has label -1, the mask prompt comes with a ``has_mask_input`` flag, and the
graph returns the chosen mask's logits at the original image size. Two differences:

* **crop-size fix**: the stock wrapper crops the padded 1024 x 1024 mask with
  ``int(prepadded_size[i])``, which the tracer freezes to the dummy input's size, so
  full-size masks are wrong for every aspect ratio other than the dummy's (stack-notes).
  Here the crop slices with the tensor itself, so the bound stays dynamic in the graph;
* **mask choice**: a ``multimask`` input (1.0 / 0.0) picks the best-scored of the three
  multimask outputs or the single-mask output, exactly as ``PromptSession.predict`` does,
  instead of inferring it from the number of points;
* **channel LayerNorm as 1 x 1 convolutions** (:class:`ConvLayerNorm2d`, on a copy of the
  decoder): ``segment_anything``'s ``LayerNorm2d`` traces to ``ReduceMean`` over axis 1,
  which ONNX Runtime runs slowly on a (1, 64, 128, 128) tensor (two of them: 7 of the
  decoder's 84 ms at 1 thread, ``docs/medsam-lite.md``); a 1 x 1 convolution with weights
  1/C is the same mean and costs well under a millisecond.

Exported with the TorchScript exporter (``dynamo=False``; the dynamo exporter needs
``onnxscript`` and fails on the same crop), opset 17.

Inputs (float32 unless said): ``image_embeddings`` (1, C, h, w); ``point_coords`` (1, N, 2)
model-input-frame (x, y); ``point_labels`` (1, N); ``mask_input`` (1, 1, L, L);
``has_mask_input`` (1,); ``multimask`` (1,); ``orig_im_size`` (2,) = (Y, X).
Outputs: ``masks`` (1, 1, Y, X) logits; ``iou_predictions`` (1, 1); ``low_res_masks``
(1, 1, L, L).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.sam.architectures import low_res_size
from napari_lesion_diffkd.core.sam.coords import xy_to_input_frame, xyxy_to_input_frame

INPUT_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input",
               "has_mask_input", "multimask", "orig_im_size")
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")
OPSET = 17
#: Bumped when the exported SAM graphs change (2: channel LayerNorms as 1 x 1 convolutions),
#: so that ``core.onnx.cache`` does not reuse files exported by an older version.
SAM_GRAPH_VERSION = 2


class ConvLayerNorm2d(nn.Module):
    """``segment_anything``'s ``LayerNorm2d`` (normalise over the channels of (N, C, H, W))
    with the two channel means as 1 x 1 convolutions, so that the exported graph has
    ``Conv`` instead of the slow axis-1 ``ReduceMean``. Same maths; float32 results differ
    from the original by summation order only (~1e-7 relative)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        c = int(norm.weight.shape[0])
        self.eps = float(norm.eps)
        self.weight = nn.Parameter(norm.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(norm.bias.detach().clone(), requires_grad=False)
        self.register_buffer("mean_kernel", torch.full((1, c, 1, 1), 1.0 / c), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = F.conv2d(x, self.mean_kernel)
        d = x - u
        s = F.conv2d(d * d, self.mean_kernel)
        x = d / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def with_conv_layer_norms(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` in which every ``LayerNorm2d`` is a :class:`ConvLayerNorm2d`
    (the original, shared with the torch session, is left untouched)."""
    module = copy.deepcopy(module)
    for name, child in list(module.named_modules()):
        if type(child).__name__ != "LayerNorm2d" or not name:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, ConvLayerNorm2d(child))
    return module


class SamDecoderOnnx(nn.Module):
    """Traceable prompt encoder + mask decoder + mask post-processing of a ``Sam``."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = with_conv_layer_norms(sam.prompt_encoder)
        self.mask_decoder = with_conv_layer_norms(sam.mask_decoder)
        self.img_size = int(sam.image_encoder.img_size)

    def _sparse(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        # +0.5: the pixel centre, as PromptEncoder._embed_points/_embed_boxes do.
        emb = pe.pe_layer._pe_encoding((coords + 0.5) / self.img_size)
        labels = labels.unsqueeze(-1)
        is_pad = (labels == -1).to(emb.dtype)
        emb = emb * (1 - is_pad) + pe.not_a_point_embed.weight * is_pad
        for i in range(pe.num_point_embeddings):  # 0/1 clicks, 2/3 box corners
            emb = emb + pe.point_embeddings[i].weight * (labels == i).to(emb.dtype)
        return emb

    def _dense(self, mask_input: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask * pe.mask_downscaling(mask_input) + (1 - has_mask) * no_mask

    def _postprocess(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear",
                              align_corners=False)
        size = orig_im_size.to(torch.float32)
        pre = torch.floor(size * (self.img_size / torch.max(size)) + 0.5).to(torch.int64)
        # The fix: slice with the tensors (dynamic in the graph), never int(...) (frozen).
        masks = masks[..., : pre[0], : pre[1]]
        out = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(out[0], out[1]), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor, mask_input: torch.Tensor,
                has_mask_input: torch.Tensor, multimask: torch.Tensor,
                orig_im_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sparse = self._sparse(point_coords, point_labels)
        dense = self._dense(mask_input, has_mask_input)
        masks, iou = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        # multimask = 1: token 0 is pushed far down, the best of tokens 1..M wins;
        # multimask = 0: token 0 (the single-mask output) is pushed far up and wins.
        first = (1000.0 * (1.0 - 2.0 * multimask)).reshape(1, 1).expand(iou.shape[0], 1)
        push = torch.cat([first, torch.zeros_like(iou[:, 1:])], dim=1)
        best = torch.argmax(iou + push, dim=1)
        rows = torch.arange(masks.shape[0])
        low = masks[rows, best].unsqueeze(1)
        score = iou[rows, best].unsqueeze(1)
        return self._postprocess(low, orig_im_size), score, low


def prompt_arrays(image_hw: tuple[int, int], img_size: int,
                  points_xy: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                  box_xyxy: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image-frame prompts -> the graph's ``point_coords`` (1, N, 2) and ``point_labels``
    (1, N) float32, in the order SAM's prompt encoder uses: clicks, then box corners (labels
    2, 3) or, without a box, one padding point (label -1)."""
    coords: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    if points_xy is not None and len(points_xy):
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        coords.append(xy_to_input_frame(pts, image_hw, img_size))
        labels.append(np.ones(len(pts)) if point_labels is None
                      else np.asarray(point_labels, dtype=np.float64).reshape(-1))
    if box_xyxy is not None:
        box = xyxy_to_input_frame(np.asarray(box_xyxy, dtype=np.float64).reshape(4),
                                  image_hw, img_size)
        coords.append(box.reshape(2, 2))
        labels.append(np.array([2.0, 3.0]))
    else:
        coords.append(np.zeros((1, 2)))
        labels.append(np.array([-1.0]))
    return (np.concatenate(coords)[None].astype(np.float32),
            np.concatenate(labels)[None].astype(np.float32))


def example_inputs(sam: nn.Module, image_hw: tuple[int, int] = (300, 400),
                   num_points: int = 2) -> tuple[torch.Tensor, ...]:
    """Dummy inputs of the right shapes (used for tracing)."""
    c = sam.prompt_encoder.embed_dim
    h, w = sam.prompt_encoder.image_embedding_size
    lh, lw = low_res_size(sam)
    return (
        torch.randn(1, c, h, w),
        torch.randint(0, int(sam.image_encoder.img_size), (1, num_points, 2)).float(),
        torch.randint(-1, 4, (1, num_points)).float(),
        torch.randn(1, 1, lh, lw),
        torch.tensor([1.0]),
        torch.tensor([0.0]),
        torch.tensor(image_hw, dtype=torch.float32),
    )


def export_decoder_onnx(sam: nn.Module, path: str | Path, opset: int = OPSET) -> Path:
    """Write the decoder graph to ``path`` (the number of points is a dynamic axis).

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = SamDecoderOnnx(sam).eval()
    dynamic = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    with warnings.catch_warnings():
        # Tracer warnings about Python bools / tensor-to-int in segment_anything's modules
        # concern branches that do not depend on the inputs' values.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example_inputs(sam), str(path), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    return path


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for a SAM graph.

    All graph optimisations (``ORT_ENABLE_ALL``: constant folding, LayerNorm / GELU /
    MatMul+Add fusions, NCHWc convolutions), sequential execution with one inter-op thread
    (the graphs are chains; a parallel executor only adds scheduling), the default memory
    arena. ``threads``: intra-op threads (None: ONNX Runtime's default, one per core).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxDecoder:
    """Runs an exported decoder with onnxruntime (CPU) on image-frame prompts.

    Args:
        path: the ``.onnx`` file. threads: intra-op threads (default onnxruntime's).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.session = ort_session(path, threads)

    def run(self, embedding: np.ndarray, image_hw: tuple[int, int], img_size: int,
            low_res_hw: tuple[int, int], points_xy: np.ndarray | None = None,
            point_labels: np.ndarray | None = None, box_xyxy: np.ndarray | None = None,
            mask_logits: np.ndarray | None = None,
            multimask: bool = False) -> tuple[np.ndarray, float, np.ndarray]:
        """Returns full-size logits (Y, X) float32, score, low-res logits (L, L)."""
        coords, labels = prompt_arrays(image_hw, img_size, points_xy, point_labels, box_xyxy)
        has_mask = mask_logits is not None
        mask = (np.asarray(mask_logits, dtype=np.float32).reshape(1, 1, *low_res_hw)
                if has_mask else np.zeros((1, 1, *low_res_hw), dtype=np.float32))
        feeds = {
            "image_embeddings": np.asarray(embedding, dtype=np.float32),
            "point_coords": coords, "point_labels": labels, "mask_input": mask,
            "has_mask_input": np.array([float(has_mask)], dtype=np.float32),
            "multimask": np.array([float(multimask)], dtype=np.float32),
            "orig_im_size": np.array(image_hw, dtype=np.float32),
        }
        masks, score, low = self.session.run(list(OUTPUT_NAMES), feeds)
        return masks[0, 0], float(score[0, 0]), low[0, 0]
