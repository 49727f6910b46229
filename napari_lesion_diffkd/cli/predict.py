"""``lesion-diffkd predict``: segment images with a registered model or a checkpoint.

Contract (relied on by later issues and outside checks): for each input ``<stem>.<ext>`` write
``DIR/<stem>.png`` (consensus, uint8 {0,255}, input height and width), ``DIR/<stem>_uncertainty.png``
(uint8, 0 = certain) and, with K > 1, ``DIR/<stem>_samples.tif`` (K, H, W uint8 {0,255}); print
one JSON line per image; skip bad inputs by name; exit non-zero if any input failed.

Hardening (issue 13, docs/troubleshooting.md "Refused and repaired inputs"): inputs that
would write the same files get ``<stem>-2``, ``-3`` ... in input order (the JSON line's
``output_stem``); NaN/Inf pixels are filled with the image's finite minimum and reported in
``warnings``; JSON lines are strict (non-finite -> null); images over the pixel limit
(``LESION_DIFFKD_MAX_PIXELS``) are refused unread; ``--samples`` 1..256 and ``--steps``
1..1000; a broken model bundle or an argument out of bounds is exit code 2.

A SAM model (``medsam-lite``, ``lesion-sam-tiny``; the default SAM when ``--model`` is left
out and a prompt is given) takes ``--prompt-box x0,y0,x1,y1`` and/or repeated
``--prompt-point x,y,label`` in image pixels (x = column, y = row) and writes the same files
(K = 1; uncertainty = entropy of SAM's logits): ``core/predict_prompts.py``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment images; writes consensus, uncertainty, samples")
    p.add_argument("--model", default=None,
                   help="registered model name or checkpoint path; with --prompt-box / "
                        "--prompt-point it may be left out: the default SAM (medsam-lite where "
                        "installed, else lesion-sam-tiny; $LESION_DIFFKD_SAM overrides)")
    p.add_argument("--input", required=True, nargs="+", help="image files or folders")
    p.add_argument("--output", required=True, help="output folder (created if missing)")
    p.add_argument("--samples", type=int, default=None, help="K masks per image (model default)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    p.add_argument("--sampler", default=None, help="ddim | ddpm | one-step | staged")
    p.add_argument("--fusion", choices=("staple", "mean", "majority"), default="staple")
    p.add_argument("--seed", type=int, default=0, help="seed; same seed, same output")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="torch, or onnxruntime (CPU; the model is exported to ONNX on first "
                        "use and cached under $LESION_DIFFKD_CACHE/onnx)")
    p.add_argument("--prompt-box", default=None, metavar="x0,y0,x1,y1",
                   help="SAM models: a box in image pixels (x = column, y = row)")
    p.add_argument("--prompt-point", action="append", default=[], metavar="x,y,label",
                   help="SAM models: a click in image pixels, label 1 lesion / 0 background "
                        "(repeatable); see core/predict_prompts.py for the outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from napari_lesion_diffkd.core.predict_prompts import (
        is_sam_model,
        predict_files_with_prompts,
    )

    if args.model is None:
        if args.prompt_box is None and not args.prompt_point:
            print("error: predict: --model is required (or give --prompt-box / --prompt-point "
                  "to use the default SAM)", file=sys.stderr)
            return 2
        from napari_lesion_diffkd.core.sam.correction_backend import default_sam

        args.model = default_sam()
    if args.prompt_box is not None or args.prompt_point or is_sam_model(args.model):
        return predict_files_with_prompts(args.model, args.input, args.output,
                                          box=args.prompt_box, points=args.prompt_point,
                                          device=args.device)
    from napari_lesion_diffkd.core.predict_files import predict_files

    return predict_files(
        model=args.model,
        inputs=args.input,
        output_dir=args.output,
        num_samples=args.samples,
        num_steps=args.steps,
        sampler=args.sampler,
        fusion=args.fusion,
        seed=args.seed,
        device=args.device,
        backend=getattr(args, "backend", "torch"),
    )
