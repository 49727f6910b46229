"""torch vs ONNX Runtime on the CPU: student latency, SAM decoder per prompt, and parity.

Usage:
    python benchmarks/bench_onnx.py [--images 8] [--repeats 3] [--threads 1 2] [--no-write]

Side by side in one run, interleaved (torch, ONNX Runtime, torch, ... on the same input):

1. students (``dermoscopy-student``, ``ultrasound-student``): one sampler run at the models'
   working resolution (128 px), K = 1 (the first mask) and K = 8 (all samples in one batched
   call), for each intra-op thread count (torch ``set_num_threads`` / ONNX Runtime
   ``intra_op_num_threads``); ``--repeats`` timings per validation image after one untimed
   warm-up; median over all timings. Sampler, seeds and noise are the same for both backends
   (``core/onnx/driver.py``);
2. ``lesion-sam-tiny``: image encoder once per image, then the prompt decoder per box prompt
   (the box of the reference mask), torch ``PromptSession.predict`` vs the ONNX decoder;
3. parity on the validation images: largest |x0 difference| (raw network output at the
   working resolution, K = 8), pixels whose thresholded mask differs there, and images whose
   ``segment_image`` consensus (original resolution, STAPLE, K = 8) differs; for the
   ``*-unet`` baselines the logits and masks; for the SAM the embedding and full-size logits.

Writes the ``onnx`` section of docs/benchmarks.md (unless ``--no-write``) and prints JSON.
Exported files go to a temporary cache (``$LESION_DIFFKD_CACHE`` is not touched).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402
from bench_students import evenly_spaced, machine_name  # noqa: E402

SECTION = "onnx"
STUDENTS = ("dermoscopy-student", "ultrasound-student")
UNETS = ("dermoscopy-unet", "ultrasound-unet", "ct-unet")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="torch vs ONNX Runtime (see the docstring)")
    p.add_argument("--images", type=int, default=8, help="validation images per model")
    p.add_argument("--repeats", type=int, default=3, help="timings per image and setting")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def records_of(bundle, limit: int) -> list:
    """Evenly spaced validation records of a bundle (data folders resolved against the shared
    data root when the stored absolute paths do not exist on this machine)."""
    from napari_lesion_diffkd.core.data.datasets import scan_pairs
    from napari_lesion_diffkd.core.data.locate import find_data_root

    prov = bundle.config["provenance"]
    val_ids = set(prov["split"]["val_ids"])
    root = find_data_root()
    records = []
    for d in prov["data"]:
        folder = Path(d) if Path(d).is_dir() or root is None else root / Path(d).name
        records += [r for r in scan_pairs(folder) if r.id in val_ids]
    return evenly_spaced(records, limit)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_student(name: str, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    from napari_lesion_diffkd.core.data.datasets import read_pair
    from napari_lesion_diffkd.core.data.preprocess import prepare_image
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.onnx.driver import onnx_network
    from napari_lesion_diffkd.core.onnx.parity import denoiser_outputs
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.segmenter import (
        build_bundle_sampler,
        sample_seeds,
        segment_image,
    )

    bundle = load_model(name, device="cpu")
    records = records_of(bundle, args.images)
    sampler = build_bundle_sampler(bundle, None, None)
    pairs = [read_pair(r) for r in records]
    conds = [prepare_image(img, bundle.input_size, bundle.image_channels)[None]
             for img, _ in pairs]
    nets = {t: onnx_network(bundle, threads=t, folder=cache) for t in args.threads}
    times: dict[str, list[float]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for k in (1, args.k):
            seeds = sample_seeds(0, k)
            runners = {"torch": bundle.network, "onnxruntime": nets[threads]}
            for cond in conds:
                for net in runners.values():  # warm-up
                    run_to_completion(sampler.sample(net, cond, k, seeds=seeds))
                for _ in range(args.repeats):
                    for backend, net in runners.items():  # interleaved
                        key = f"{backend}|{threads}|{k}"
                        times.setdefault(key, []).append(_timed(
                            lambda net=net, cond=cond: run_to_completion(
                                sampler.sample(net, cond, k, seeds=seeds))))
    torch.set_num_threads(max(args.threads))
    medians = {key: statistics.median(v) for key, v in times.items()}
    # Parity: raw x0 for all images at once (N images x K samples in one call).
    images = torch.cat(conds)
    ref, out = denoiser_outputs(bundle, nets[max(args.threads)], images, args.k, seed=0)
    consensus_differs = 0
    sample_pixels_differ = 0
    total_pixels = 0
    for img, _ in pairs:
        a = run_to_completion(segment_image(bundle, img, num_samples=args.k, seed=0))
        b = run_to_completion(segment_image(bundle, img, num_samples=args.k, seed=0,
                                            backend="onnxruntime"))
        consensus_differs += int(not np.array_equal(a.consensus, b.consensus))
        sample_pixels_differ += int((a.samples != b.samples).sum())
        total_pixels += a.samples.size
    return {"model": name, "images": len(records), "medians": medians,
            "max_abs_x0": float(np.abs(ref - out).max()),
            "mask_pixels_differ": int(((ref > 0) != (out > 0)).sum()),
            "mask_pixels": int(ref.size),
            "consensus_images_differ": consensus_differs,
            "sample_pixels_differ_full_res": sample_pixels_differ,
            "sample_pixels_full_res": total_pixels}


def bench_unets(args: argparse.Namespace, cache: Path) -> list[dict[str, Any]]:
    from napari_lesion_diffkd.core.data.datasets import read_pair
    from napari_lesion_diffkd.core.data.preprocess import prepare_image
    from napari_lesion_diffkd.core.onnx.driver import onnx_network
    from napari_lesion_diffkd.core.registry import load_model

    rows = []
    for name in UNETS:
        bundle = load_model(name, device="cpu")
        net = onnx_network(bundle, threads=max(args.threads), folder=cache)
        records = records_of(bundle, args.images)
        x = torch.stack([prepare_image(read_pair(r)[0], bundle.input_size,
                                       bundle.image_channels) for r in records])
        with torch.no_grad():
            ref = bundle.network(x).numpy()
            ref64 = bundle.network.double()(x.double()).numpy()
            bundle.network.float()
        out = net(x).numpy()
        rows.append({"model": name, "images": len(records),
                     "max_abs_logits": float(np.abs(ref - out).max()),
                     "max_abs_logits_vs_float64": float(np.abs(ref64 - out).max()),
                     "torch_vs_float64": float(np.abs(ref64 - ref).max()),
                     "max_abs_ref": float(np.abs(ref).max()),
                     "mask_pixels_differ": int(((ref > 0) != (out > 0)).sum()),
                     "mask_pixels": int(ref.size)})
    return rows


def bench_sam(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs
    from napari_lesion_diffkd.core.data.locate import find_data_root
    from napari_lesion_diffkd.core.onnx.cache import cached_sam_onnx
    from napari_lesion_diffkd.core.onnx.driver import OnnxSam
    from napari_lesion_diffkd.core.sam.loading import load_sam
    from napari_lesion_diffkd.core.sam.session import PromptSession

    threads = max(args.threads)
    torch.set_num_threads(threads)
    loaded = load_sam("lesion-sam-tiny")
    runtime = OnnxSam(*cached_sam_onnx(loaded, cache), threads=threads)
    root = find_data_root()
    per = max(1, args.images // 3)
    records = [r for ds in ("ph2_dermoscopy", "busbra_breast_ultrasound",
                            "covid19_ct_infection")
               for r in evenly_spaced(scan_pairs(root / ds), per)]
    enc_t, enc_o, dec_t, dec_o = [], [], [], []
    max_emb = max_logit = 0.0
    mask_differs = 0
    for record in records:
        image, mask = read_pair(record)
        ys, xs = np.nonzero(mask)
        if not len(ys):
            continue
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)
        session = PromptSession(loaded, test_time_flip=False)  # same work as ONNX Runtime
        session.set_image(image)  # warm-up
        runtime.embed(image)
        for _ in range(args.repeats):
            session.clear_cache()
            enc_t.append(_timed(lambda: session.set_image(image)))
            enc_o.append(_timed(lambda: runtime.embed(image)))
        emb = runtime.embed(image)
        max_emb = max(max_emb, float(np.abs(emb - session.current.features.numpy()).max()))
        for _ in range(args.repeats):
            dec_t.append(_timed(lambda: session.predict(box_xyxy=box, multimask=False)))
            dec_o.append(_timed(lambda: runtime.predict(emb, image.shape[:2], box_xyxy=box)))
        ref = session.predict(box_xyxy=box, multimask=False, return_logits=True)
        full, _, _ = runtime.predict(emb, image.shape[:2], box_xyxy=box)
        max_logit = max(max_logit, float(np.abs(full - ref.logits).max()))
        mask_differs += int(not np.array_equal(full > 0, ref.mask))
    return {"model": "lesion-sam-tiny", "images": len(records), "threads": threads,
            "encoder_torch": statistics.median(enc_t), "encoder_onnx": statistics.median(enc_o),
            "decoder_torch": statistics.median(dec_t), "decoder_onnx": statistics.median(dec_o),
            "max_abs_embedding": max_emb, "max_abs_logits": max_logit,
            "masks_differ": mask_differs}


def _ms(s: float) -> str:
    return f"{1000 * s:.1f} ms"


def report(students: list[dict[str, Any]], unets: list[dict[str, Any]], sam: dict[str, Any],
           args: argparse.Namespace, command: str) -> str:
    import onnxruntime

    lines = [
        "## torch vs ONNX Runtime (CPU)",
        "",
        f"Command: `{command}` ({machine_name()}, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, {datetime.date.today().isoformat()}). Exported with "
        "`lesion-diffkd export-onnx` (opset 17); the same sampler, seeds and noise drive both "
        "backends.",
        "",
        "### Students: one sampler run at 128 px (median)",
        "",
        f"{args.repeats} interleaved timings per validation image after a warm-up; K = 1 is "
        f"the first mask, K = {args.k} all samples in one batched call; no fusion. Compare "
        "the backends within a thread count: on a machine whose cores are busy with other "
        "work, two threads can be far slower than one for both (a worker thread waits for a "
        "descheduled sibling; torch suffers most, see the STAPLE section).",
        "",
        "| model | images | threads | K | torch | ONNX Runtime | torch / ORT |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in students:
        for threads in args.threads:
            for k in (1, args.k):
                t = s["medians"][f"torch|{threads}|{k}"]
                o = s["medians"][f"onnxruntime|{threads}|{k}"]
                lines.append(f"| {s['model']} | {s['images']} | {threads} | {k} | {_ms(t)} | "
                             f"{_ms(o)} | {t / o:.2f}× |")
    lines += [
        "",
        "### Parity on the same validation images",
        "",
        "| model | images | max abs diff (raw output) | thresholded pixels that differ | "
        "notes |",
        "|---|---|---|---|---|",
    ]
    for s in students:
        lines.append(
            f"| {s['model']} | {s['images']} | {s['max_abs_x0']:.1e} (x0, K = {args.k}) | "
            f"{s['mask_pixels_differ']} of {s['mask_pixels']} at 128 px | STAPLE consensus at "
            f"original size differs on {s['consensus_images_differ']} images; sample masks "
            f"{s['sample_pixels_differ_full_res']} of {s['sample_pixels_full_res']} pixels |")
    for u in unets:
        lines.append(
            f"| {u['model']} | {u['images']} | {u['max_abs_logits']:.1e} (logits up to "
            f"{u['max_abs_ref']:.0f}) | {u['mask_pixels_differ']} of {u['mask_pixels']} | "
            f"vs a float64 torch reference: ONNX {u['max_abs_logits_vs_float64']:.1e}, torch "
            f"(channels-last, as loaded) {u['torch_vs_float64']:.1e} |")
    lines.append(
        f"| {sam['model']} | {sam['images']} | {sam['max_abs_logits']:.1e} (full-size logits, "
        f"box prompt); embedding {sam['max_abs_embedding']:.1e} | masks differ on "
        f"{sam['masks_differ']} images | PH2, BUS-BRA, CT: three aspect ratios |")
    lines += [
        "",
        f"### lesion-sam-tiny per prompt ({sam['threads']} threads, median over "
        f"{sam['images']} images x {args.repeats})",
        "",
        "| step | torch | ONNX Runtime | torch / ORT |",
        "|---|---|---|---|",
        f"| image encoder (once per image) | {_ms(sam['encoder_torch'])} | "
        f"{_ms(sam['encoder_onnx'])} | {sam['encoder_torch'] / sam['encoder_onnx']:.2f}× |",
        f"| prompt decoder (per box prompt, full-size mask) | {_ms(sam['decoder_torch'])} | "
        f"{_ms(sam['decoder_onnx'])} | {sam['decoder_torch'] / sam['decoder_onnx']:.2f}× |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/bench_onnx.py " + shlex.join(
        sys.argv[1:] if argv is None else list(argv))
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        cache = Path(tmp)
        students = [bench_student(name, args, cache) for name in STUDENTS]
        unets = bench_unets(args, cache)
        sam = bench_sam(args, cache)
    for row in (*students, *unets, sam):
        print(json.dumps(row))
    text = report(students, unets, sam, args, command.strip())
    print(text)
    if not args.no_write:
        update_section(ROOT / "docs" / "benchmarks.md", SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
