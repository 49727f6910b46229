"""A prompt session that runs a SAM's encoder and decoder with ONNX Runtime (CPU).

Lives in ``core.onnx`` (it uses the ONNX cache; ``core.sam`` must not import ``core.onnx``).
Same contract as ``core.sam.session.PromptSession`` (``set_image`` / ``predict`` /
``encode_count`` / ``last_encode_seconds``), so the correction panel, ``evaluate_image``
and ``predict_prompts.segment_with_prompts`` take either. Prompts are in the SAM image
frame: points (N, 2) ``(x, y)``, boxes (4,) XYXY; masks come back (Y, X) bool.

* encoder: ``<stem>.encoder.onnx`` (``graphs.SamEncoderGraph``) on the model's own
  preprocessing, done in torch by the loaded model's ``preprocess`` (ImageNet mean/std for
  the official SAMs and ``lesion-sam-tiny``, min-max to [0, 1] for ``medsam-lite``);
* decoder: ``<stem>.decoder.onnx`` (``core.sam.onnx_export.SamDecoderOnnx``, the crop-size
  fix), through ``core.sam.onnx_export.OnnxDecoder``;
* precision: ``from_loaded`` / ``load_onnx_correction_backend`` open the int8 pair
  (``sam_quant.py``) for the SAMs whose int8 box Dice was measured within 0.005 of float32
  (``sam_quant.DEFAULT_PRECISION``: ``medsam-lite``) and float32 otherwise; pass
  ``precision="fp32"`` for the reference graphs.

No test-time flip (one pass). The encoder run can be cancelled from another thread through
a ``core.sam.prefetch.CancelToken`` (``RunOptions.terminate``).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_lesion_diffkd.core.onnx.cache import cached_sam_onnx
from napari_lesion_diffkd.core.onnx.export import read_metadata
from napari_lesion_diffkd.core.onnx.sam_quant import check_precision, default_precision
from napari_lesion_diffkd.core.sam.coords import box_region
from napari_lesion_diffkd.core.sam.inputs import image_to_input, mask_to_prompt_logits
from napari_lesion_diffkd.core.sam.onnx_export import OnnxDecoder, ort_session
from napari_lesion_diffkd.core.sam.prefetch import CancelToken, EncodeCancelled
from napari_lesion_diffkd.core.sam.session import (
    OUTSIDE_BOX_LOGIT,
    EmbeddingCache,
    ImageEmbedding,
    PromptResult,
    content_key,
)


class OnnxPromptSession(EmbeddingCache):
    """Prompting with ONNX Runtime on cached image embeddings.

    Args:
        sam: the torch ``Sam`` (its ``preprocess``, sizes and threshold are used; its
            networks are not run).
        encoder_path, decoder_path: the exported files (``onnx.cache.cached_sam_onnx``).
        threads: ONNX Runtime intra-op threads (None: its default).
        cache_size: embeddings kept (least recently used dropped first).
    """

    test_time_flip = False

    def __init__(self, sam: torch.nn.Module, encoder_path: str | Path,
                 decoder_path: str | Path, threads: int | None = None,
                 cache_size: int = 4) -> None:
        self.sam = sam.eval()
        self.encoder = ort_session(encoder_path, threads)
        self.decoder = OnnxDecoder(decoder_path, threads=threads)
        self.precision = str(read_metadata(encoder_path).get("precision", "fp32"))
        self._init_cache(cache_size)

    @classmethod
    def from_loaded(cls, loaded: Any, threads: int | None = None, cache_size: int = 4,
                    precision: str | None = None) -> OnnxPromptSession:
        """Export (once, into the ONNX cache) and open a :class:`LoadedSam`.

        Args:
            precision: ``fp32`` | ``int8``; None: ``sam_quant.default_precision`` of the
                SAM's name (int8 for ``medsam-lite``).
        """
        precision = default_precision(loaded.name) if precision is None else precision
        enc, dec = cached_sam_onnx(loaded, precision=check_precision(precision))
        return cls(loaded.model.to("cpu"), enc, dec, threads=threads, cache_size=cache_size)

    def is_cached(self, key: Hashable) -> bool:
        # Only this session has it: the correction backend takes it as the sign of a session
        # that encodes in one cancellable ONNX Runtime call.
        return key in self._cache

    @torch.no_grad()
    def set_image(self, image: np.ndarray, key: Hashable | None = None,
                  cancel: CancelToken | None = None) -> Hashable:
        """Make ``image`` ((Y, X) or (Y, X, 3)) current, encoding it unless cached.

        Raises:
            EncodeCancelled: ``cancel`` was set before or during the encoder run.
        """
        import onnxruntime as ort

        image = np.asarray(image)
        key = content_key(image) if key is None else key
        if self._use_cached(key):
            return key
        start = time.perf_counter()
        tensor, input_hw = image_to_input(np.ascontiguousarray(image), self.img_size)
        padded = self.sam.preprocess(tensor.to(self.sam.pixel_mean.dtype)).numpy()
        options = ort.RunOptions()
        if cancel is not None:
            cancel.on_cancel(lambda: setattr(options, "terminate", True))
            cancel.raise_if_cancelled()
        try:
            (features,) = self.encoder.run(["image_embeddings"], {"image": padded},
                                           run_options=options)
        except Exception:
            if cancel is not None and cancel.cancelled:
                raise EncodeCancelled("image encoding cancelled") from None
            raise
        self.last_encode_seconds = time.perf_counter() - start
        self.encode_count += 1
        emb = ImageEmbedding(torch.from_numpy(features), input_hw,
                             (int(image.shape[0]), int(image.shape[1])))
        self._keep(key, emb)
        return key

    def predict(self, points_xy: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, box_xyxy: np.ndarray | None = None,
                mask_logits: np.ndarray | None = None, mask: np.ndarray | None = None,
                multimask: bool | None = None, return_logits: bool = False,
                clip_to_box: bool = True) -> PromptResult:
        """Decode one prompt on the current image (arguments as ``PromptSession.predict``).

        ``scores`` holds only the chosen mask's predicted IoU (the graph returns one).
        """
        emb = self.current
        start = time.perf_counter()
        has_points = points_xy is not None and len(points_xy)
        if not has_points and box_xyxy is None and mask is None and mask_logits is None:
            raise ValueError("empty prompt: give points, a box or a mask")
        if has_points:
            points_xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
            point_labels = (np.ones(len(points_xy)) if point_labels is None
                            else np.asarray(point_labels).reshape(-1))
            if len(point_labels) != len(points_xy):
                raise ValueError(f"{len(points_xy)} points but {len(point_labels)} labels")
        if mask_logits is None and mask is not None:
            if tuple(np.asarray(mask).shape) != emb.image_hw:
                raise ValueError(f"mask shape {np.asarray(mask).shape} != image {emb.image_hw}")
            mask_logits = mask_to_prompt_logits(np.asarray(mask), self.img_size, self.low_res_hw)
        if multimask is None:
            multimask = bool(has_points) and len(points_xy) == 1 and box_xyxy is None \
                and mask_logits is None
        logits, score, low = self.decoder.run(
            emb.features.numpy(), emb.image_hw, self.img_size, self.low_res_hw,
            points_xy if has_points else None, point_labels if has_points else None,
            None if box_xyxy is None else np.asarray(box_xyxy, dtype=np.float64).reshape(4),
            mask_logits, multimask=bool(multimask))
        mask_out = logits > float(self.sam.mask_threshold)
        if clip_to_box and box_xyxy is not None:
            positive = points_xy[np.asarray(point_labels) > 0] if has_points else None
            region = box_region(box_xyxy, emb.image_hw, positive)
            mask_out &= region
            if return_logits:  # two full-size float passes: 20 ms on a 12-Mpx image
                logits = np.where(region, logits, np.minimum(logits, OUTSIDE_BOX_LOGIT))
        return PromptResult(mask=mask_out, score=score, low_res_logits=np.asarray(low),
                            scores=np.array([score], dtype=np.float32),
                            logits=np.asarray(logits, np.float32) if return_logits else None,
                            seconds=time.perf_counter() - start)


def load_onnx_correction_backend(name_or_path: Any = None, threads: int | None = None,
                                 precision: str | None = None, **kwargs: Any) -> Any:
    """A ``core.sam.correction_backend.SamCorrection`` answering with ONNX Runtime (CPU).

    Args:
        name_or_path: as ``load_correction_backend`` (None: ``default_sam()``).
        threads: ONNX Runtime intra-op threads.
        precision: ``fp32`` | ``int8`` | None (the SAM's default, int8 for ``medsam-lite``).
        kwargs: passed to ``SamCorrection``.
    """
    from napari_lesion_diffkd.core.sam.correction_backend import SamCorrection, default_sam
    from napari_lesion_diffkd.core.sam.loading import load_sam

    loaded = load_sam(default_sam() if name_or_path is None else name_or_path, device="cpu")
    session = OnnxPromptSession.from_loaded(loaded, threads=threads,
                                            cache_size=int(kwargs.pop("cache_size", 4)),
                                            precision=precision)
    return SamCorrection(loaded, device="cpu", session=session, **kwargs)
