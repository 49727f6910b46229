"""Take the user guide's screenshots under Xvfb: ``make screenshots``.

For each modality with a registered model, opens a real image from the shared data folder in
the demo window, runs the segmentation, and saves the window to docs/images/<modality>.png.
Run as ``xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/make_screenshots.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOTS = [
    # (modality, dataset folder, image index, model)
    ("dermoscopy", "ph2_dermoscopy", 0, "dermoscopy-teacher"),
    ("ultrasound", "busbra_breast_ultrasound", 0, "ultrasound-teacher"),
    ("ct", "covid19_ct_infection", 0, "ct-teacher"),
]


def main() -> int:
    from napari_lesion_diffkd.core.data.locate import find_data_root
    from napari_lesion_diffkd.core.registry import UnknownModelError, resolve_model

    root = find_data_root()
    if root is None:
        print("no data folder found", file=sys.stderr)
        return 1
    out_dir = ROOT / "docs" / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    code = 0
    for modality, dataset, index, model in SHOTS:
        try:
            resolve_model(model)
        except UnknownModelError:
            print(f"skipping {modality}: model {model} is not registered yet")
            continue
        image = sorted((root / dataset / "images").iterdir())[index]
        target = out_dir / f"{modality}.png"
        proc = subprocess.run(
            [sys.executable, "-m", "napari_lesion_diffkd.cli", "demo", str(image),
             "--model", model, "--screenshot", str(target)],
            capture_output=True, text=True,
        )
        print(proc.stdout.strip() or proc.stderr[-500:])
        code |= proc.returncode
    return code


if __name__ == "__main__":
    sys.exit(main())
