"""Exported ONNX files cached per bundle, so ``--backend onnxruntime`` needs no separate step.

Location: ``<cache>/onnx/`` with ``<cache>`` = ``$LESION_DIFFKD_CACHE`` or
``~/.cache/napari-lesion-diffkd`` (``core/cache_paths.cache_root``).
File name: ``<bundle name>-<first 16 hex of the weights' SHA-256>-opset<N>.onnx`` (SAMs:
``...-g<graph version>.encoder.onnx`` / ``...decoder.onnx``, and the int8 pair
``...encoder.int8.onnx`` / ``...decoder.int8.onnx`` of ``sam_quant.py`` when asked for; the
graph version changes when the exported SAM graph does, so an older file is not reused).
The hash keys the file to the exact weights: a re-trained bundle under the same name gets a
new file, and an old file is never reused for new weights. Writes are atomic (``export.py``), so two processes exporting the same bundle at
once both end with a complete file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from napari_lesion_diffkd.core.cache_paths import cache_root
from napari_lesion_diffkd.core.onnx.export import OPSET, export_bundle, export_sam, sam_paths


def onnx_cache_dir() -> Path:
    """``<cache>/onnx`` (not created here)."""
    return cache_root() / "onnx"


def weights_sha256(path: str | Path | None) -> str | None:
    """Hex SHA-256 of a bundle's ``model.safetensors`` (folder given) or of a weights file;
    None when there is no file (a model built in memory)."""
    if path is None:
        return None
    from napari_lesion_diffkd.core.bundle import WEIGHTS_NAME

    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_NAME
    if not p.is_file():
        return None
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _key(name: str, sha: str | None) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return f"{safe}-{(sha or 'unsaved')[:16]}-opset{OPSET}"


def cached_bundle_onnx(bundle: Any, folder: str | Path | None = None) -> Path:
    """The cached ONNX file of a loaded :class:`ModelBundle`, exported on first use.

    A bundle without a weights file on disk (built in memory) is exported to a file keyed
    ``unsaved`` that is rewritten on every call.
    """
    sha = weights_sha256(bundle.path)
    path = Path(folder or onnx_cache_dir()) / f"{_key(bundle.name, sha)}.onnx"
    if sha is None or not path.is_file():
        export_bundle(bundle, path, weights_sha256=sha)
    return path


def cached_sam_onnx(loaded: Any, folder: str | Path | None = None,
                    precision: str = "fp32") -> tuple[Path, Path]:
    """The cached ``(encoder, decoder)`` files of a :class:`LoadedSam`, exported on first use.

    Args:
        precision: ``fp32`` (the exported graphs) or ``int8`` (``sam_quant.quantize_sam`` of
            them, written next to the float32 pair, which is kept as the reference).
    """
    from napari_lesion_diffkd.core.onnx.export import read_metadata
    from napari_lesion_diffkd.core.onnx.sam_quant import (
        QUANT_RECIPE,
        check_precision,
        int8_paths,
        quantize_sam,
    )
    from napari_lesion_diffkd.core.sam.onnx_export import SAM_GRAPH_VERSION

    check_precision(precision)
    sha = weights_sha256(loaded.path)
    out = (Path(folder or onnx_cache_dir())
           / f"{_key(loaded.name, sha)}-g{SAM_GRAPH_VERSION}.onnx")
    enc, dec = sam_paths(out)
    fresh = sha is None or not (enc.is_file() and dec.is_file())
    if fresh:
        export_sam(loaded, out, weights_sha256=sha)
    if precision == "fp32":
        return enc, dec
    enc8, dec8 = int8_paths(enc, dec)
    # Re-quantised when missing or made by another recipe (a different node selection).
    if fresh or not all(p.is_file() and read_metadata(p).get("quantization") == QUANT_RECIPE
                        for p in (enc8, dec8)):
        quantize_sam(enc, dec)
    return enc8, dec8
