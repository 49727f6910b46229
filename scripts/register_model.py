"""Evaluate a training run on its own validation split and register it under models/.

Usage:
    python scripts/register_model.py RUN_DIR [--models-dir models] [--data-licence TEXT]

Reads RUN_DIR/config.json (written by ``lesion-diffkd train``), re-creates the validation
split from its provenance (only images the model never trained on), segments each one as
``lesion-diffkd predict`` would, stores Dice/IoU/HD95 in the config, copies the bundle
(config.json + model.safetensors) to MODELS_DIR/<name>/ and writes the model card README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from napari_lesion_diffkd.core.bundle import CONFIG_NAME, WEIGHTS_NAME, load_bundle
from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.evaluation import evaluate_bundle, gflops_per_image
from napari_lesion_diffkd.core.jobs import run_to_completion

LICENCES = {
    "ph2_dermoscopy": "PH2 (Mendonça et al., EMBC 2013): free for research and education with "
    "citation; no formal open licence - treat as non-commercial research use",
    "busbra_breast_ultrasound": "BUS-BRA (Gómez-Flores et al., Med. Phys. 2024): MIT-style "
    "dataset licence, cite the article and keep the notice",
    "ddti_thyroid_ultrasound": "DDTI (Pedraza et al., SPIE 2015): open access, no explicit "
    "licence - research use with citation",
    "covid19_ct_infection": "COVID-19 CT Lung and Infection Segmentation Dataset (Ma et al., "
    "Zenodo 2020): reported CC BY 4.0, Radiopaedia scans CC BY-NC-SA 3.0 - non-commercial "
    "research use with attribution",
}


def model_card(config: dict, evaluation: dict) -> str:
    prov = config["provenance"]
    split = prov["split"]
    tc = prov["train_config"]
    datasets = sorted({Path(d).name for d in prov.get("data", [])})
    m = evaluation["mean"]
    arch = config["network"]["_class_name"]
    if config.get("objective") == "segmentation":
        what = (f"a plain supervised segmentation network ({arch}): one mask per image, its "
                "uncertainty map is the entropy of its own foreground probability. It is the "
                "baseline a user would otherwise pick, and the pre-trained condition network "
                "of the UniSegDiff-style teacher.")
    else:
        what = (f"a conditional diffusion network ({arch}, objective "
                f"`{config.get('objective', 'diffusion')}`) that denoises a lesion mask given the "
                "image, so each run draws K different plausible masks; their spread is the "
                "uncertainty map and STAPLE fuses them into the consensus.")
    lines = [
        f"# {config['name']}",
        "",
        f"{config['role'].capitalize()} model for **{config['modality']}** lesion segmentation: "
        + what,
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {config['num_parameters']:,} |",
        f"| input | {config['input']['channels']}-channel image resized to "
        f"{config['input']['size']} x {config['input']['size']} px, [-1, 1] |",
        f"| prediction target | {config['prediction_target']} |",
        f"| noise schedule | {config['schedule']['kind']}, T = {config['schedule']['num_timesteps']} |",
        f"| default sampler | {config['sampler'] if config.get('objective') != 'segmentation' else 'none (one forward pass)'} |",
        f"| compute per image | {config['metrics']['gflops_per_image']:.2f} GFLOPs at "
        f"{config['metrics']['eval_num_samples']} sample(s), working resolution |"
        if "gflops_per_image" in config.get("metrics", {}) else None,
        f"| weights | fp16 safetensors, {WEIGHTS_NAME} |",
        f"| package version | {config['package_version']} (torch {config['torch_version']}) |",
        "",
        "## Data and licence",
        "",
    ]
    for name in datasets:
        lines.append(f"- `{name}`: {LICENCES.get(name, 'see the dataset README')}")
    lines += [
        "",
        "The data are read from `../shared/data` at training time and are not distributed "
        "with this project.",
        "",
        "## Split",
        "",
        f"Group-aware (patient / case / scan never on both sides), {split['val_fraction']:.0%} "
        f"of the images per dataset, seed {split['seed']}: {split['n_train']} training and "
        f"{split['n_val']} validation images. The validation ids are listed in `config.json` "
        "(`provenance.split.val_ids`); the model never trained on them.",
        "",
        *([f"**Warning:** only {split['n_val']} validation images: the scores below are not "
           "comparable with scores on dozens of images.", ""] if split["n_val"] < 10 else []),
        "## Validation metrics",
        "",
        "Computed by `scripts/register_model.py` at each image's original resolution, "
        + ("with one forward pass (mask = probability > 0.5). "
           if config.get("objective") == "segmentation" else
           f"with the default sampler, K = {evaluation['settings']['num_samples']} and "
           f"{evaluation['settings']['fusion']} fusion (seed 0). ")
        + "HD95 in pixels, over images whose consensus is not empty "
        f"({evaluation['mean'].get('n_undefined_distance', 0)} empty).",
        "",
        "| split | n | Dice | IoU | HD95 (px) | sensitivity | specificity |",
        "|---|---|---|---|---|---|---|",
        f"| all validation | {evaluation['n']} | {m['dice']:.4f} | {m['iou']:.4f} | "
        f"{m['hd95']:.2f} | {m['sensitivity']:.4f} | {m['specificity']:.4f} |",
    ]
    for name, d in evaluation["by_dataset"].items():
        lines.append(f"| {name} | {d['n']} | {d['dice']:.4f} | {d['iou']:.4f} | "
                     f"{d['hd95']:.2f} | {d['sensitivity']:.4f} | {d['specificity']:.4f} |")
    lines += [
        "",
        f"Median Dice {evaluation['median']['dice']:.4f}; median CPU time per image "
        f"(K = {evaluation['settings']['num_samples']}, 2-core VM) "
        f"{evaluation['seconds_per_image_median']:.3f} s.",
        "",
        *_distillation_lines(config),
        "## Training",
        "",
        f"{prov['steps']} steps of batch {tc['batch_size']} in {prov['train_seconds'] / 60:.1f} "
        f"minutes on a 2-core CPU; AdamW lr {tc['lr']} with warm-up and cosine decay, EMA "
        f"{tc['ema_decay']}, bf16 autocast: {tc['amp_bf16']}; {_augmentation_text(tc)}. "
        "Weights with the best validation Dice "
        "(at model resolution, checked every "
        f"{tc['val_every']} steps) are kept.",
        "",
        "Command:",
        "",
        "```",
        f"{prov.get('command')}",
        f"python scripts/register_model.py {prov.get('out_dir', 'RUN_DIR')}",
        "```",
        "",
        f"Code commit: `{prov.get('git_commit')}`.",
        "",
        "## Limitations",
        "",
        "- Trained on one public dataset per modality, at low resolution; not a medical device, "
        "for research and annotation assistance only.",
        "- Uncertainty reflects the diffusion samples' disagreement, not calibrated "
        "probabilities.",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)


def _augmentation_text(tc: dict) -> str:
    """What the training run's augmentation did, from its stored config."""
    if tc.get("objective") == "trajectory":
        return ("left-right flips" + (" and up-down flips" if tc.get("vertical_flip", True)
                                      else "") + " of image, noise and teacher mask together")
    if not tc.get("augment", True):
        return "no augmentation"
    parts = ["left-right flips"]
    if tc.get("vertical_flip", True):
        parts.append("up-down flips")
    if tc.get("rotate90", True):
        parts.append("90° rotations")
    parts += ["small affine", "brightness/contrast/gamma"]
    if tc.get("dropout_holes", 4):
        parts.append(f"coarse dropout (up to {tc['dropout_holes']} holes)")
    return ", ".join(parts)


def _distillation_lines(config: dict) -> list[str]:
    """Teacher and recipe of a distilled student (empty for other models)."""
    tc = config["provenance"].get("train_config", {})
    if not tc.get("teacher"):
        return []
    if tc.get("objective") == "trajectory":
        recipe = (f"trajectory distillation: {tc['trajectory_noises']} cached teacher masks "
                  "(teacher's default sampler, one fixed initial noise each) per training image; "
                  "the student maps the same noise to the teacher's mask in one call at "
                  f"t = T - 1; EFKD edge/body weighting (tau {tc['efkd_tau']}, lambda_e "
                  f"{tc['efkd_lambda_edge']}, lambda_b {tc['efkd_lambda_body']}) plus "
                  f"{tc['trajectory_gt_weight']} x (Dice + BCE) against the labels")
        if tc.get("trajectory_spread_weight"):
            recipe += (f"; plus {tc['trajectory_spread_weight']:g} x the spread term "
                       "(`kd_losses.spread_crps`: fair CRPS between "
                       f"{tc.get('trajectory_spread_samples')} student samples of an image and "
                       "the teacher's per-pixel vote fraction over its cached masks)")
        if tc.get("init_bundle"):
            recipe += f"; started from the weights of `{tc['init_bundle']}`"
    else:
        recipe = (f"seed 000 KD ({tc.get('kd_method')}, weight {tc.get('kd_weight')}) added to "
                  "the diffusion and boundary-aware losses")
    lines = ["## Distillation", "", f"- teacher: `{tc['teacher']}`", f"- recipe: {recipe}"]
    cal = config["provenance"].get("spread_calibration")
    if cal:
        scores = ", ".join(f"{c['factor']:g}: {c['variance_correlation']:.3f}"
                           for c in cal["candidates"])
        lines.append(
            f"- spread calibration: `sampler.spread_inflation` = {cal['factor']:g}, fitted by "
            f"`lesion-diffkd calibrate-spread` against `{cal['teacher']}` on {cal['num_images']} "
            f"training images (K = {cal['num_samples']}, same noises for both models): mean "
            f"hard pixel-variance correlation per factor {scores}. Each of the K samples' "
            "deviation from their mean is multiplied by the factor (K = 1 is unchanged). "
            f"Command: `{cal.get('command')}`")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--models-dir", default=str(Path(__file__).resolve().parents[1] / "models"))
    parser.add_argument("--samples", type=int, default=None)
    args = parser.parse_args(argv)

    run = Path(args.run_dir)
    bundle = load_bundle(run)
    prov = bundle.config["provenance"]
    records = [r for folder in prov["data"] for r in scan_pairs(folder)]
    val_ids = set(prov["split"]["val_ids"])
    val = [r for r in records if r.id in val_ids]
    if len(val) != len(val_ids):
        print(f"error: found {len(val)} of {len(val_ids)} validation images", file=sys.stderr)
        return 1
    k = args.samples or bundle.config.get("sampler", {}).get("num_samples", 8)
    if bundle.config.get("objective") == "segmentation":
        k = 1
    evaluation = run_to_completion(evaluate_bundle(bundle, val, num_samples=k))
    evaluation["settings"] = {"num_samples": k, "fusion": "staple"}
    config = json.loads((run / CONFIG_NAME).read_text())
    m = evaluation["mean"]
    config["metrics"].update({"dice": m["dice"], "iou": m["iou"], "hd95_px": m["hd95"],
                              "n_val": evaluation["n"], "by_dataset": evaluation["by_dataset"],
                              "eval_num_samples": k, "eval_fusion": "staple",
                              "gflops_per_image": gflops_per_image(bundle, k)})
    config["provenance"]["out_dir"] = str(run)
    dest = Path(args.models_dir) / config["name"]
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run / WEIGHTS_NAME, dest / WEIGHTS_NAME)
    (dest / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (dest / "README.md").write_text(model_card(config, evaluation))
    print(json.dumps({"name": config["name"], "dice": m["dice"], "iou": m["iou"],
                      "hd95_px": m["hd95"], "n_val": evaluation["n"], "dest": str(dest)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
