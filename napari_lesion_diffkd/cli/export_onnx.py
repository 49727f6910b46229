"""``lesion-diffkd export-onnx``: write a model as ONNX file(s) for ONNX Runtime.

* diffusion bundles (students, teachers): one denoiser graph ``(image, x_t, t) -> x0`` with a
  dynamic batch (N images x K samples in one call); the sampler loop stays outside
  (``core/onnx/driver.py`` runs it with the same seeds as torch);
* plain segmentation bundles (``*-unet``): one graph ``image -> logits``;
* SAMs (``lesion-sam-tiny``, ``sam_vit_b``, a checkpoint file): ``--out sam.onnx`` writes
  ``sam.encoder.onnx`` and ``sam.decoder.onnx``; with ``--precision int8`` (the default for
  ``medsam-lite``) also ``sam.encoder.int8.onnx`` and ``sam.decoder.int8.onnx``
  (``core/onnx/sam_quant.py``).

Prints one JSON line (files, kind, and with ``--check`` the largest torch/ONNX Runtime
difference on a random input). Exit 2 with a message for an unknown model, an unwritable
output path or a model that cannot be exported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="export a model (student, UNet, SAM) to ONNX")
    p.add_argument("--model", required=True,
                   help="registered model name, bundle folder, or SAM checkpoint name/file")
    p.add_argument("--out", required=True,
                   help="output .onnx file (a SAM writes OUT.encoder.onnx + OUT.decoder.onnx)")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None,
                   help="SAMs: int8 also writes the dynamically quantised pair "
                        "(default: int8 for medsam-lite, fp32 for the others)")
    p.add_argument("--check", action="store_true",
                   help="also run torch and ONNX Runtime on a random input and report the "
                        "largest difference")
    p.set_defaults(func=run)


def _writable(out: Path) -> str | None:
    """Why ``out`` cannot be written, or None."""
    if out.is_dir():
        return f"{out} is a folder; give a file name such as {out / 'model.onnx'}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the folder {out.parent}: {exc.strerror or exc}"
    import os

    if not os.access(out.parent, os.W_OK):
        return f"the folder {out.parent} is not writable"
    return None


def run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.core.onnx.export import (
        OnnxExportError,
        export_model,
        read_metadata,
    )
    from napari_lesion_diffkd.core.sam.loading import SamCheckpointError

    out = Path(args.out)
    problem = _writable(out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        files = export_model(args.model, out, precision=args.precision)
    except (LookupError, BundleError, SamCheckpointError, OnnxExportError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    line = {"model": args.model, "files": [str(f) for f in files],
            "kind": [read_metadata(f).get("kind") for f in files],
            "bytes": [f.stat().st_size for f in files]}
    if args.check:
        from napari_lesion_diffkd.core.onnx.parity import random_input_parity

        line["max_abs_diff"] = random_input_parity(args.model, files)
    print(json.dumps(line), flush=True)
    return 0
