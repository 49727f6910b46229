"""ONNX export and ONNX Runtime inference for the project's models (no Qt, no napari).

* ``graphs.py``: traceable wrappers (denoiser with in-graph K repetition, segmenter, SAM
  image encoder);
* ``export.py``: bundle / SAM -> ``.onnx`` files with metadata (``export_model``);
* ``cache.py``: exported files cached under ``$LESION_DIFFKD_CACHE/onnx`` keyed by the weights'
  SHA-256, exported on first use;
* ``driver.py``: ONNX Runtime sessions behind the torch interfaces (the samplers drive an
  :class:`~napari_lesion_diffkd.core.onnx.driver.OnnxDenoiser` exactly like a network);
* ``sam_session.py``: a SAM prompt session (encoder + decoder) on ONNX Runtime, for the
  correction panel;
* ``sam_quant.py``: the int8 variant of a SAM's files (dynamic int8 MatMuls), the ONNX
  Runtime default for ``medsam-lite``.

``core.segmenter.segment_image(..., backend="onnxruntime")`` is the user-facing entry.
"""

from __future__ import annotations

BACKENDS = ("torch", "onnxruntime")
