"""Run exported graphs with ONNX Runtime behind the interfaces the torch code already uses.

* :class:`OnnxDenoiser` looks like a denoiser network to the samplers
  (``core/diffusion``): ``encode_condition(image)`` and ``__call__(x_t, t, cond)`` with the
  same shapes and head layout (``output_targets``). The samplers stay the single
  implementation of the one-step / DDIM / DDPM / staged loops, so with the same seeds they draw
  the same noise (CPU ``torch.Generator`` per sample) and the results differ from torch only
  by the graph's floating-point error. The image travels to the graph untouched (a
  :class:`ImageCondition` is not a tensor, so ``repeat_batch`` leaves it alone) and is encoded
  once per call inside the graph, then repeated for the K samples.
* :func:`one_step_numpy`: the students' one-step sampler in plain numpy around the graph,
  for callers that want no sampler object (same output as the torch sampler for the same
  noise).
* :class:`OnnxSegmenter`: ``image -> logits`` for the plain baselines.
* :class:`OnnxSam`: the SAM encoder + decoder files, with the same pre-processing as
  ``PromptSession`` (``core/sam/inputs.py``) and the decoder driver of ``core/sam/onnx_export``.

All arrays cross into ONNX Runtime as float32 numpy arrays on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_lesion_diffkd.core.onnx.export import read_metadata


def make_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads; None uses torch's current setting, so that both backends
            run with the same parallelism unless asked otherwise.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


@dataclass(frozen=True)
class ImageCondition:
    """The prepared image (N, C, S, S) float32 in [-1, 1], passed through the samplers as is."""

    image: np.ndarray


class OnnxDenoiser:
    """An exported denoiser graph behind the sampler's network contract.

    Args:
        path: the denoiser ``.onnx`` file (``export.export_bundle``).
        threads: intra-op threads (see :func:`make_session`).

    Attributes:
        output_targets: the heads of the output channels, in order (from the file's metadata).
        calls: graph calls so far.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.session = make_session(self.path, threads)
        targets = self.metadata.get("output_targets")
        self.output_targets = tuple(targets) if targets else None
        self.calls = 0

    def encode_condition(self, image: torch.Tensor) -> ImageCondition:
        """Keep the image; the graph encodes it (once per image per call)."""
        return ImageCondition(_numpy(image))

    def run(self, image: np.ndarray, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        """One graph call on numpy arrays: image (N, C, S, S), x_t (N * K, 1, S, S), t (N * K,)
        -> x0 (N * K, heads, S, S) float32."""
        self.calls += 1
        (out,) = self.session.run(["x0"], {"image": image.astype(np.float32, copy=False),
                                           "x_t": x_t.astype(np.float32, copy=False),
                                           "t": t.astype(np.float32, copy=False)})
        return np.asarray(out)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        image = cond.image if isinstance(cond, ImageCondition) else _numpy(cond)
        if x_t.shape[0] % image.shape[0]:
            raise ValueError(f"x_t batch {x_t.shape[0]} is not a multiple of the "
                             f"{image.shape[0]} images")
        return torch.from_numpy(self.run(image, _numpy(x_t), _numpy(t))).to(x_t.device)


def one_step_numpy(denoiser: OnnxDenoiser, image: np.ndarray, noise: np.ndarray,
                   num_timesteps: int, spread_inflation: float = 1.0) -> np.ndarray:
    """The one-step sampler of the x0 students in plain numpy (no torch in the loop).

    What ``core/diffusion/one_step.OneStepSampler`` does for an x0 network: one call at
    t = T - 1 on pure noise, the x0 head clamped to [-1, 1], then each image's K samples
    spread around their mean by ``spread_inflation`` (``sampling_common.inflate_spread``;
    pass the bundle's ``config["sampler"].get("spread_inflation", 1.0)``). Pass the noise of
    ``sampling_common.draw_noise`` (per-sample CPU ``torch.Generator`` seeds) to reproduce a
    torch run exactly; any standard normal noise gives valid samples.

    Args:
        denoiser: the student's graph. image: (N, C, S, S) float32 in [-1, 1].
        noise: (N * K, 1, S, S) float32, image-major. num_timesteps: T of the schedule.
        spread_inflation: > 0; 1 leaves the samples as the network gives them.

    Returns:
        (N, K, 1, S, S) float32 x0 samples in [-1, 1] (> 0 is lesion).
    """
    heads = denoiser.output_targets or ("x0",)
    if "x0" not in heads:
        raise ValueError(f"one_step_numpy needs an x0 head; this graph has {heads}")
    n = image.shape[0]
    t = np.full((noise.shape[0],), float(num_timesteps - 1), np.float32)
    out = denoiser.run(image, noise, t)
    i = heads.index("x0")
    x0 = np.clip(out[:, i : i + noise.shape[1]], -1.0, 1.0)
    x0 = x0.reshape(n, noise.shape[0] // n, *x0.shape[1:])
    if not spread_inflation > 0:
        raise ValueError(f"spread_inflation must be > 0, got {spread_inflation}")
    if spread_inflation == 1.0 or x0.shape[1] == 1:
        return x0
    mean = x0.mean(axis=1, keepdims=True)
    return np.clip(mean + np.float32(spread_inflation) * (x0 - mean), -1.0, 1.0).astype(
        np.float32)


class OnnxSegmenter:
    """An exported segmenter graph: ``(N, C, S, S) image -> (N, 1, S, S) logits``."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.session = make_session(self.path, threads)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(["logits"], {"image": _numpy(image)})
        return torch.from_numpy(out).to(image.device)


def onnx_network(bundle: Any, threads: int | None = None, folder: str | Path | None = None
                 ) -> OnnxDenoiser | OnnxSegmenter:
    """The ONNX Runtime stand-in of ``bundle.network`` (exported into the cache on first use).

    The session is kept in ``bundle.extra`` per thread count, so a widget or a folder of
    images pays for the export and the session once.
    """
    from napari_lesion_diffkd.core.onnx.cache import cached_bundle_onnx
    from napari_lesion_diffkd.core.onnx.export import KIND_SEGMENTER, graph_kind

    threads = int(threads or torch.get_num_threads())
    key = f"onnx-network-{threads}"
    if key not in bundle.extra:
        path = cached_bundle_onnx(bundle, folder)
        cls = OnnxSegmenter if graph_kind(bundle.config) == KIND_SEGMENTER else OnnxDenoiser
        bundle.extra[key] = cls(path, threads)
    net: OnnxDenoiser | OnnxSegmenter = bundle.extra[key]
    return net


class OnnxSam:
    """A SAM's exported encoder + decoder: embed an image once, decode prompts.

    Args:
        encoder_path, decoder_path: the two files of ``export.export_sam``.
        threads: intra-op threads of both sessions.
    """

    def __init__(self, encoder_path: str | Path, decoder_path: str | Path,
                 threads: int | None = None) -> None:
        from napari_lesion_diffkd.core.sam.onnx_export import OnnxDecoder

        self.metadata = read_metadata(encoder_path)
        self.encoder = make_session(encoder_path, threads)
        self.decoder = OnnxDecoder(decoder_path, threads=int(threads or torch.get_num_threads()))
        self.img_size = int(self.metadata["img_size"])
        self.low_res_hw = tuple(int(v) for v in self.metadata["low_res_size"])
        self.pixel_mean = np.asarray(self.metadata["pixel_mean"], np.float32).reshape(1, 3, 1, 1)
        self.pixel_std = np.asarray(self.metadata["pixel_std"], np.float32).reshape(1, 3, 1, 1)

    def encoder_input(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """(Y, X[, 3]) image -> normalised, zero-padded (1, 3, S, S) float32 and (H', W').

        The same steps as ``Sam.preprocess`` after ``inputs.image_to_input``.
        """
        from napari_lesion_diffkd.core.sam.inputs import image_to_input

        tensor, input_hw = image_to_input(image, self.img_size)
        x = (tensor.numpy() - self.pixel_mean) / self.pixel_std
        padded = np.zeros((1, 3, self.img_size, self.img_size), np.float32)
        padded[:, :, : x.shape[2], : x.shape[3]] = x
        return padded, input_hw

    def embed(self, image: np.ndarray) -> np.ndarray:
        """(1, C, h, w) float32 image embedding of an image-frame image."""
        padded, _ = self.encoder_input(image)
        (emb,) = self.encoder.run(["image_embeddings"], {"image": padded})
        return np.asarray(emb)

    def predict(self, embedding: np.ndarray, image_hw: tuple[int, int], **prompt: Any
                ) -> tuple[np.ndarray, float, np.ndarray]:
        """Decode one prompt (``points_xy``, ``point_labels``, ``box_xyxy``, ``mask_logits``,
        ``multimask``; image-frame (x, y)) -> full logits (Y, X), score, low-res logits."""
        return self.decoder.run(embedding, image_hw, self.img_size, self.low_res_hw, **prompt)
