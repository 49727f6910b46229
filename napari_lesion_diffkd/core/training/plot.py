"""PNG plot of a training log (loss and validation curves) with matplotlib's Agg backend."""

from __future__ import annotations

import json
from pathlib import Path


def plot_training_log(log_path: str | Path, png_path: str | Path) -> Path:
    """Plot ``train_log.jsonl`` (loss per step; validation Dice and HD95) into ``png_path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    steps, losses, vsteps, dices, hd95s = [], [], [], [], []
    for line in Path(log_path).read_text().splitlines():
        entry = json.loads(line)
        if "loss" in entry:
            steps.append(entry["step"])
            losses.append(entry["loss"])
        if "val_dice" in entry:
            vsteps.append(entry["step"])
            dices.append(entry["val_dice"])
            hd95s.append(entry.get("val_hd95", float("nan")))
    fig = Figure(figsize=(9, 3.2), dpi=100)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.plot(steps, losses)
    ax1.set(title="training loss (EMA)", xlabel="step", yscale="log")
    ax2.plot(vsteps, dices, marker="o")
    ax2.set(title="validation Dice", xlabel="step")
    ax3.plot(vsteps, hd95s, marker="o", color="tab:red")
    ax3.set(title="validation HD95 (px, model res.)", xlabel="step")
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path)
    return png_path
