"""Annotation effort: prompts to a Dice target (NoC@85, NoC@90) per workflow, and triage.

Usage:
    nice -n 5 .venv/bin/python benchmarks/bench_annotation.py [--images 24]
        [--sams lesion-sam-tiny medsam-lite] [--threads 2] [--no-write]
        [--from-json FILE]   (re-render a saved run without simulating again)

Runs ``core.annotation_sim.simulate_annotation`` (what ``lesion-diffkd simulate-annotation``
runs) on the validation split of each dataset: the project's group split
(``core.data.datasets.group_split``, 20%, seed 0), which is exactly the set of validation ids
stored in every registered student, teacher and ``lesion-sam-tiny`` (none trained on them).
``--images N`` takes N of them per dataset, evenly spaced over the sorted ids (a subset for
the 2-core CPU). Every workflow, targets 0.85 and 0.90, max 20 prompts, each SAM in turn
(``medsam-lite`` skipped with a note when it does not load). The student's and teacher's
first masks are computed once per image and reused for every SAM.

Writes the ``annotation-noc`` section at the end of docs/benchmarks.md unless ``--no-write``,
and the raw results to ``--json`` (default /tmp/bench_annotation.json).
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

SECTION = "annotation-noc"
DATASETS = ("ph2_dermoscopy", "busbra_breast_ultrasound", "ddti_thyroid_ultrasound",
            "covid19_ct_infection")
#: The issue's done-when datasets.
TARGET_DATASETS = DATASETS[:3]
WORKFLOWS = ("sam-first", "model-first", "uncertainty-guided", "teacher-first")
OURS = ("model-first", "uncertainty-guided", "teacher-first")
RATIO_TARGET = 0.60
TRIAGE_TARGET = 0.70


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="annotation NoC benchmark (see module docstring)")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--images", type=int, default=24, help="validation images per dataset")
    p.add_argument("--sams", nargs="+", default=["lesion-sam-tiny", "medsam-lite"])
    p.add_argument("--workflows", nargs="+", default=list(WORKFLOWS),
                   help="e.g. without teacher-first where the teacher is too slow for the CPU")
    p.add_argument("--max-prompts", type=int, default=20)
    p.add_argument("--restart-below", type=float, default=0.5)
    p.add_argument("--uncertainty-threshold", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="/tmp/bench_annotation.json")
    p.add_argument("--from-json", nargs="+", default=None,
                   help="saved run(s) to report (several: their SAM runs side by side)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--triage-only", action="store_true",
                   help="only the triage pass (whole validation splits) into --json")
    p.add_argument("--triage-json", default=None,
                   help="a --triage-only result to report instead of the NoC subset's")
    return p.parse_args(argv)


def memoised(proposer, store: dict):
    """The same proposer, computing each image's first mask once (the SAM runs reuse it)."""
    def propose(image, key):
        if key not in store:
            store[key] = yield from proposer(image, key)
        return store[key]
    return propose


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from napari_lesion_diffkd.core.annotation_sim import Policy, simulate_annotation
    from napari_lesion_diffkd.core.annotation_sim.inputs import collect_records
    from napari_lesion_diffkd.core.annotation_sim.model_setup import (
        build_models,
        load_promptable,
    )
    from napari_lesion_diffkd.core.jobs import run_to_completion

    torch.set_num_threads(args.threads)
    policy = Policy(targets=(0.85, 0.90), max_prompts=args.max_prompts,
                    restart_below=args.restart_below,
                    uncertainty_threshold=args.uncertainty_threshold).check()
    runs: dict[str, Any] = {}
    notes: list[str] = []
    first_masks: dict[str, dict] = {}
    for sam_name in args.sams:
        try:
            backend, _ = load_promptable(sam_name)
        except Exception as exc:  # noqa: BLE001 - any load failure skips this SAM, noted
            notes.append(f"{sam_name} skipped: {exc}")
            print(notes[-1], flush=True)
            continue
        runs[sam_name] = {}
        for name in args.datasets:
            records = collect_records([Path(args.data_root) / name], "validation", args.images)
            models = build_models(records, backend, sam_name,
                                  need_teacher="teacher-first" in args.workflows)
            for role in ("students", "teachers"):
                for d, prop in getattr(models, role).items():
                    getattr(models, role)[d] = memoised(
                        prop, first_masks.setdefault(f"{role}:{d}", {}))
            start = time.perf_counter()
            result = run_to_completion(simulate_annotation(records, models, args.workflows,
                                                           policy))
            runs[sam_name][name] = {"summary": result.summary, "triage": result.triage[name],
                                    "rows": result.rows, "settings": result.settings,
                                    "wall_s": time.perf_counter() - start}
            Path(args.json).with_suffix(".partial.json").write_text(json.dumps(
                {"summary": {"runs": runs, "notes": notes, "images": args.images,
                             "threads": args.threads, "policy": {
                                 "restart_below": policy.restart_below,
                                 "uncertainty_threshold": policy.uncertainty_threshold,
                                 "max_prompts": policy.max_prompts}},
                 "command": "(partial)"}, default=float))
            s = result.summary
            print(f"{sam_name} {name}: " + ", ".join(
                f"{w} NoC@90 {s[w]['noc@90']:.2f} fail {s[w]['failed@90']:.2f}"
                for w in args.workflows) + f"; triage top30 {result.triage[name]['top30']}",
                flush=True)
    return {"runs": runs, "notes": notes, "images": args.images, "threads": args.threads,
            "policy": {"restart_below": policy.restart_below,
                       "uncertainty_threshold": policy.uncertainty_threshold,
                       "max_prompts": policy.max_prompts}}


def measure_triage(args: argparse.Namespace) -> dict[str, Any]:
    """Triage on the *whole* validation split of each dataset (the student alone is cheap;
    the NoC subset is too small to hold enough bad masks)."""
    from napari_lesion_diffkd.core.annotation_sim.inputs import collect_records
    from napari_lesion_diffkd.core.annotation_sim.model_setup import build_models
    from napari_lesion_diffkd.core.annotation_sim.simulate import TRIAGE_BELOW
    from napari_lesion_diffkd.core.annotation_sim.triage import triage_shares
    from napari_lesion_diffkd.core.data.datasets import read_pair
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.metrics import dice

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {}
    for name in args.datasets:
        records = collect_records([Path(args.data_root) / name], "validation")
        models = build_models(records, None, "none")
        propose = models.students[name]
        scores, dices = [], []
        for rec in records:
            image, gt = read_pair(rec)
            result = run_to_completion(propose(image, (name, rec.id)))
            scores.append(result.scores["sample_disagreement"])
            dices.append(dice(result.mask, gt))
        out[name] = {"score": "sample_disagreement", "below": TRIAGE_BELOW,
                     "model": models.names[f"student:{name}"],
                     **triage_shares(scores, dices, TRIAGE_BELOW)}
        print(name, out[name], flush=True)
    return out


def _f(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def triage_table(summary: dict[str, Any]) -> dict[str, Any]:
    """``{dataset: triage}``: the whole-split pass when given, else the NoC subset's."""
    if "triage_full" in summary:
        return summary["triage_full"]
    first = next(iter(summary["runs"].values()), {})
    return {name: run["triage"] for name, run in first.items()}


def verdicts(runs: dict[str, Any], triage: dict[str, Any]) -> list[str]:
    """The done-when checks, one line each."""
    lines = []
    for sam_name, per in runs.items():
        for name in TARGET_DATASETS:
            if name not in per:
                continue
            s = per[name]["summary"]
            best = min((w for w in OURS if w in s), key=lambda w: (s[w]["noc@90"],
                                                                   s[w]["failed@90"]))
            ratio = s[best]["noc@90"] / s["sam-first"]["noc@90"]
            fail_ok = s[best]["failed@90"] <= s["sam-first"]["failed@90"]
            met = ratio <= RATIO_TARGET and fail_ok
            lines.append(
                f"- {sam_name}, {name}: best workflow `{best}` NoC@90 {s[best]['noc@90']:.2f} vs "
                f"sam-first {s['sam-first']['noc@90']:.2f} = **{ratio:.0%}** of the prompts "
                f"(target <= {RATIO_TARGET:.0%}); failures {s[best]['failed@90']:.0%} vs "
                f"{s['sam-first']['failed@90']:.0%} -> **{'met' if met else 'not met'}**")
    for name in TARGET_DATASETS:
        if name in triage:
            t = triage[name]
            if not t["bad"]:
                lines.append(f"- triage, {name}: no consensus mask below 0.85 among "
                             f"{t['images']} images -> **cannot be measured**")
                continue
            ok = t["top30"] is not None and t["top30"] >= TRIAGE_TARGET
            lines.append(f"- triage, {name}: the 30% most uncertain images hold "
                         f"{_f(t['top30'], '.0%')} of the {t['bad']} consensus masks below 0.85 "
                         f"(target >= {TRIAGE_TARGET:.0%}) -> **{'met' if ok else 'not met'}**")
    return lines


def _images(images: Any) -> str:
    if isinstance(images, dict):
        return ", ".join(f"{n} with `{sam}`" for sam, n in images.items())
    return str(images)


def render(summary: dict[str, Any], command: str) -> str:
    pol = summary["policy"]
    lines = [
        "## Annotation effort: clicks to a Dice target (NoC)",
        "",
        f"Command(s): `{command}` ({datetime.date.today().isoformat()}, {platform.machine()}, "
        f"torch {torch.__version__}, {summary['threads']} thread(s), 2-core CPU shared with "
        "other work). `lesion-diffkd simulate-annotation` runs the same code "
        "(`core/annotation_sim`). Images: the validation split of each dataset (group split, "
        "20%, seed 0: no registered model trained on them), "
        f"**a subset of {_images(summary['images'])} per dataset** (evenly spaced ids) to "
        "fit the CPU. "
        "The annotator's oracle is the ground truth; the policy (in "
        "`core/annotation_sim/__init__.py`) is the same for every workflow: accept at Dice "
        f">= 0.90; a first mask below Dice {pol['restart_below']} is replaced by a box "
        "(sam-first's empty first mask always is); a click that makes the mask worse before "
        "any box is undone and replaced by a box (both count); otherwise one click at a time "
        "by the standard "
        "rule (centre of the largest error region, positive on missed lesion, negative on "
        "taken background; all clicks so far plus the previous answer as mask prompt); "
        "uncertainty-guided clicks first in the most uncertain unreviewed region (entropy > "
        f"{pol['uncertainty_threshold']} bits). NoC: a box and a click count one each, 0 "
        f"when the first mask is accepted, {pol['max_prompts']} for an image that never gets "
        "there (also counted as failed). *no prompt*: share accepted as shown, at 0.90. "
        "*s/img*: model seconds per image (first model + SAM encoding + decoder calls).",
        "",
    ]
    for note in summary["notes"]:
        lines += [f"Note: {note}", ""]
    for sam_name, per in summary["runs"].items():
        lines += [f"### Promptable model `{sam_name}`", "",
                  "| dataset | n | workflow | first Dice | NoC@85 | NoC@90 | failed@85 | "
                  "failed@90 | no prompt @85 / @90 | restarts | undone -> box | s/img |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, run in per.items():
            for w, s in run["summary"].items():
                lines.append(
                    f"| {name} | {s['images']} | {w} | {s['first_dice']:.3f} | "
                    f"{s['noc@85']:.2f} | {s['noc@90']:.2f} | {s['failed@85']:.0%} | "
                    f"{s['failed@90']:.0%} | {s['no_prompt@85']:.0%} / {s['no_prompt@90']:.0%}"
                    f" | {s['restarted']:.0%} | {s['undone_to_box']:.0%}"
                    f" | {s['seconds_per_image']:.2f} |")
        lines.append("")
    triage = triage_table(summary)
    whole = "triage_full" in summary
    lines += ["### Triage: bad consensus masks among the most uncertain images", "",
              "Default student, images ranked by `sample_disagreement` (most uncertain first); "
              "share of the consensus masks below Dice 0.85 that fall in the top 10 / 20 / 30% "
              "(a random order would catch about 10 / 20 / 30%). "
              + ("On the **whole** validation split of each dataset (the student alone is "
                 "cheap; `--triage-only`)." if whole else "On the NoC subset."), "",
              "| dataset | n | masks < 0.85 | top 10% | top 20% | top 30% |",
              "|---|---|---|---|---|---|"]
    for name, t in triage.items():
        lines.append(f"| {name} | {t['images']} | {t['bad']} | {_f(t['top10'], '.0%')} | "
                     f"{_f(t['top20'], '.0%')} | {_f(t['top30'], '.0%')} |")
    lines += ["", "Done-when targets (issue 12):", ""] + verdicts(summary["runs"], triage)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.triage_only:
        Path(args.json).write_text(json.dumps(measure_triage(args), default=float))
        return 0
    if args.from_json:
        saved = [json.loads(Path(f).read_text()) for f in args.from_json]
        summary = saved[0]["summary"]
        for extra in saved[1:]:
            for sam, per in extra["summary"]["runs"].items():
                summary["runs"].setdefault(sam, {}).update(per)
            summary["notes"] += extra["summary"]["notes"]
        summary["images"] = "n (the tables' column)"
        command = "`; `".join(s["command"] for s in saved)
    else:
        summary = measure(args)
        command = "nice -n 5 .venv/bin/python benchmarks/bench_annotation.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        Path(args.json).write_text(json.dumps({"summary": summary, "command": command.strip()},
                                              default=float))
    if args.triage_json:
        summary["triage_full"] = json.loads(Path(args.triage_json).read_text())
    text = render(summary, command.strip())
    print(text)
    if not args.no_write:
        update_section(ROOT / "docs" / "benchmarks.md", SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
