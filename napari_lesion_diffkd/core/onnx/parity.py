"""Torch vs ONNX Runtime on the same inputs: the numbers ``export-onnx --check``, the tests
and ``benchmarks/bench_onnx.py`` report.

All differences are the largest absolute difference of raw network outputs (x0 on the
[-1, 1] mask scale for denoisers, logits for segmenters and the SAM decoder) over every
element.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def denoiser_outputs(bundle: Any, onnx_net: Any, image: torch.Tensor, num_samples: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs of one call at t = T - 1 on the same noise, torch and ONNX Runtime.

    Args:
        bundle: the torch :class:`ModelBundle`. onnx_net: its ``OnnxDenoiser``.
        image: (N, C, S, S) float32 prepared images.
        num_samples: K; the noise is drawn per sample as the samplers do.

    Returns:
        ``(torch, onnx)`` arrays (N * K, heads, S, S) float32.
    """
    from napari_lesion_diffkd.core.diffusion.sampling_common import (
        draw_noise,
        make_generators,
        prepare_condition,
    )
    from napari_lesion_diffkd.core.diffusion.sampling_common import sample_seeds

    n, _, h, w = image.shape
    x_t = draw_noise(make_generators(sample_seeds(seed, num_samples)), (n, 1, h, w),
                     torch.device("cpu"))
    t = torch.full((x_t.shape[0],), float(bundle.schedule.num_timesteps - 1))
    with torch.no_grad():
        ref = bundle.network(x_t, t, prepare_condition(bundle.network, image, num_samples))
    out = onnx_net(x_t, t, onnx_net.encode_condition(image))
    return ref.float().numpy(), out.numpy()


def random_input_parity(name_or_path: str, files: Sequence[str | Path]) -> float:
    """Largest |torch - ONNX Runtime| of an exported model on a seeded random input
    (denoisers: N = 1 image, K = 4 samples; SAM: encoder embedding and a box prompt)."""
    from napari_lesion_diffkd.core.onnx.driver import OnnxDenoiser, OnnxSam, OnnxSegmenter
    from napari_lesion_diffkd.core.onnx.export import KIND_SEGMENTER, is_sam_model, read_metadata

    gen = torch.Generator().manual_seed(0)
    if is_sam_model(name_or_path):
        from napari_lesion_diffkd.core.sam.loading import load_sam
        from napari_lesion_diffkd.core.sam.session import PromptSession

        image = (torch.rand((300, 400, 3), generator=gen) * 255).to(torch.uint8).numpy()
        session = PromptSession(load_sam(name_or_path), test_time_flip=False)  # ORT: one pass
        session.set_image(image)
        runtime = OnnxSam(*files[:2])  # the float32 pair (an int8 pair may follow)
        emb = runtime.embed(image)
        box = np.array([40.0, 30.0, 300.0, 250.0])
        ref = session.predict(box_xyxy=box, multimask=False, return_logits=True,
                             clip_to_box=False)  # the raw decoder output
        full, _, _ = runtime.predict(emb, (300, 400), box_xyxy=box)
        return float(max(np.abs(emb - session.current.features.numpy()).max(),
                         np.abs(full - ref.logits).max()))
    from napari_lesion_diffkd.core.registry import load_model

    bundle = load_model(name_or_path, device="cpu")
    s, c = bundle.input_size, bundle.image_channels
    image = torch.rand((1, c, s, s), generator=gen) * 2 - 1
    if read_metadata(files[0]).get("kind") == KIND_SEGMENTER:
        with torch.no_grad():
            ref = bundle.network(image).numpy()
        return float(np.abs(OnnxSegmenter(files[0])(image).numpy() - ref).max())
    a, b = denoiser_outputs(bundle, OnnxDenoiser(files[0]), image, 4)
    return float(np.abs(a - b).max())
