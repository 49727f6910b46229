"""Seed 002's task-specific KD on PH2: the SAM teacher beside its distilled ViT student.

Usage:
    nice -n 5 .venv/bin/python benchmarks/bench_tskd.py --threads 1 [--out runs/bench-tskd]
        [--config configs/ts-kd-ph2.yaml] [--data ../shared/data/ph2_dermoscopy]
        [--teacher lesion-sam-tiny] [--stage-minutes 2.5] [--teacher-minutes 2]
        [--skip-no-generated] [--no-write]

Three runs of ``core.distillation.ts_kd.trainer.run_ts_kd`` on the same group-aware split
(PH2: 128 training / 32 validation images; the validation images are the ones
``lesion-sam-tiny`` also held out, checked below), in one process, one after another:

1. **TS-KD + generated**: the config as it is: teacher LoRA-tuned in automatic mode, the
   image generator trained on the training images, its images added to the transfer set,
   dual-level KD, then fine-tuning on the labels;
2. **TS-KD, real only**: the same tuned teacher (run 1's ``teacher/``, not tuned again), the
   transfer set without generated images;
3. **scratch**: the same student trained on the labels only, for the time runs 1-2 gave
   KD + fine-tuning together (equal student training time).

Each KD / fine-tuning stage gets ``--stage-minutes`` (the generator too), the teacher's
LoRA ``--teacher-minutes``. Dice is the mean over validation images at each image's own
resolution; sizes are parameters and fp32 MiB (seed 002 Table 7's "MB"). Writes the ``tskd``
section of docs/benchmarks.md unless ``--no-write``, and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402

SECTION = "tskd"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="TS-KD teacher vs student (see module docstring)")
    p.add_argument("--config", default=str(ROOT / "configs" / "ts-kd-ph2.yaml"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ph2_dermoscopy"))
    p.add_argument("--teacher", default="lesion-sam-tiny")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-tskd"))
    p.add_argument("--stage-minutes", type=float, default=2.5,
                   help="budget of the generator, each KD and each fine-tuning stage")
    p.add_argument("--teacher-minutes", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-no-generated", action="store_true",
                   help="leave out run 2 (TS-KD without generated images)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="rewrite the section from a previous run's printed JSON summary "
                        "(and its --out folder) without training anything")
    return p.parse_args(argv)


def _run(config: Any, records: list, out: Path, teacher: str, label: str) -> dict[str, Any]:
    from napari_lesion_diffkd.core.distillation.ts_kd.trainer import run_ts_kd
    from napari_lesion_diffkd.core.jobs import run_to_completion

    start = time.monotonic()

    def show(event: Any) -> None:
        if event.kind != "progress":
            print(f"[{label}] {event.kind}: {event.message}", file=sys.stderr, flush=True)

    result = run_to_completion(run_ts_kd(config, records, out, teacher=teacher), on_event=show)
    result["wall_seconds"] = time.monotonic() - start
    print(f"[{label}] done in {result['wall_seconds']:.0f} s: student Dice "
          f"{result['student']['val_dice']:.4f}", file=sys.stderr, flush=True)
    return result


def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from napari_lesion_diffkd.core.data.datasets import group_split, scan_pairs
    from napari_lesion_diffkd.core.distillation.ts_kd.config import TsKdConfig

    base = TsKdConfig.from_file(args.config)
    out = Path(args.out)
    if args.from_json:
        summary = json.loads(Path(args.from_json).read_text())
        write_section(summary, base, out, args.threads, args.teacher)
        return 0
    records = scan_pairs(args.data)
    m = args.stage_minutes
    _, val = group_split(records, base.val_fraction, base.split_seed)

    # The teacher's own held-out ids: TS-KD must be scored on images it never trained on.
    held_out_by_teacher = None
    try:
        from napari_lesion_diffkd.core.sam.loading import load_sam

        held = set(load_sam(args.teacher).config.get("provenance", {}).get("val_ids", []))
        held_out_by_teacher = all(r.id in held for r in val) if held else None
    except (LookupError, OSError):
        pass

    cfg1 = TsKdConfig.from_dict({**base.to_dict(), "teacher_minutes": args.teacher_minutes,
                                 "generator": {**base.generator, "minutes": m},
                                 "kd_minutes": m, "finetune_minutes": m})
    runs: dict[str, dict[str, Any]] = {}
    runs["tskd_generated"] = _run(cfg1, records, out / "tskd-generated", args.teacher,
                                  "ts-kd + generated")
    tuned = out / "tskd-generated" / "teacher"
    teacher2 = str(tuned) if tuned.is_dir() else args.teacher
    prompt = runs["tskd_generated"]["teacher"]["prompt"]
    if not args.skip_no_generated:
        cfg2 = TsKdConfig.from_dict({**cfg1.to_dict(), "generated_images": 0,
                                     "teacher_lora_rank": 0, "teacher_prompt": prompt})
        runs["tskd_real"] = _run(cfg2, records, out / "tskd-real", teacher2, "ts-kd real only")
    student_seconds = runs["tskd_generated"]["stage_seconds"]
    scratch_minutes = (student_seconds.get("kd_seconds", 0.0)
                       + student_seconds.get("finetune_seconds", 0.0)) / 60
    cfg3 = TsKdConfig.from_dict({**cfg1.to_dict(), "kd_steps": 0, "generated_images": 0,
                                 "finetune_minutes": scratch_minutes,
                                 "finetune_steps": 100000})
    runs["scratch"] = _run(cfg3, records, out / "scratch", args.teacher, "scratch")

    command = "nice -n 5 .venv/bin/python benchmarks/bench_tskd.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    summary = {"runs": runs, "held_out_by_teacher": held_out_by_teacher,
               "n_train": len(records) - len(val), "n_val": len(val), "command": command}
    print(json.dumps(summary, default=str, indent=1))
    if not args.no_write:
        write_section(summary, base, out, args.threads, args.teacher)
    return 0


def write_section(summary: dict[str, Any], base: Any, out: Path, threads: int,
                  teacher_name: str) -> None:
    """The ``tskd`` section of docs/benchmarks.md from a run summary and its files."""
    runs = summary["runs"]
    command = summary["command"]
    held_out_by_teacher = summary["held_out_by_teacher"]
    teacher = runs["tskd_generated"]["teacher"]
    prompt = teacher["prompt"]
    quality_path = out / "tskd-generated" / "generated_quality.json"
    gen = json.loads(quality_path.read_text()) if quality_path.is_file() else {}

    rows = []
    t_params = teacher["num_parameters"]
    rows.append(f"| teacher: {teacher['base']} + LoRA r={base.teacher_lora_rank} "
                f"(prompt `{prompt}`) | {t_params:,} | {teacher['size_mib_fp32']:.1f} | "
                f"{_fmt(teacher['val_dice'])} | {teacher['val_ms_median']:.0f} | "
                f"LoRA {teacher.get('lora_steps', 0)} steps, "
                f"{teacher.get('lora_trainable', 0):,} trainable |")
    rows.append(f"| teacher before LoRA (same prompt) | {teacher['num_parameters_base']:,} | "
                f"{teacher['num_parameters_base'] * 4 / 2**20:.1f} | "
                f"{_fmt(teacher.get('val_dice_base'))} | — | — |")
    labels = {"tskd_generated": "TS-KD student, transfer = train + generated",
              "tskd_real": "TS-KD student, transfer = train only",
              "scratch": "same student from scratch (labels only)"}
    for key, label in labels.items():
        if key not in runs:
            continue
        s = runs[key]["student"]
        st = runs[key]["stage_seconds"]
        steps = (f"KD {int(st.get('kd_steps', 0))} steps / {st.get('kd_seconds', 0) / 60:.1f} "
                 f"min, " if st.get("kd_steps") else "") + (
            f"fine-tune {int(st.get('finetune_steps', 0))} steps / "
            f"{st.get('finetune_seconds', 0) / 60:.1f} min")
        rows.append(f"| {label} | {s['num_parameters']:,} | {s['size_mib_fp32']:.1f} | "
                    f"{_fmt(s['val_dice'])} | {s['val_ms_median']:.0f} | {steps} |")
    gq = gen.get("generated_vs_train", {})
    vq = gen.get("validation_vs_train", {})
    gsum = gen.get("generator", {})
    res = base.generator_config().resolution

    def dice(key: str) -> float:
        return float(runs[key]["student"]["val_dice"]) if key in runs else float("nan")

    text = f"""## Task-specific KD (seed 002): SAM teacher -> ViT-Tiny + FPN student, PH2

Command: `{command}` ({datetime.date.today().isoformat()}, {platform.machine()}, torch
{torch.__version__.split('+')[0]}, {threads} thread(s)). The 2-core machine is shared with
other jobs: stage budgets are wall-clock, so the step counts below say how much training
each run really got (for the recorded run, about a quarter of an idle machine's: load ~8).

PH2 group-aware split: {summary['n_train']} training / {summary['n_val']} validation images;
the validation images are exactly the ones the teacher `{teacher_name}` held out in its own
training ({held_out_by_teacher}). Dice: mean over the validation images at each image's own
resolution, prompt-free. The teacher runs in automatic mode with the prompt chosen on the
training images (Dice by prompt there: {', '.join(f'{k} {v:.4f}' for k, v in
teacher['train_dice_by_prompt'].items())}; `none` = SAM without any prompt, as SAMed
fine-tunes it; `box` = a box around the whole image). MiB: fp32 weights (seed 002 Table 7's
"MB"; the student bundles store fp16, half that). ms: median time per image at its own
resolution, 1 thread, on the loaded machine.

| model | parameters | MiB | val Dice | ms | training |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Generated transfer images (seed 002 §3.2, Table 16's PSNR/MSE). Definition: each generated
image against its nearest training image (smallest MSE), both {res} x {res} RGB on the 0-255
scale, PSNR = 10 log10(255²/MSE). {gq.get('n', 0)} images from a
{gsum.get('num_parameters', 0):,}-parameter UNet (v target, cosine T = 1000, DDIM 25 steps)
trained {gsum.get('steps', 0)} steps ({gsum.get('seconds', 0) / 60:.1f} min): MSE
{_fmt(gq.get('mse_mean'), 1)}, PSNR {_fmt(gq.get('psnr_mean'), 2)} dB (PSNR of the mean MSE
{_fmt(gq.get('psnr_of_mean_mse'), 2)}). For scale, real *validation* images against their
nearest training image: MSE {_fmt(vq.get('mse_mean'), 1)}, PSNR {_fmt(vq.get('psnr_mean'), 2)}
dB. The seed reports 27.88 dB / MSE 106.0 for its PH2 transfer set without saying what each
image is compared with; on this definition even unseen real PH2 images score about 20 dB.

Reading (single seed, 32 validation images):
- The generator got {gsum.get('steps', 0)} steps in its budget; its images are far from
  real ({_fmt(gq.get('psnr_mean'), 1)} dB vs {_fmt(vq.get('psnr_mean'), 1)} dB for unseen real
  images: at this budget, coloured noise with a faint dark blob). Adding them to the transfer
  set changed the student's Dice by {dice('tskd_generated') - dice('tskd_real'):+.4f} against
  the training images alone. The mechanism works end to end; a useful generator needs far
  more than a few CPU minutes.
- LoRA in automatic mode took the teacher from {_fmt(teacher.get('val_dice_base'))} to
  {_fmt(teacher['val_dice'])} ({teacher.get('lora_steps', 0)} steps).
- At equal student training time, KD pre-training (transfer = training images) vs training
  from scratch: {dice('tskd_real') - dice('scratch'):+.4f} Dice. The seed's gains are largest
  with very few labels; all {summary['n_train']} labelled images were used here.
- Size: the standard ViT-Tiny student (5.54M encoder + 0.28M FPN head) is *larger* than
  this teacher, because `lesion-sam-tiny` is itself a 2.9M-parameter SAM, not the seed's
  93.7M ViT-B (its Table 7: 357 MB SAM vs 33 MB ViT-Tiny). With an official checkpoint as
  `--teacher` the same pipeline distils a 94M model into this 5.8M one (none is available
  offline here); for this teacher the `vit-mini` preset (0.92M, 3.5 MiB) is the
  size-reducing student (not run in this budget).
"""
    update_section(ROOT / "docs" / "benchmarks.md", SECTION, text)


if __name__ == "__main__":
    sys.exit(main())
