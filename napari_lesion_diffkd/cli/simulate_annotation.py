"""``lesion-diffkd simulate-annotation``: prompts an annotator needs to reach a Dice target
(NoC@85, NoC@90) per workflow, with the ground truth as the oracle
(``core/annotation_sim``)."""

from __future__ import annotations

import argparse
import json
import sys

WORKFLOW_NAMES = "sam-first,model-first,uncertainty-guided,teacher-first,refined-first"
#: ``core.annotation_sim.triage.SCORES`` and ``DEFAULT_SCORE``, spelled out so that building
#: the parser imports no core module (a test checks they match).
TRIAGE_SCORES = ("sample_disagreement", "boundary_entropy", "mean_entropy",
                 "refine_disagreement", "combined_disagreement")
DEFAULT_TRIAGE_SCORE = "sample_disagreement"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate-annotation", help="simulate an annotator: clicks to a Dice target (NoC)",
        description="Plays an annotator whose oracle is the ground-truth mask, through the "
                    "app's own segmentation and SAM-correction code, in each workflow: "
                    "sam-first (box, then clicks), model-first (the default student's "
                    "consensus, then clicks), uncertainty-guided (as model-first, clicking "
                    "where the app's uncertainty map points), teacher-first, refined-first "
                    "(the consensus refined by SAM from its box with no user prompt). Writes "
                    "summary.json, images.csv, triage.json and settings.json to --out.")
    p.add_argument("--data", required=True,
                   help="dataset folder(s) with images/ and masks/, comma-separated")
    p.add_argument("--workflows", default=WORKFLOW_NAMES,
                   help=f"comma-separated ({WORKFLOW_NAMES})")
    p.add_argument("--target", default="0.85,0.90", help="Dice targets, comma-separated")
    p.add_argument("--max-prompts", type=int, default=20,
                   help="prompt budget per image; a failure counts this many (default 20)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default=None,
                   help="first-mask model for every folder (default: the modality's student)")
    p.add_argument("--teacher", default=None,
                   help="teacher-first model (default: the modality's teacher)")
    p.add_argument("--sam", default="auto",
                   help="promptable model: auto (medsam-lite if it loads, else "
                        "lesion-sam-tiny), a registered name, a bundle or checkpoint path")
    p.add_argument("--modality", default=None, choices=("dermoscopy", "ultrasound", "ct"),
                   help="modality of every folder (default: from the folder name / colour)")
    p.add_argument("--images", type=int, default=None,
                   help="at most N images per folder, evenly spaced")
    p.add_argument("--split", default="validation", choices=("validation", "train", "all"),
                   help="validation: the project's group split (20%%, seed 0); train: the "
                        "rest; all: every pair")
    p.add_argument("--restart-below", type=float, default=0.5,
                   help="discard a first mask below this Dice for a box (default 0.5)")
    p.add_argument("--uncertainty-threshold", type=float, default=0.5,
                   help="uncertain-region threshold, bits of entropy (default 0.5)")
    p.add_argument("--triage-score", default=DEFAULT_TRIAGE_SCORE,
                   choices=TRIAGE_SCORES,
                   help=f"per-image score the triage ranks by (default {DEFAULT_TRIAGE_SCORE}, "
                        "chosen on training images)")
    p.add_argument("--samples", type=int, default=None, help="K samples (default: the model's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from exc


def run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.core.jobs import JobEvent, run_to_completion

    def show(event: JobEvent) -> None:
        if event.kind == "log":
            sys.stderr.write(f"\n{event.message}\n")
        elif event.total:
            sys.stderr.write(f"\r{event.step}/{event.total} {event.message[:90]:<90}")

    try:
        import torch

        from napari_lesion_diffkd.core.annotation_sim import Policy, simulate_annotation
        from napari_lesion_diffkd.core.annotation_sim.inputs import collect_records
        from napari_lesion_diffkd.core.annotation_sim.model_setup import (
            build_models,
            load_promptable,
        )
        from napari_lesion_diffkd.core.annotation_sim.report import clean_json, write_report
        from napari_lesion_diffkd.core.annotation_sim.workflows import check_workflows

        if args.threads:
            torch.set_num_threads(args.threads)
        workflows = check_workflows(args.workflows.split(","))
        policy = Policy(targets=tuple(_floats(args.target, "--target")),
                        max_prompts=args.max_prompts, restart_below=args.restart_below,
                        uncertainty_threshold=args.uncertainty_threshold).check()
        records = collect_records([d for d in args.data.split(",") if d.strip()],
                                  args.split, args.images)
        backend, note = load_promptable(args.sam, device=args.device)
        if note:
            print(note, file=sys.stderr)
        sam_name = getattr(backend.sam, "name", str(args.sam))
        models = build_models(records, backend, sam_name, model=args.model,
                              teacher=args.teacher, modality=args.modality,
                              need_teacher="teacher-first" in workflows,
                              num_samples=args.samples, device=args.device)
        result = run_to_completion(simulate_annotation(records, models, workflows, policy,
                                                       args.triage_score), on_event=show)
        paths = write_report(result, args.out)
    except (OSError, LookupError, ValueError, BundleError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"\nerror: {message}", file=sys.stderr)
        return 2
    sys.stderr.write("\n")
    brief = {w: {k: v for k, v in s.items() if k != "datasets"}
             for w, s in result.summary.items()}
    print(json.dumps(clean_json({"out": str(args.out), "sam": sam_name, "summary": brief,
                                 "files": {k: str(v) for k, v in paths.items()}})))
    return 0
