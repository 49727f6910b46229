"""Batch prediction over files: the engine behind ``lesion-diffkd predict``.

For each input ``<stem>.<ext>`` writes ``<out>/<stem>.png`` (consensus, uint8 {0, 255}),
``<out>/<stem>_uncertainty.png`` (uint8, 0 = certain, 255 = one bit of entropy) and, when
K > 1, ``<out>/<stem>_samples.tif`` (K, Y, X) uint8 {0, 255}, every file at the input's
(Y, X) size, also for a large image whose maps were computed at a working resolution
(``core.segmenter``; the JSON line then has ``working_shape``); prints one JSON line per image to
stdout. Bad inputs are reported on stderr by name and skipped; every file is written
atomically, so an interrupted run never leaves a half-written mask.

Output names are unique within a run: when two inputs would write the same file (``a/img.png``
and ``b/img.png``, ``img.png`` and ``img.jpg``, or ``x.png`` and ``x_uncertainty.png``), the
later input in command-line order gets ``<stem>-2`` (then ``-3`` ...), compared
case-insensitively for case-insensitive file systems (:func:`unique_output_stems`). The
JSON line's ``output_stem`` and ``outputs`` say which files belong to which input.

JSON lines are strict JSON (non-finite numbers are null, ``core/json_lines.py``); a line has
``"warnings"`` when something about the input was repaired, e.g. NaN pixels filled.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from napari_lesion_diffkd.core.config_bounds import check_sampling_args
from napari_lesion_diffkd.core.data.readers import (  # output_stem re-exported
    SUPPORTED_2D_SUFFIXES,
    output_stem,
    path_suffix,
)
from napari_lesion_diffkd.core.json_lines import json_line


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; a folder means every supported 2D image in it (sorted, not recursive)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(
                c for c in p.iterdir() if c.is_file() and path_suffix(c) in SUPPORTED_2D_SUFFIXES
            )
        else:
            paths.append(p)
    return paths


def prepare_run(output_dir: str | Path,
                inputs: Iterable[str | Path]) -> tuple[Path, list[Path]] | int:
    """Create the output folder and list the inputs, or say why not (on stderr).

    Returns:
        ``(output folder, input files)``, or the exit code to stop with: 2 when the folder
        cannot be created, 1 when no input image was found.
    """
    out_dir = Path(output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create output folder {out_dir}: {exc}", file=sys.stderr)
        return 2
    paths = expand_inputs(inputs)
    if not paths:
        print("error: no input images found", file=sys.stderr)
        return 1
    return out_dir, paths


#: Suffixes that :func:`write_outputs` appends to a stem: every name one input may write.
OUTPUT_SUFFIXES = (".png", "_uncertainty.png", "_samples.tif")


def unique_output_stems(paths: Sequence[Path]) -> list[str]:
    """One output stem per input, no two inputs writing the same file (deterministic).

    Inputs are taken in order; an input keeps :func:`output_stem` unless one of the files it
    would write (``OUTPUT_SUFFIXES``) is already claimed by an earlier input, in which case
    it gets ``<stem>-2``, ``<stem>-3`` ... (the first free one). Names are compared in
    lower case, so ``IMG.png`` and ``img.png`` also count as a clash.

    Returns:
        A list of stems, aligned with ``paths``.
    """
    taken: set[str] = set()
    stems: list[str] = []
    for path in paths:
        base = output_stem(path)
        stem, n = base, 1
        while any((stem + sfx).lower() in taken for sfx in OUTPUT_SUFFIXES):
            n += 1
            stem = f"{base}-{n}"
        taken.update((stem + sfx).lower() for sfx in OUTPUT_SUFFIXES)
        stems.append(stem)
    return stems


def write_outputs(out_dir: Path, stem: str, result) -> dict[str, str]:
    """Write consensus, uncertainty and (K > 1) samples for one image; returns their paths."""
    import tifffile

    from napari_lesion_diffkd.core.bundle import atomic_write_bytes
    from napari_lesion_diffkd.core.data.writers import write_mask_png

    paths = {"consensus": out_dir / f"{stem}.png",
             "uncertainty": out_dir / f"{stem}_uncertainty.png"}
    write_mask_png(paths["consensus"], result.consensus)
    unc = np.clip(np.rint(result.uncertainty * 255.0), 0, 255).astype(np.uint8)
    write_mask_png(paths["uncertainty"], unc, binary=False)
    if result.samples.shape[0] > 1:
        import io

        buf = io.BytesIO()
        # minisblack: K = 3 or 4 must not be mistaken for RGB(A) planes.
        # At the input's size, also for a large image (computed at a working shape).
        samples = result.full_samples() if hasattr(result, "full_samples") else result.samples
        tifffile.imwrite(buf, np.asarray(samples).astype(np.uint8) * 255, compression="zlib",
                         photometric="minisblack")
        paths["samples"] = out_dir / f"{stem}_samples.tif"
        atomic_write_bytes(paths["samples"], buf.getvalue())
    return {k: str(v) for k, v in paths.items()}


def predict_files(
    model: str,
    inputs: Sequence[str],
    output_dir: str,
    num_samples: int | None = None,
    num_steps: int | None = None,
    sampler: str | None = None,
    fusion: str = "staple",
    seed: int = 0,
    device: str = "auto",
    backend: str = "torch",
) -> int:
    """Segment every input; returns the process exit code (0 ok, 1 some input failed,
    2 bad arguments / model).

    ``backend="onnxruntime"`` runs the network through ONNX Runtime on the CPU (exported and
    cached on first use, ``core/onnx``); a model that cannot be exported is exit code 2."""
    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.core.data.readers import ImageReadError, read_image
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import UnknownModelError, load_model
    from napari_lesion_diffkd.core.segmenter import segment_image, select_network

    try:
        check_sampling_args(num_samples, num_steps)  # before loading anything big
        bundle = load_model(model, device="cpu" if backend == "onnxruntime" else device)
        select_network(bundle, backend)  # export / open the ONNX session once, up front
    except (UnknownModelError, BundleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prepared = prepare_run(output_dir, inputs)
    if isinstance(prepared, int):
        return prepared
    out_dir, paths = prepared
    failed = 0
    for path, stem in zip(paths, unique_output_stems(paths)):
        try:
            loaded = read_image(path)
            if loaded.data.ndim == 3 and not loaded.rgb:
                raise ImageReadError(f"{path}: is a volume {loaded.data.shape}; predict takes "
                                     "2D images (export slices, or use the napari widget)")
            result = run_to_completion(
                segment_image(bundle, loaded.data, num_samples=num_samples,
                              num_steps=num_steps, sampler=sampler, fusion=fusion, seed=seed,
                              backend=backend)
            )
            written = write_outputs(out_dir, stem, result)
        except (ImageReadError, ValueError, OSError) as exc:
            failed += 1
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        line = {
            "input": str(path),
            "seconds": round(result.seconds, 4),
            "samples": int(result.samples.shape[0]),
            "model": bundle.name,
            "sampler": result.settings["sampler"],
            "fusion": fusion,
            "seed": seed,
            "backend": backend,
            "shape": list(result.consensus.shape),
            "lesion_fraction": round(float(result.consensus.mean()), 6),
            "scores": {k: round(v, 6) for k, v in result.scores.items()},
            "output_stem": stem,
            "outputs": written,
        }
        if getattr(result, "working_shape", None) is not None:
            line["working_shape"] = list(result.working_shape)
        if result.warnings:
            line["warnings"] = list(result.warnings)
            for text in result.warnings:
                print(f"warning: {path}: {text}", file=sys.stderr)
        print(json_line(line), flush=True)
    return 1 if failed else 0
