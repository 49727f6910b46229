"""``lesion-diffkd predict`` with a SAM and prompts: ``--prompt-box`` / ``--prompt-point``.

Prompts on the command line are in the **image pixel frame** of each input, as SAM writes
them: ``x`` = column, ``y`` = row, pixel ``[y, x]`` centred on the integer coordinate
(``coords.py``, the one module that converts frames; ``PromptSession`` takes this frame and
maps it to SAM's input frame there).

* ``--prompt-box x0,y0,x1,y1``: one box, ``x0 < x1``, ``y0 < y1``, inside ``[0, X] x [0, Y]``
  (the far edges are allowed: they are clipped to the last pixel, ``coords.clip_xyxy``);
* ``--prompt-point x,y,label`` (repeatable): ``label`` 1 = lesion (positive), 0 = background
  (negative); ``0 <= x < X``, ``0 <= y < Y``.

The same prompts apply to every input image. Outputs follow ``predict``'s contract
(``cli/predict.py``): ``<stem>.png`` (SAM's mask, uint8 {0, 255}, the input's size) and
``<stem>_uncertainty.png``: a SAM gives one mask, not K samples, so the uncertainty is the
per-pixel binary entropy (in bits, 255 = one bit) of ``sigmoid(logit)`` of SAM's
full-resolution mask logits: high where the decoder's logit is near 0, i.e. along the
boundary it is unsure of. It is the decoder's own confidence, not a spread over samples; no
``_samples.tif`` is written (K = 1). One JSON line per image on stdout.

Exit codes: 0 all done; 1 an input could not be read; 2 bad arguments: malformed prompt
text, prompts with a model that is not a SAM, a SAM without prompts, or prompts outside an
input image (that image is skipped, named on stderr).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_lesion_diffkd.core.sam.coords import clip_xyxy

Point = tuple[float, float, int]


class PromptError(ValueError):
    """A prompt string is malformed or does not fit the image (message says which)."""


def _numbers(text: str, count: int, what: str, usage: str) -> list[float]:
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != count:
        raise PromptError(f"{what} {text!r}: expected {usage} ({count} comma-separated numbers)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise PromptError(f"{what} {text!r}: expected {usage}, not all numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise PromptError(f"{what} {text!r}: numbers must be finite")
    return values


def parse_box(text: str) -> np.ndarray:
    """``"x0,y0,x1,y1"`` -> (4,) float64 XYXY (image frame). Raises PromptError."""
    x0, y0, x1, y1 = _numbers(text, 4, "--prompt-box", "x0,y0,x1,y1")
    if not (x1 > x0 and y1 > y0):
        raise PromptError(f"--prompt-box {text!r}: need x0 < x1 and y0 < y1 "
                          "(x = column, y = row of the top-left and bottom-right corners)")
    return np.array([x0, y0, x1, y1], dtype=np.float64)


def parse_point(text: str) -> Point:
    """``"x,y,label"`` -> ``(x, y, label)``, label 1 (lesion) or 0 (background)."""
    x, y, label = _numbers(text, 3, "--prompt-point", "x,y,label")
    if label not in (0.0, 1.0):
        raise PromptError(f"--prompt-point {text!r}: label must be 1 (lesion) or 0 "
                          "(background)")
    return float(x), float(y), int(label)


def check_fits(box: np.ndarray | None, points: Sequence[Point],
               image_hw: tuple[int, int]) -> None:
    """Raise PromptError when the box or a point lies outside a (Y, X) image."""
    h, w = int(image_hw[0]), int(image_hw[1])
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise PromptError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is outside the image "
                              f"(width X = {w}, height Y = {h}: x in [0, {w}], y in [0, {h}])")
    for x, y, _ in points:
        if not (0 <= x < w and 0 <= y < h):
            raise PromptError(f"point {x:g},{y:g} is outside the image (width X = {w}, "
                              f"height Y = {h}: 0 <= x < {w}, 0 <= y < {h})")


def is_sam_model(name: str) -> bool:
    """True when ``name`` is a SAM: a SAM bundle (registered or a folder), a ``.pth``/``.pt``
    checkpoint file, an official checkpoint name (``sam_vit_b``, ``medsam``, ...) or
    ``medsam-lite``."""
    from napari_lesion_diffkd.core.registry import UnknownModelError, resolve_model
    from napari_lesion_diffkd.core.sam.loading import checkpoint_info
    from napari_lesion_diffkd.core.sam.sam_bundle import is_sam_bundle

    path = Path(name)
    if path.is_file():
        return path.suffix.lower() in (".pth", ".pt")
    if str(name) == "medsam-lite":  # LiteMedSAM (core/sam/medsam_lite.py), even if missing
        return True
    try:
        checkpoint_info(str(name))
        return True
    except KeyError:
        pass
    try:
        return is_sam_bundle(resolve_model(name))
    except UnknownModelError:
        return False


@dataclass
class PromptSegmentation:
    """SAM's answer for one image, shaped like ``segmenter.SegmentationResult``'s outputs.

    Attributes:
        consensus: (Y, X) bool, SAM's mask. probability: (Y, X) float32 sigmoid(logits).
        uncertainty: (Y, X) float32 in [0, 1], binary entropy of ``probability`` in bits.
        samples: (1, Y, X) bool (K = 1). score: SAM's predicted IoU. seconds: prompt -> mask.
    """

    consensus: np.ndarray
    probability: np.ndarray
    uncertainty: np.ndarray
    samples: np.ndarray
    score: float
    seconds: float
    scores: dict[str, float] = field(default_factory=dict)


def binary_entropy_bits(prob: np.ndarray) -> np.ndarray:
    """Per-pixel entropy (bits, in [0, 1]) of a Bernoulli with probability ``prob``."""
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-12, 1 - 1e-12)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def segment_with_prompts(session, image: np.ndarray, box: np.ndarray | None,
                         points: Sequence[Point]) -> PromptSegmentation:
    """Encode ``image`` (cached by the session) and decode the prompts.

    Args:
        session: a ``session.PromptSession``.
        image: (Y, X) gray or (Y, X, 3) RGB.
        box: (4,) image-frame XYXY or None. points: ``(x, y, label)`` image-frame clicks.

    Raises:
        PromptError: the prompts are empty or do not fit the image.
    """
    hw = (int(image.shape[0]), int(image.shape[1]))
    if box is None and not points:
        raise PromptError("no prompt: give a box and/or points")
    check_fits(box, points, hw)
    session.set_image(image)
    xy = np.array([[p[0], p[1]] for p in points], dtype=np.float64) if points else None
    labels = np.array([p[2] for p in points]) if points else None
    result = session.predict(points_xy=xy, point_labels=labels,
                             box_xyxy=None if box is None else clip_xyxy(box, hw),
                             return_logits=True)
    logits = np.asarray(result.logits, dtype=np.float32)
    prob = (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)
    unc = binary_entropy_bits(prob)
    return PromptSegmentation(consensus=result.mask, probability=prob, uncertainty=unc,
                              samples=result.mask[None], score=float(result.score),
                              seconds=float(result.seconds),
                              scores={"sam_iou": float(result.score),
                                      "mean_uncertainty": float(unc.mean())})


def predict_files_with_prompts(
    model: str,
    inputs: Sequence[str],
    output_dir: str,
    box: str | None = None,
    points: Sequence[str] = (),
    device: str = "auto",
) -> int:
    """The SAM branch of ``lesion-diffkd predict``; returns the exit code (see module)."""
    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.core.data.readers import ImageReadError, read_image
    from napari_lesion_diffkd.core.json_lines import json_line
    from napari_lesion_diffkd.core.predict_files import (
        prepare_run,
        unique_output_stems,
        write_outputs,
    )
    from napari_lesion_diffkd.core.registry import resolve_device
    from napari_lesion_diffkd.core.sam.loading import SamCheckpointError, load_sam
    from napari_lesion_diffkd.core.sam.session import PromptSession

    try:
        box_xyxy = parse_box(box) if box is not None else None
        clicks = [parse_point(p) for p in points or ()]
    except PromptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    has_prompts = box_xyxy is not None or bool(clicks)
    sam_model = is_sam_model(model)
    if has_prompts and not sam_model:
        print(f"error: --prompt-box / --prompt-point need a SAM model (e.g. lesion-sam-tiny); "
              f"{model!r} is not a SAM", file=sys.stderr)
        return 2
    if sam_model and not has_prompts:
        print(f"error: {model!r} is a promptable SAM: give --prompt-box x0,y0,x1,y1 and/or "
              "--prompt-point x,y,label (x = column, y = row, image pixels)", file=sys.stderr)
        return 2
    try:
        loaded = load_sam(model, device=resolve_device(device))
    except (LookupError, SamCheckpointError, BundleError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prepared = prepare_run(output_dir, inputs)
    if isinstance(prepared, int):
        return prepared
    out_dir, paths = prepared
    session = PromptSession(loaded, device=resolve_device(device), cache_size=1)
    failed = misfit = 0
    for path, stem in zip(paths, unique_output_stems(paths)):  # same-stem inputs: -2, -3
        try:
            image = read_image(path)
            if image.data.ndim == 3 and not image.rgb:
                raise ImageReadError(f"{path}: is a volume {image.data.shape}; predict takes "
                                     "2D images")
            result = segment_with_prompts(session, image.data, box_xyxy, clicks)
            written = write_outputs(out_dir, stem, result)
        except PromptError as exc:
            misfit += 1
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        except (ImageReadError, ValueError, OSError) as exc:
            failed += 1
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        line = {
            "input": str(path), "seconds": round(result.seconds, 4), "samples": 1,
            "model": loaded.name, "sampler": "sam-prompt",
            "prompts": {"box": None if box_xyxy is None else box_xyxy.tolist(),
                        "points": [list(p) for p in clicks]},
            "shape": list(result.consensus.shape),
            "lesion_fraction": round(float(result.consensus.mean()), 6),
            "scores": {k: round(v, 6) for k, v in result.scores.items()},
            "output_stem": stem,
            "outputs": written,
        }
        print(json_line(line), flush=True)  # strict JSON: a NaN score prints as null
    if misfit:
        return 2
    return 1 if failed else 0
