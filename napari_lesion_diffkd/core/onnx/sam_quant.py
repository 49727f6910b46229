"""int8 variants of a SAM's exported encoder and decoder (ONNX Runtime dynamic quantisation).

What ``int8`` means here (``docs/medsam-lite.md`` has the measurements behind each choice):

* **dynamic** quantisation (``onnxruntime.quantization.quantize_dynamic``): weights stored as
  int8, activations quantised per call from their own min/max, so no calibration images are
  needed and nothing is fitted to a dataset;
* **MatMul only, per-channel int8 weights** (``QuantType.QInt8``, one scale per output
  column). Convolutions stay float32: ONNX Runtime's ``ConvInteger`` runs the TinyViT's
  convolutions about 7x slower than its float32 NCHWc kernels on this CPU, so quantising them
  costs time instead of saving it;
* **encoder**: the qkv, proj and fc1 MatMuls of the ten attention blocks (``ENCODER_NODES``;
  together with fc2 about half of the encoder's time at 1 thread). **fc2 stays float32**: its
  input is the GELU output, whose few large values stretch the per-tensor activation scale;
  quantising it as well was about 15% faster but moved 1.6% of a box mask's pixels on
  average (mask IoU vs float32 0.984, worst 0.962 on 10 BUS-BRA / DDTI validation images)
  instead of 0.7% (0.993, worst 0.986);
* **decoder**: only the ten projections that run on all 4096 image tokens
  (``DECODER_NODES``: k/v of the token-to-image attentions, q/out of the image-to-token
  ones). The MatMuls on the few prompt tokens cost almost nothing in float32, and quantising
  them as well moved about 0.4% of a mask's pixels instead of 0.08%.

File names: ``<stem>.encoder.int8.onnx`` / ``<stem>.decoder.int8.onnx`` next to the float32
pair (``int8_paths``); the files keep the float32 file's metadata plus
``"precision": "int8"`` and the quantisation recipe (``QUANT_RECIPE``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")

#: The precision the ONNX Runtime backend uses when none is asked for, per SAM name. Set from
#: ``benchmarks/bench_medsam.py`` (box Dice of int8 within 0.005 of float32 on PH2, BUS-BRA,
#: DDTI and CT, see ``docs/medsam-lite.md``); every other SAM stays float32.
DEFAULT_PRECISION: dict[str, str] = {"medsam-lite": "int8"}

#: The encoder MatMuls quantised (node names of the exported graph; fc2 excluded, see above).
ENCODER_NODES = re.compile(r"/blocks\.\d+/(attn/qkv|attn/proj|mlp/fc1)/MatMul$")
#: The decoder MatMuls that run on the 4096 image tokens (node names of the exported graph).
DECODER_NODES = re.compile(
    r"(cross_attn_token_to_image|final_attn_token_to_image)/(k_proj|v_proj)/MatMul$"
    r"|cross_attn_image_to_token/(q_proj|out_proj)/MatMul$")

QUANT_RECIPE = {"method": "quantize_dynamic", "op_types": ["MatMul"], "per_channel": True,
                "weight_type": "QInt8", "encoder_nodes": ENCODER_NODES.pattern,
                "decoder_nodes": DECODER_NODES.pattern}


def default_precision(name: str | None) -> str:
    """``int8`` for the SAMs listed in :data:`DEFAULT_PRECISION`, else ``fp32``."""
    return DEFAULT_PRECISION.get(str(name), "fp32")


def check_precision(precision: str) -> str:
    """``precision`` itself, or ValueError naming the valid ones."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


def int8_paths(encoder: str | Path, decoder: str | Path) -> tuple[Path, Path]:
    """``x.encoder.onnx`` -> ``x.encoder.int8.onnx`` (same for the decoder)."""
    def one(p: str | Path) -> Path:
        p = Path(p)
        stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
        return p.with_name(f"{stem}.int8.onnx")

    return one(encoder), one(decoder)


def _nodes(path: Path, pattern: re.Pattern[str], what: str) -> list[str]:
    """Names of the MatMuls of ``path`` that ``pattern`` selects (at least one)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = [n.name for n in graph.node if n.op_type == "MatMul" and pattern.search(n.name)]
    if not names:
        # A graph of another shape (or a renamed export) would silently stay float32.
        raise ValueError(f"{path.name}: no {what} MatMuls to quantise (is it a SAM export?)")
    return names


class _DropPreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence ``quantize_dynamic``'s advice to run ``quant_pre_process`` first.

    It is logged on the root logger, whose ``logging.warning`` would also install a stderr
    handler for good. The advice does not apply: pre-processing (symbolic shape inference
    and an optimisation pass) gave the same encoder outputs and speed, fails on the
    decoder's shapes, and writes temporary files into the working directory.
    """
    root = logging.getLogger()
    quiet, drop = logging.NullHandler(), _DropPreprocessAdvice()
    added = not root.handlers  # a handler present keeps logging.warning from basicConfig()
    if added:
        root.addHandler(quiet)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        if added:
            root.removeHandler(quiet)


def _quantize(src: Path, dst: Path, nodes: list[str] | None) -> Path:
    """Quantise ``src`` into ``dst`` atomically and tag the metadata."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from napari_lesion_diffkd.core.onnx.export import METADATA_KEY, _tmp_path, read_metadata

    meta = {**read_metadata(src), "precision": "int8", "quantization": QUANT_RECIPE}
    tmp = _tmp_path(dst)
    try:
        with _quiet_quantizer():
            quantize_dynamic(str(src), str(tmp), op_types_to_quantize=["MatMul"],
                             nodes_to_quantize=nodes, per_channel=True,
                             weight_type=QuantType.QInt8)
        proto = onnx.load(str(tmp))
        kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
        entry = proto.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = json.dumps(meta)
        onnx.save(proto, str(tmp))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def quantize_sam(encoder: str | Path, decoder: str | Path) -> tuple[Path, Path]:
    """Write the int8 pair next to a float32 pair (``export.export_sam``'s files).

    Args:
        encoder, decoder: the float32 ``.encoder.onnx`` / ``.decoder.onnx`` files.

    Returns:
        ``(encoder_int8, decoder_int8)`` paths (:func:`int8_paths`).

    Raises:
        ValueError: a graph has none of the MatMuls to quantise (not a SAM export).
    """
    encoder, decoder = Path(encoder), Path(decoder)
    enc8, dec8 = int8_paths(encoder, decoder)
    enc_nodes = _nodes(encoder, ENCODER_NODES, "attention-block")
    dec_nodes = _nodes(decoder, DECODER_NODES, "image-token")
    _quantize(encoder, enc8, enc_nodes)
    _quantize(decoder, dec8, dec_nodes)
    return enc8, dec8
