"""One command for every benchmark figure: runs the benchmark scripts with reduced, documented
image counts so that the whole set fits in about 30 minutes on the project's 2-core CPU.

Usage:
    python benchmarks/run_all.py [--quick] [--only NAME ...] [--no-write]
    make bench                  # the same, with nice -n 5

Each step is one script, run in its own process with the arguments listed in ``STEPS``; each
rewrites its own marked section of docs/benchmarks.md (``benchmarks/_report.py``) and prints
its tables, which this script passes through. Hand-written notes between the sections are
left as they are. At the end the ``run-all`` section records every step's command and wall
time. A step whose inputs are missing on this machine (the lite students of the ablation and
the active-learning run live in the git-ignored ``runs/`` folder: train them first, commands
in docs/reproducing.md) is skipped with a note, and its section keeps its earlier numbers.

Image counts here vs the scripts' defaults (the full-split numbers are in the model cards):

* students: 6 validation images per modality (default: all; the published table used 40);
* ablation: 4 PH2 validation images (published: 16);
* models: 8 validation images per model, the lite student's published 250-step sampler on 1;
* onnx: 6 images, 3 timings each; sampling: 4 images; STAPLE: 3 repeats (default 7);
* sam-prompts: all 281 held-out images of the four datasets (about 2 minutes);
* gui-responsiveness: a real napari viewer (under xvfb-run without a display), its defaults
  (about 1.5 minutes).

``--quick`` divides the counts further (a smoke run of a few minutes, not for the docs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402

# name, script and arguments, inputs that must exist (relative to the repository root).
STEPS: list[tuple[str, list[str], list[str]]] = [
    ("staple", ["bench_staple.py", "--repeats", "3", "--k", "20"], []),
    ("sampling", ["bench_sampling.py", "--model", "dermoscopy-teacher", "--k", "8",
                  "--images", "4", "--threads", "1"], []),
    ("teachers", ["bench_teachers.py", "--modalities", "dermoscopy", "ultrasound", "ct",
                  "--from-cards"], []),
    ("students", ["bench_students.py", "--modalities", "dermoscopy", "ultrasound", "ct",
                  "--images", "6", "--threads", "1"], []),
    ("ablation", ["bench_ablation.py", "--images", "4", "--threads", "1"],
     ["runs/ablation-nokd/config.json", "runs/ablation-general/config.json",
      "runs/ablation-efkd/config.json"]),
    ("models", ["bench_models.py", "--images", "8", "--k", "8", "--threads", "1",
                "--lite-images", "1"], []),
    ("onnx", ["bench_onnx.py", "--images", "6", "--repeats", "3", "--threads", "1", "2"], []),
    ("sam-prompts", ["bench_sam_prompts.py", "--threads", "1"], []),
    ("gui-responsiveness", ["bench_gui_responsiveness.py"], []),
    ("active-learning", ["al_report.py", "runs/al-sim-ph2"], ["runs/al-sim-ph2"]),
]
QUICK = {"--images": "2", "--repeats": "1", "--lite-images": "0"}
#: Steps whose script has no ``--no-write`` (skipped by ``run_all.py --no-write``).
ALWAYS_WRITE = {"teachers"}


def step_argv(args: list[str], quick: bool) -> list[str]:
    """The step's arguments, with ``--quick`` counts swapped in."""
    if not quick:
        return list(args)
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a in QUICK:
            out[i + 1] = QUICK[a]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run every benchmark (see the docstring)")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--only", nargs="+", default=None, choices=[s[0] for s in STEPS])
    parser.add_argument("--no-write", action="store_true",
                        help="print only; docs/benchmarks.md is left as it is")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done: list[tuple[str, str, float, str]] = []
    total_start = time.perf_counter()
    for name, script_args, needs in STEPS:
        if args.only and name not in args.only:
            continue
        no_write = ["--no-write"] if args.no_write and name not in ALWAYS_WRITE else []
        argv_step = step_argv(script_args, args.quick) + no_write
        command = "python benchmarks/" + shlex.join(argv_step)
        missing = [n for n in needs if not (ROOT / n).exists()]
        if args.no_write and name in ALWAYS_WRITE:
            done.append((name, command, 0.0, "skipped: the script always writes"))
            continue
        if missing:
            print(f"== {name}: skipped, missing {', '.join(missing)}", flush=True)
            done.append((name, command, 0.0, f"skipped: missing {', '.join(missing)}"))
            continue
        print(f"== {name}: {command}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / argv_step[0]),
                               *argv_step[1:]], cwd=ROOT, env=env)
        seconds = time.perf_counter() - start
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        print(f"== {name}: {status} in {seconds:.0f} s", flush=True)
        done.append((name, command, seconds, status))
    total = time.perf_counter() - total_start
    lines = [
        "## Reproducing every figure: `make bench`",
        "",
        f"`make bench` (= `nice -n 5 python benchmarks/run_all.py`) ran every step below on "
        f"{datetime.date.today().isoformat()} in **{total / 60:.1f} minutes** of wall time "
        "(the 2-core VM shared with other work; alone it is faster). Image counts are reduced "
        "to fit in 30 minutes; see the header of `benchmarks/run_all.py` and "
        "docs/reproducing.md for the full-size commands. The notes written under some "
        "sections (teachers, students, ablation) discuss the full-size runs (students: 40 "
        "images per modality, ablation: 16); their numbers are in this file's git history, "
        "the tables above are from the reduced run.",
        "",
        "| section | command | wall time | status |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | `{c}` | {s:.0f} s | {st} |" for n, c, s, st in done]
    text = "\n".join(lines)
    print(text)
    if not args.no_write and not args.quick and not args.only:
        update_section(ROOT / "docs" / "benchmarks.md", "run-all", text)
    return 0 if all(st == "ok" or st.startswith("skipped") for *_, st in done) else 1


if __name__ == "__main__":
    sys.exit(main())
