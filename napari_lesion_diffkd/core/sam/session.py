"""An interactive prompt session over a SAM: encode an image once, then decode each prompt.

``set_image`` runs the image encoder (the slow part: ~8 s for ViT-B on a 2-core CPU, ~10 ms
for ``lesion-sam-tiny``) and keeps the embedding in a small LRU cache keyed by the caller's
key (e.g. ``(layer_name, slice_index)``) or by the image's content. ``predict`` then runs
only the prompt encoder and the mask decoder.

All prompt coordinates are in the **SAM image frame** of the image given to ``set_image``:
points (N, 2) ``(x, y)``, boxes (4,) XYXY, pixel ``[y, x]`` at integer coordinates (use
``coords.py`` to convert napari data). Results come back in the same frame: the mask is
(Y, X) bool, exactly the image's shape, for gray or RGB images of any aspect ratio.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_lesion_diffkd.core.sam.architectures import low_res_size
from napari_lesion_diffkd.core.sam.coords import (
    box_region,
    xy_to_input_frame,
    xyxy_to_input_frame,
)
from napari_lesion_diffkd.core.sam.inputs import image_to_input, mask_to_prompt_logits
from napari_lesion_diffkd.core.sam.sam_bundle import LoadedSam


#: Logit cap outside a box prompt's region (probability below 5e-5).
OUTSIDE_BOX_LOGIT = -10.0


@dataclass(frozen=True)
class ImageEmbedding:
    """A cached encoder output.

    Attributes:
        features: (1, C, h, w) float32 image embedding.
        input_hw: (H', W') size of the resized image inside the padded S x S input.
        image_hw: (Y, X) size of the original image.
        flipped_features: (1, C, h, w) embedding of the left-right mirrored image when the
            session uses the test-time flip, else None.
    """

    features: torch.Tensor
    input_hw: tuple[int, int]
    image_hw: tuple[int, int]
    flipped_features: torch.Tensor | None = None


@dataclass(frozen=True)
class PromptResult:
    """The answer to one prompt.

    Attributes:
        mask: (Y, X) bool, image frame.
        score: the decoder's predicted IoU of ``mask`` (float).
        low_res_logits: (L, L) float32 logits of ``mask`` in the padded model-input frame
            (256 x 256 for official SAMs, 64 x 64 for ``lesion-sam-tiny``); pass it back as
            ``mask_logits`` to refine with more clicks.
        scores: (M,) float32 predicted IoUs of all candidate masks (M = 3 when multimask).
        logits: (Y, X) float32 full-resolution logits when asked for, else None.
        seconds: wall time of the decoder call (prompt -> mask), embedding excluded.
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray
    scores: np.ndarray
    logits: np.ndarray | None = None
    seconds: float = 0.0


def content_key(image: np.ndarray) -> str:
    """A cache key from an image's bytes, shape and dtype (BLAKE2b, 16 bytes)."""
    arr = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(str((arr.shape, arr.dtype.str)).encode())
    h.update(arr.data)
    return h.hexdigest()


class EmbeddingCache:
    """The image-embedding cache both prompt sessions share (torch here, ONNX Runtime in
    ``core.onnx.sam_session``): the least recently used embeddings are dropped first, and
    the current one is what ``predict`` decodes. Needs ``self.sam`` for the sizes."""

    sam: nn.Module

    def _init_cache(self, cache_size: int) -> None:
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[Hashable, ImageEmbedding] = OrderedDict()
        self._current: ImageEmbedding | None = None
        self.encode_count = 0  # encoder runs so far (tests and timing reports)
        self.last_encode_seconds = 0.0

    @property
    def img_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    @property
    def low_res_hw(self) -> tuple[int, int]:
        return low_res_size(self.sam)

    @property
    def current(self) -> ImageEmbedding:
        if self._current is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._current

    def clear_cache(self) -> None:
        self._cache.clear()
        self._current = None

    def _use_cached(self, key: Hashable) -> bool:
        """Make the cached embedding of ``key`` current; False when it is not cached."""
        if key not in self._cache:
            return False
        self._cache.move_to_end(key)
        self._current = self._cache[key]
        return True

    def _keep(self, key: Hashable, emb: ImageEmbedding) -> None:
        """Cache ``emb`` under ``key`` (dropping the oldest) and make it current."""
        self._cache[key] = emb
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self._current = emb


class PromptSession(EmbeddingCache):
    """Prompting a SAM with points, boxes and mask prompts on cached image embeddings.

    Args:
        model: a ``segment_anything`` ``Sam`` or a :class:`LoadedSam`.
        device: where to run ("cpu", "cuda", ...); the model is moved there.
        cache_size: embeddings kept (least recently used dropped first).
        test_time_flip: also encode the left-right mirrored image and average the two
            answers' logits for prompts without ``mask_logits`` (twice the encoding time, and
            two decoder calls per prompt). None: the bundle's ``test_time_flip`` config key
            (on for ``lesion-sam-tiny``, whose encoder costs tens of ms), else off.
    """

    def __init__(self, model: nn.Module | LoadedSam, device: str | torch.device = "cpu",
                 cache_size: int = 4, test_time_flip: bool | None = None) -> None:
        if test_time_flip is None:
            config = model.config if isinstance(model, LoadedSam) else {}
            test_time_flip = bool(config.get("test_time_flip", False))
        self.test_time_flip = bool(test_time_flip)
        sam = model.model if isinstance(model, LoadedSam) else model
        self.device = torch.device(device)
        self.sam = sam.to(self.device).eval()
        self._init_cache(cache_size)

    @torch.no_grad()
    def set_image(self, image: np.ndarray, key: Hashable | None = None) -> Hashable:
        """Make ``image`` the current image, encoding it unless its key is cached.

        Args:
            image: (Y, X) gray or (Y, X, 3) RGB, any dtype (see ``inputs.to_uint8_rgb``).
            key: cache key; default: a hash of the image content.

        Returns:
            The key used.
        """
        image = np.asarray(image)
        key = content_key(image) if key is None else key
        if self._use_cached(key):
            return key
        start = time.perf_counter()
        features, input_hw = self._encode(image)
        flipped = self._encode(image[:, ::-1])[0] if self.test_time_flip else None
        self.last_encode_seconds = time.perf_counter() - start
        self.encode_count += 1
        emb = ImageEmbedding(features, input_hw, (int(image.shape[0]), int(image.shape[1])),
                             flipped)
        self._keep(key, emb)
        return key

    def _encode(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        tensor, input_hw = image_to_input(np.ascontiguousarray(image), self.img_size)
        tensor = tensor.to(self.device, self.sam.pixel_mean.dtype)
        return self.sam.image_encoder(self.sam.preprocess(tensor)), input_hw

    def _decode(self, features: torch.Tensor, points, boxes, dense,
                multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(low-res logits (1, M, L, L), predicted IoUs (1, M)) for one embedding."""
        sparse, dense_emb = self.sam.prompt_encoder(points=points, boxes=boxes, masks=dense)
        return self.sam.mask_decoder(
            image_embeddings=features,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense_emb,
            multimask_output=multimask,
        )

    def _prompt_tensors(self, emb: ImageEmbedding, points_xy, point_labels, box_xyxy, mask,
                        mask_logits):
        """Prompts in the model-input frame: (points, boxes, dense) tensors or None each."""
        dev = self.device
        points = None
        if points_xy is not None and len(points_xy):
            xy = xy_to_input_frame(np.asarray(points_xy, dtype=np.float64).reshape(-1, 2),
                                   emb.image_hw, self.img_size)
            labels = (np.ones(len(xy)) if point_labels is None
                      else np.asarray(point_labels).reshape(-1))
            if len(labels) != len(xy):
                raise ValueError(f"{len(xy)} points but {len(labels)} labels")
            points = (torch.as_tensor(xy, dtype=torch.float32, device=dev)[None],
                      torch.as_tensor(labels, dtype=torch.int64, device=dev)[None])
        boxes = None
        if box_xyxy is not None:
            box = xyxy_to_input_frame(np.asarray(box_xyxy, dtype=np.float64).reshape(4),
                                      emb.image_hw, self.img_size)
            boxes = torch.as_tensor(box, dtype=torch.float32, device=dev)[None]
        if mask_logits is None and mask is not None:
            if tuple(np.asarray(mask).shape) != emb.image_hw:
                raise ValueError(f"mask shape {np.asarray(mask).shape} != image {emb.image_hw}")
            mask_logits = mask_to_prompt_logits(np.asarray(mask), self.img_size, self.low_res_hw)
        dense = None
        if mask_logits is not None:
            lr = np.asarray(mask_logits, dtype=np.float32)
            lr = lr.reshape(lr.shape[-2:])
            if lr.shape != self.low_res_hw:
                raise ValueError(f"mask_logits must be {self.low_res_hw}, got {lr.shape}")
            dense = torch.as_tensor(lr, device=dev)[None, None]
        return points, boxes, dense

    @torch.no_grad()
    def predict(
        self,
        points_xy: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box_xyxy: np.ndarray | None = None,
        mask_logits: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        multimask: bool | None = None,
        return_logits: bool = False,
        clip_to_box: bool = True,
    ) -> PromptResult:
        """Decode one prompt on the current image.

        Args:
            points_xy: (N, 2) image-frame ``(x, y)``. point_labels: (N,) 1 = lesion
                (positive), 0 = background (negative); default all positive.
            box_xyxy: (4,) image-frame XYXY box.
            mask_logits: (L, L) low-resolution logits (e.g. a previous result's).
            mask: (Y, X) image-frame binary mask, turned into logits by its signed distance
                (ignored when ``mask_logits`` is given).
            multimask: ask for 3 candidates and keep the best-scored one. Default: only for
                a single point with no box and no mask, the ambiguous case it exists for.
            return_logits: also return full-resolution logits.
            clip_to_box: with a box prompt, no mask pixel outside the box (widened to any
                positive click outside it; ``coords.box_region``) and logits there capped
                at :data:`OUTSIDE_BOX_LOGIT`. The decoder's 64 x 64 (tiny) or 256 x 256 output
                bleeds past low-contrast borders, and the box is the user's statement of where
                the lesion is: on lesion-sam-tiny's validation images this raises box Dice by
                0.014 on BUS-BRA and 0.03 on CT (docs/benchmarks.md). ``low_res_logits`` stay
                unclipped (they feed the next refinement).

        With the session's test-time flip and no ``mask_logits``, the logits (and the
        candidates' scores) are the mean of the image's and the mirrored image's answers.

        Returns:
            :class:`PromptResult` (mask in the image frame).
        """
        emb = self.current
        start = time.perf_counter()
        points, boxes, dense = self._prompt_tensors(emb, points_xy, point_labels, box_xyxy,
                                                    mask, mask_logits)
        if points is None and boxes is None and dense is None:
            raise ValueError("empty prompt: give points, a box or a mask")
        if multimask is None:
            multimask = points is not None and points[0].shape[1] == 1 and boxes is None \
                and dense is None
        low_res, iou = self._decode(emb.features, points, boxes, dense, bool(multimask))
        flip = emb.flipped_features is not None and mask_logits is None
        if flip:
            # The same prompts in the mirrored image's frame (pixel x -> X - 1 - x).
            last_x = emb.image_hw[1] - 1
            f_points = f_box = f_mask = None
            if points_xy is not None and len(points_xy):
                f_points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2).copy()
                f_points[:, 0] = last_x - f_points[:, 0]
            if box_xyxy is not None:
                b = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
                f_box = np.array([last_x - b[2], b[1], last_x - b[0], b[3]])
            if mask is not None:
                f_mask = np.asarray(mask)[:, ::-1]
            f_low, f_iou = self._decode(emb.flipped_features, *self._prompt_tensors(
                emb, f_points, point_labels, f_box, f_mask, None), bool(multimask))
            iou = (iou + f_iou) / 2
        best = int(torch.argmax(iou[0]))
        chosen = low_res[:, best:best + 1]
        full = self.sam.postprocess_masks(chosen, emb.input_hw, emb.image_hw)[0, 0]
        if flip:
            f_full = self.sam.postprocess_masks(f_low[:, best:best + 1], emb.input_hw,
                                                emb.image_hw)[0, 0]
            full = (full + f_full.flip(-1)) / 2
        mask_out = (full > self.sam.mask_threshold).cpu().numpy()
        logits = full.float().cpu().numpy() if return_logits else None
        if clip_to_box and box_xyxy is not None:
            positive = None
            if points is not None:  # its labels were checked and defaulted above
                labels = points[1][0].cpu().numpy()
                positive = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)[labels > 0]
            region = box_region(box_xyxy, emb.image_hw, positive)
            mask_out &= region
            if logits is not None:
                logits = np.where(region, logits, np.minimum(logits, OUTSIDE_BOX_LOGIT))
        seconds = time.perf_counter() - start
        return PromptResult(
            mask=mask_out,
            score=float(iou[0, best]),
            low_res_logits=chosen[0, 0].float().cpu().numpy(),
            scores=iou[0].float().cpu().numpy(),
            logits=logits,
            seconds=seconds,
        )
