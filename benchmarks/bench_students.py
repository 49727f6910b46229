"""Each distilled student beside its teacher: cost, accuracy, and the uncertainty it keeps.

Usage:
    python benchmarks/bench_students.py [--modalities dermoscopy ultrasound ct] [--k 8]
        [--images N] [--threads 2] [--no-write]

For each modality with both ``<m>-teacher`` and ``<m>-student`` registered (others are skipped
with a note), on the student's validation split (ids stored in its bundle; the teacher's split
must be the same set), side by side in one run, per image:

1. time at the models' working resolution, both fed the same prepared input
   (``prepare_image(image, size, channels)[None]``), inside ``torch.inference_mode``:
   (a) student: K samples + uncertainty map (entropy of the mean soft probability) + STAPLE consensus; (b) student, K = 1,
   the first mask only (sampler + threshold); (c) teacher with its default sampler at the same
   K + uncertainty + STAPLE. Each chain runs once untimed first (warm-up). Reports medians, the
   ratio teacher / student of the medians and the median of the per-image ratios;
2. accuracy: Dice / HD95 (pixels) of the STAPLE consensus at each image's original resolution
   (``segment_image(bundle, image, num_samples=K, seed=0)``, as ``core/evaluation.py``);
3. uncertainty kept: Pearson correlation of the student's and the teacher's pixel-variance maps
   of the same image (same seed, hence the same K initial noises), and the fraction of images
   whose K student samples are not all identical;
4. uncertainty informative (teacher and student): AUROC of the uncertainty map for the
   consensus's wrong pixels, pooled over all images (and the mean per-image AUROC), and the
   Spearman correlation between the per-image ``sample_disagreement`` score and 1 − Dice;
5. parameters, and GFLOPs per image of one full sampler run at K (``FlopCounterMode``: 2 x the
   multiply-accumulates of convolutions and matrix products; element-wise ops not counted).

Writes the ``students`` section of docs/benchmarks.md (unless ``--no-write``) and prints a JSON
summary per modality, then one for the whole run.

Development options (hidden from ``--help``): ``--teacher-model NAME_OR_PATH`` and
``--student-model NAME_OR_PATH`` replace the registered names (default ``{modality}-teacher`` /
``{modality}-student``; ``{modality}`` in the value is filled in, otherwise the same model is
used for every modality). E.g. a smoke run before a student exists, the teacher standing in
for its own student:

    python benchmarks/bench_students.py --modalities dermoscopy --images 2 --k 4 --threads 1 \
        --no-write --student-model dermoscopy-teacher
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402

SECTION = "students"


# -- arguments and models ------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Distilled students beside their teachers (see the module docstring)."
    )
    parser.add_argument("--modalities", nargs="+", default=["dermoscopy", "ultrasound", "ct"])
    parser.add_argument("--k", type=int, default=8, help="samples per image (default 8)")
    parser.add_argument("--images", type=int, default=None,
                        help="N validation images spread evenly over the split, so that "
                             "every dataset of a multi-dataset split is represented "
                             "(default: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/benchmarks.md as it is")
    parser.add_argument("--teacher-model", default="{modality}-teacher", help=argparse.SUPPRESS)
    parser.add_argument("--student-model", default="{modality}-student", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be >= 1")
    if args.images is not None and args.images < 1:
        parser.error("--images must be >= 1")
    return args


def model_name(template: str, modality: str) -> str:
    """``{modality}`` in a name template filled in (a plain name or path is returned as is)."""
    return template.replace("{modality}", modality)


def load_models(modality: str, args: argparse.Namespace):
    """(teacher, student) bundles on the CPU, or a string saying why the modality is skipped."""
    from napari_lesion_diffkd.core.registry import UnknownModelError, load_model

    try:
        teacher = load_model(model_name(args.teacher_model, modality), device="cpu")
        student = load_model(model_name(args.student_model, modality), device="cpu")
    except UnknownModelError as exc:
        return f"skipping {modality}: {exc}"
    return teacher, student


def evenly_spaced(records: list, limit: int | None) -> list:
    """``limit`` records at evenly spaced positions (all when ``limit`` is None or larger)."""
    if not limit or limit >= len(records):
        return list(records)
    return [records[int(i * len(records) / limit)] for i in range(limit)]


def validation_records(teacher, student, limit: int | None) -> list:
    """The student's validation pairs (its provenance's data folders and val ids), first
    ``limit``. Raises SystemExit when the teacher's validation ids are a different set."""
    from napari_lesion_diffkd.core.data.datasets import scan_pairs

    prov = student.config["provenance"]
    val_ids = set(prov["split"]["val_ids"])
    teacher_ids = set(teacher.config["provenance"]["split"]["val_ids"])
    if teacher_ids != val_ids:
        raise SystemExit(
            f"{student.name} and {teacher.name} have different validation splits "
            f"({len(val_ids - teacher_ids)} ids only in the student's, "
            f"{len(teacher_ids - val_ids)} only in the teacher's)"
        )
    records = [r for d in prov["data"] for r in scan_pairs(d) if r.id in val_ids]
    missing = len(val_ids) - len({r.id for r in records})
    if missing:
        print(f"warning: {missing} validation ids of {student.name} not found in "
              f"{prov['data']}", file=sys.stderr)
    return evenly_spaced(records, limit)


# -- timed chains at the working resolution --------------------------------------------------------
def ensemble_chain(bundle, sampler, cond: torch.Tensor, seeds: list[int]):
    """K samples + soft-entropy uncertainty map + STAPLE consensus at the model's resolution.

    Args:
        cond: (1, C, S, S) float32 prepared image. ``seeds``: K per-sample seeds.

    Returns:
        ((1, S, S) bool consensus, (1, S, S) float32 uncertainty, (1, K, S, S) float32 x0
        maps in [-1, 1]).
    """
    from napari_lesion_diffkd.core.ensemble.fusion import fuse_samples
    from napari_lesion_diffkd.core.ensemble.uncertainty import uncertainty_map
    from napari_lesion_diffkd.core.jobs import run_to_completion

    x0 = run_to_completion(sampler.sample(bundle.network, cond, len(seeds), seeds=seeds))
    maps = x0[:, :, 0]  # (1, K, S, S)
    unc = uncertainty_map(maps, kind="entropy", soft=True)
    return fuse_samples(maps, method="staple").consensus, unc, maps


def first_mask_chain(bundle, sampler, cond: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """One sample (the first seed), thresholded: (S, S) bool."""
    from napari_lesion_diffkd.core.jobs import run_to_completion

    x0 = run_to_completion(sampler.sample(bundle.network, cond, 1, seeds=seeds[:1]))
    return x0[0, 0, 0] > 0


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of one call of ``fn`` (perf_counter) under ``torch.inference_mode``."""
    return timed_result(fn)[0]


def timed_result(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, return value) of one call of ``fn`` under ``torch.inference_mode``."""
    with torch.inference_mode():
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out


def count_gflops(bundle, sampler, cond: torch.Tensor, seeds: list[int]) -> float:
    """GFLOPs of one full sampler run (K = len(seeds) samples of one image)."""
    from torch.utils.flop_counter import FlopCounterMode

    from napari_lesion_diffkd.core.jobs import run_to_completion

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        run_to_completion(sampler.sample(bundle.network, cond, len(seeds), seeds=seeds))
    return counter.get_total_flops() / 1e9


# -- accuracy and uncertainty at the original resolution ---------------------------------------
def segment(bundle, image: np.ndarray, k: int):
    """``segment_image`` with seed 0 (the same K initial noises for every model)."""
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.segmenter import segment_image

    return run_to_completion(segment_image(bundle, image, num_samples=k, seed=0))


def score_result(result, mask: np.ndarray) -> dict[str, Any]:
    """Dice/HD95 of the consensus, the per-image error AUROC and the counts for pooling."""
    from napari_lesion_diffkd.core.ensemble.uncertainty_eval import (
        auroc_from_counts,
        error_counts,
    )
    from napari_lesion_diffkd.core.metrics import all_metrics

    metrics = all_metrics(result.consensus, mask)
    counts = error_counts(result.uncertainty, result.consensus, mask)
    return {"dice": metrics["dice"], "hd95": metrics["hd95"],
            "auroc": auroc_from_counts(*counts), "counts": counts,
            "disagreement": float(result.scores.get("sample_disagreement", float("nan")))}


def samples_differ(samples: np.ndarray) -> bool:
    """Whether the (K, Y, X) masks are not all identical."""
    return bool(np.any(samples != samples[:1]))


# -- one modality ---------------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _pooled_auroc(counts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    from napari_lesion_diffkd.core.ensemble.uncertainty_eval import auroc_from_counts

    return auroc_from_counts(*(np.concatenate([c[i] for c in counts]) for i in range(3)))


def model_summary(bundle, sampler, gflops: float, seconds_k: list[float],
                  rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-model aggregates over the images (finite values only for means and medians)."""
    from napari_lesion_diffkd.core.ensemble.uncertainty_eval import spearman

    dice = [r["dice"] for r in rows]
    return {
        "model": bundle.name, "sampler": sampler.to_config(),
        "params": bundle.num_parameters, "gflops_per_image": gflops,
        "median_s_k": _median(seconds_k),
        "dice": _mean(dice), "hd95": _mean([r["hd95"] for r in rows]),
        "n_undefined_hd95": sum(1 for r in rows if not math.isfinite(r["hd95"])),
        "auroc_pooled": _pooled_auroc([r["counts"] for r in rows]),
        "auroc_mean_per_image": _mean([r["auroc"] for r in rows]),
        "n_undefined_auroc": sum(1 for r in rows if not math.isfinite(r["auroc"])),
        "spearman_disagreement_vs_error": spearman([r["disagreement"] for r in rows],
                                                   [1 - d for d in dice]),
    }


def bench_modality(modality: str, teacher, student, records: list, k: int) -> dict[str, Any]:
    """Everything measured for one modality (see the module docstring); prints progress."""
    from napari_lesion_diffkd.core.data.datasets import read_pair
    from napari_lesion_diffkd.core.data.preprocess import prepare_image
    from napari_lesion_diffkd.core.ensemble.uncertainty_eval import variance_correlation
    from napari_lesion_diffkd.core.segmenter import build_bundle_sampler, sample_seeds

    if (teacher.input_size, teacher.image_channels) != (student.input_size,
                                                        student.image_channels):
        raise SystemExit(f"{modality}: teacher and student take different inputs "
                         f"({teacher.input_size} px x {teacher.image_channels} vs "
                         f"{student.input_size} px x {student.image_channels})")
    if not records:
        raise SystemExit(f"{modality}: no validation images found")
    t_sampler = build_bundle_sampler(teacher, None, None)
    s_sampler = build_bundle_sampler(student, None, None)
    seeds = sample_seeds(0, k)
    chains = {
        "student_k": lambda c: ensemble_chain(student, s_sampler, c, seeds),
        "student_1": lambda c: first_mask_chain(student, s_sampler, c, seeds),
        "teacher_k": lambda c: ensemble_chain(teacher, t_sampler, c, seeds),
    }
    times: dict[str, list[float]] = {name: [] for name in chains}
    rows_t, rows_s, corr, corr_soft, differ = [], [], [], [], []
    gflops: dict[str, float] = {}
    for i, record in enumerate(records):
        image, mask = read_pair(record)
        cond = prepare_image(image, student.input_size, student.image_channels)[None]
        if i == 0:
            gflops = {"teacher": count_gflops(teacher, t_sampler, cond, seeds),
                      "student": count_gflops(student, s_sampler, cond, seeds)}
            for chain in chains.values():  # warm-up, untimed
                timed(lambda chain=chain: chain(cond))
        # Alternate the order between images so that no chain always runs first.
        outputs = {}
        for name in list(chains) if i % 2 == 0 else list(chains)[::-1]:
            seconds, outputs[name] = timed_result(lambda chain=chains[name]: chain(cond))
            times[name].append(seconds)
        # Soft variance at the working resolution, from the timed runs' own x0 maps (same
        # seeds for both models).
        corr_soft.append(variance_correlation(outputs["student_k"][2][0],
                                              outputs["teacher_k"][2][0], soft=True))
        res_t, res_s = segment(teacher, image, k), segment(student, image, k)
        rows_t.append(score_result(res_t, mask))
        rows_s.append(score_result(res_s, mask))
        corr.append(variance_correlation(res_s.samples, res_t.samples))
        differ.append(samples_differ(res_s.samples))
        print(f"  {modality} {i + 1}/{len(records)} {record.id}: "
              f"t {times['teacher_k'][-1]:.3f}s s {times['student_k'][-1]:.3f}s "
              f"s1 {times['student_1'][-1]:.3f}s  Dice t {rows_t[-1]['dice']:.3f} "
              f"s {rows_s[-1]['dice']:.3f}  corr {corr[-1]:.3f} soft {corr_soft[-1]:.3f}",
              file=sys.stderr, flush=True)
    t_sum = model_summary(teacher, t_sampler, gflops["teacher"], times["teacher_k"], rows_t)
    s_sum = model_summary(student, s_sampler, gflops["student"], times["student_k"], rows_s)
    s_sum["median_s_k1"] = _median(times["student_1"])
    s_sum["variance_corr_mean"] = _mean(corr)
    s_sum["variance_corr_median"] = _median(corr)
    s_sum["variance_corr_soft_mean"] = _mean(corr_soft)
    s_sum["variance_corr_soft_median"] = _median(corr_soft)
    s_sum["n_undefined_variance_corr"] = sum(1 for c in corr if not math.isfinite(c))
    s_sum["fraction_samples_differ"] = float(np.mean(differ))
    per_image = [t / s for t, s in zip(times["teacher_k"], times["student_k"])]
    return {
        "modality": modality, "n": len(records), "k": k, "teacher": t_sum, "student": s_sum,
        "speedup_k": t_sum["median_s_k"] / s_sum["median_s_k"],
        "speedup_k_median_per_image": _median(per_image),
        "speedup_teacher_k_vs_student_1": t_sum["median_s_k"] / s_sum["median_s_k1"],
        "params_ratio": t_sum["params"] / s_sum["params"],
        "gflops_ratio": t_sum["gflops_per_image"] / s_sum["gflops_per_image"]
        if s_sum["gflops_per_image"] > 0 else float("nan"),
    }


# -- report ---------------------------------------------------------------------------------------
def _f(value: Any, spec: str = ".3f", suffix: str = "") -> str:
    """A number formatted, or an en dash for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:{spec}}{suffix}"


def _delta(a: float, b: float, spec: str = "+.3f") -> str:
    return "Δ " + _f(b - a, spec) if math.isfinite(a) and math.isfinite(b) else "–"


def _sampler_label(cfg: dict[str, Any]) -> str:
    name = cfg.get("_class_name", "?").replace("Sampler", "")
    return f"{name} {cfg['num_steps']}" if "num_steps" in cfg else name


def modality_table(m: dict[str, Any]) -> list[str]:
    """Markdown lines: teacher row, student row, ratio row, and notes."""
    t, s, k = m["teacher"], m["student"], m["k"]
    rho = "spearman_disagreement_vs_error"
    lines = [
        f"### {m['modality']} ({m['n']} validation images, K = {k})",
        "",
        f"| model | params | GFLOPs / image (K = {k}) | s / image, K = {k} + unc. + STAPLE | "
        "s / image, K = 1 | speed-up | Dice | HD95 (px) | variance corr. (hard / soft) | "
        "error AUROC "
        "(pooled) | Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {t['model']} ({_sampler_label(t['sampler'])}) | {t['params'] / 1e6:.2f}M | "
        f"{_f(t['gflops_per_image'], '.2f')} | {_f(t['median_s_k'])} | – | 1× | "
        f"{_f(t['dice'], '.4f')} | {_f(t['hd95'], '.2f')} | – | {_f(t['auroc_pooled'])} | "
        f"{_f(t[rho], '.2f')} |",
        f"| {s['model']} ({_sampler_label(s['sampler'])}) | {s['params'] / 1e6:.2f}M | "
        f"{_f(s['gflops_per_image'], '.2f')} | {_f(s['median_s_k'])} | "
        f"{_f(s['median_s_k1'])} | {_f(m['speedup_k'], '.1f', '×')} (per image "
        f"{_f(m['speedup_k_median_per_image'], '.1f', '×')}) | {_f(s['dice'], '.4f')} | "
        f"{_f(s['hd95'], '.2f')} | {_f(s['variance_corr_mean'])} / "
        f"{_f(s.get('variance_corr_soft_mean'))} | {_f(s['auroc_pooled'])} | "
        f"{_f(s[rho], '.2f')} |",
        f"| teacher ÷ student (quality: Δ student − teacher) | "
        f"{_f(m['params_ratio'], '.1f', '×')} | {_f(m['gflops_ratio'], '.1f', '×')} | "
        f"{_f(m['speedup_k'], '.1f', '×')} | "
        f"{_f(m['speedup_teacher_k_vs_student_1'], '.1f', '×')} vs teacher K = {k} | – | "
        f"{_delta(t['dice'], s['dice'], '+.4f')} | {_delta(t['hd95'], s['hd95'], '+.2f')} | – | "
        f"{_delta(t['auroc_pooled'], s['auroc_pooled'])} | "
        f"{_delta(t[rho], s[rho], '+.2f')} |",
        "",
        f"Student samples not all identical on {100 * s['fraction_samples_differ']:.0f}% of the "
        f"images; variance correlation of the hard masks (original resolution) mean "
        f"{_f(s['variance_corr_mean'])}, median {_f(s['variance_corr_median'])}; of the soft "
        f"probabilities (working resolution) mean {_f(s.get('variance_corr_soft_mean'))}, "
        f"median {_f(s.get('variance_corr_soft_median'))} (hard: undefined, a constant "
        f"variance map, on "
        f"{s['n_undefined_variance_corr']} images). Mean per-image error AUROC: teacher "
        f"{_f(t['auroc_mean_per_image'])}, student {_f(s['auroc_mean_per_image'])}. "
        f"Undefined HD95 (empty consensus): teacher {t['n_undefined_hd95']}, student "
        f"{s['n_undefined_hd95']} images, left out of the means.",
    ]
    return lines


def machine_name() -> str:
    """The CPU model (``platform.processor()``, else /proc/cpuinfo, else the architecture)."""
    name = platform.processor()
    if not name or name == platform.machine():
        try:
            with open("/proc/cpuinfo") as fh:
                name = next((line.split(":", 1)[1].strip() for line in fh
                             if line.startswith("model name")), "")
        except OSError:
            name = ""
    return name or platform.machine()


def report(results: list[dict[str, Any]], skipped: list[str], command: str,
           threads: int) -> str:
    """The whole ``students`` section."""
    machine = machine_name()
    lines = [
        "## Distilled students beside their teachers",
        "",
        f"Command: `{command}` ({machine}, {os.cpu_count()} cores, {threads} torch threads, "
        f"{datetime.date.today().isoformat()}). Validation images neither model trained on "
        "(the student's split, checked equal to the teacher's).",
        "",
        "Seconds: median per image at the models' working resolution (same prepared "
        "input for both, after one untimed warm-up), sampling + uncertainty map (entropy of "
        "the samples' mean soft probability) + STAPLE for K samples; K = 1 is one sampled "
        "mask, thresholded. Speed-up = ratio of the median times (in brackets the median of the per-image ratios). GFLOPs: one sampler "
        "run of K samples on one image, 2 × the multiply-accumulates of convolutions and "
        "matrix products (`torch.utils.flop_counter`). Dice / HD95: STAPLE consensus at the "
        "original resolution, mean over images. Variance corr.: Pearson correlation of the "
        "student's and the teacher's pixel-variance maps of an image (same seed, so the same "
        "K initial noises), mean over images; *hard*: variance of the K thresholded masks at "
        "the original resolution, *soft*: variance of the K soft probabilities (x0 + 1) / 2 "
        "at the working resolution (the quantity the app's uncertainty map is built from). "
        "Error AUROC: how well the uncertainty map ranks "
        "the consensus's wrong pixels above its right ones, pooled over all pixels of all "
        "images (0.5 = chance). Spearman: per-image sample disagreement (1 − mean pairwise "
        "Dice of the K samples) against 1 − Dice of the consensus.",
        "",
    ]
    for m in results:
        lines += modality_table(m) + [""]
    for note in skipped:
        lines.append(f"- {note}")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """NaN / inf -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    given = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/bench_students.py" + "".join(
        " " + shlex.quote(a) for a in given)
    results, skipped = [], []
    for modality in args.modalities:
        models = load_models(modality, args)
        if isinstance(models, str):
            print(models, file=sys.stderr)
            skipped.append(models)
            continue
        teacher, student = models
        records = validation_records(teacher, student, args.images)
        result = bench_modality(modality, teacher, student, records, args.k)
        results.append(result)
        print(json.dumps(_jsonable(result)), flush=True)
    summary = {"command": command, "threads": args.threads, "k": args.k,
               "machine": machine_name(),
               "date": datetime.date.today().isoformat(),
               "skipped": skipped, "results": results}
    print(json.dumps(_jsonable(summary)), flush=True)
    if not results:
        print("nothing measured: no modality has both a teacher and a student", file=sys.stderr)
        return 1
    text = report(results, skipped, command, args.threads)
    if args.no_write:
        print(f"--no-write: the {SECTION} section would read:\n\n{text}", file=sys.stderr)
    else:
        update_section(ROOT / "docs" / "benchmarks.md", SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
