"""Take the user guide's screenshots under Xvfb: ``make screenshots``.

Real images from the shared data folder, the shipped models, the real widgets; every shot is
the whole napari window (``viewer.screenshot(canvas_only=False)``) saved to docs/images/:

* ``segment-<modality>.png``: the Segment widget after a run with the modality preset's
  default model (dermoscopy: PH2, ultrasound: BUS-BRA, CT: a COVID-19 CT slice);
* ``compare-<modality>.png``: teacher vs student (or baseline) side by side, where a
  modality has two models;
* ``project.png``, ``jobs.png``, ``correction.png``: the annotation queue with an image
  open, a finished fine-tune job with its curve, a correction proposal (dermoscopy);
* ``sam-correction.png``: SAM correction on a held-out PH2 image (``IMD009``, outside every
  shipped model's training split): the student's consensus, a box drawn around the lesion
  (from its reference mask) plus a positive and a negative click, and the live
  ``lesion-sam-tiny`` proposal.

Every shot is a 1366 x 768 window (a laptop screen) with all five panels open, tabbed, the
shot's panel raised (``save`` opens the missing ones as the Plugins menu does).

Run as ``xvfb-run -a -s "-screen 0 1366x768x24" python scripts/make_screenshots.py``
(``--only NAME`` takes one shot, e.g. ``--only jobs``; ``--skip jobs`` leaves one out: the
jobs shot trains a teacher for 40 steps).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1366, 768)  # a laptop screen: every shot has all five panels open at this size
PANELS = ("Lesion segmentation", "Annotation project", "Jobs", "Compare teacher / student",
          "Correct segmentation")
OUT = ROOT / "docs" / "images"
SHOTS = {
    # modality: (dataset folder, image index)
    "dermoscopy": ("ph2_dermoscopy", 0),
    "ultrasound": ("busbra_breast_ultrasound", 0),
    "ct": ("covid19_ct_infection", 40),
}


def wait(condition: Callable[[], bool], timeout: float = 300.0) -> None:
    """Run the Qt event loop until ``condition()`` holds (or fail after ``timeout`` s)."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")
        QApplication.processEvents()
        time.sleep(0.02)


def new_viewer(title: str):
    import napari

    viewer = napari.Viewer(title=title, show=True)
    viewer.window.resize(*WINDOW)
    return viewer


def save(viewer, name: str) -> None:
    from qtpy.QtWidgets import QApplication

    open_all_panels(viewer)
    for _ in range(10):  # let docks lay out, then fit the image to the canvas left
        QApplication.processEvents()
        time.sleep(0.02)
    if not viewer_grid_enabled(viewer):
        viewer.reset_view()
    for _ in range(20):  # let docks lay out and the canvas draw
        QApplication.processEvents()
        time.sleep(0.02)
    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"saved {path.relative_to(ROOT)}")
    viewer.close()


def viewer_grid_enabled(viewer) -> bool:
    from napari_lesion_diffkd.plugin.compare_widget import viewer_grid

    return bool(viewer_grid(viewer).enabled)


def open_all_panels(viewer) -> None:
    """Open the panels the shot has not opened (as the Plugins menu does: they tab together,
    see plugin/_panel_layout.py), then raise the shot's own panel again."""
    from qtpy.QtWidgets import QDockWidget

    window = viewer.window._qt_window
    docks = [d for d in window.findChildren(QDockWidget)
             if d.isVisible() and any(p in d.windowTitle() for p in PANELS)]
    shown = [d for d in docks if not d.visibleRegion().isEmpty()]
    main = shown[-1] if shown else (docks[-1] if docks else None)
    have = {p for p in PANELS for d in docks if p in d.windowTitle()}
    added = []
    for name in PANELS:
        if name not in have:
            _dock, widget = viewer.window.add_plugin_dock_widget("napari-lesion-diffkd", name)
            added.append(widget)
            wait(lambda: True)
    for widget in added:  # their pickers read the catalogue (and SAM loads) in workers
        pickers = [getattr(widget, "picker", None), getattr(widget, "teacher_picker", None),
                   getattr(widget, "student_picker", None)]
        wait(lambda: all(p is None or p.is_ready for p in pickers))
        box = getattr(widget, "sam_models", None)
        if box is not None:
            wait(lambda: box.worker is None)
    if main is not None:
        main.show()
        main.raise_()
    wait(lambda: True)


def open_image(viewer, path: Path):
    """Add the plugin reader's layer for ``path`` (``viewer.open`` shows a progress bar that
    napari 0.9 wires to the previous, closed viewer's activity dialog)."""
    from napari_lesion_diffkd.plugin._reader import read_layers

    [(data, kwargs, _)] = read_layers(str(path))
    return viewer.add_image(data, **kwargs)


def image_path(root: Path, modality: str) -> Path:
    dataset, index = SHOTS[modality]
    return sorted((root / dataset / "images").iterdir())[index]


def shot_segment(root: Path, modality: str) -> None:
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer = new_viewer(f"Lesion segmentation: {modality}")
    open_image(viewer, image_path(root, modality))
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Lesion segmentation", area="right")
    wait(lambda: w.picker.is_ready)
    w.form.modality_combo.setCurrentText(modality)  # PNG files carry no modality
    w.samples_spin.setValue(8)
    w.run()
    wait(lambda: w.worker is None)
    print(f"  {modality}: {w.status.text().splitlines()[0]}")
    save(viewer, f"segment-{modality}.png")


def shot_compare(root: Path, modality: str) -> None:
    from napari_lesion_diffkd.plugin.compare_widget import CompareWidget

    viewer = new_viewer(f"Compare: {modality}")
    layer = open_image(viewer, image_path(root, modality))
    layer.metadata = {**layer.metadata, "modality": modality}
    w = CompareWidget(viewer)
    viewer.window.add_dock_widget(w, name="Compare teacher / student", area="right")
    wait(lambda: w.teacher_picker.is_ready and w.student_picker.is_ready)
    w.refresh_images()
    w._on_image(layer.name)  # the modality set above picks each side's default model
    teacher, other = w.teacher_picker.current(), w.student_picker.current()
    if teacher is None or other is None or teacher.label == other.label:
        print(f"  {modality}: one registered model only, no comparison")
        viewer.close()
        return
    w.run()
    wait(lambda: w.worker is None)
    print(f"  {modality}: {teacher.label} vs {other.label}, {w.dice_label.text()}")
    save(viewer, f"compare-{modality}.png")


def _project(root: Path, tmp: Path):
    """A viewer with the project panel over 12 PH2 pairs + 4 unlabelled images."""
    import shutil

    from napari_lesion_diffkd.plugin.project_widget import ProjectWidget

    data = tmp / "ph2"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    images = sorted((root / "ph2_dermoscopy" / "images").iterdir())
    for i, image in enumerate(images[:16]):
        (data / "images" / image.name).symlink_to(image)
        if i < 12:
            mask = root / "ph2_dermoscopy" / "masks" / f"{image.stem}.png"
            (data / "masks" / mask.name).symlink_to(mask)
    if (root / "ph2_dermoscopy" / "metadata.csv").is_file():
        shutil.copy(root / "ph2_dermoscopy" / "metadata.csv", data / "metadata.csv")
    viewer = new_viewer("Annotation project")
    panel = ProjectWidget(viewer)
    viewer.window.add_dock_widget(panel, name="Annotation project", area="right")
    panel.open_project(tmp / "project")
    panel.modality_combo.setCurrentText("dermoscopy")
    panel.import_paths([str(data)])
    wait(lambda: panel.worker is None)
    return viewer, panel


def score_project(panel) -> None:
    """Rank the unlabelled images with a ``score`` job (run here, blocking: a script)."""
    from napari_lesion_diffkd.core.job_runner import run_job

    store = panel.context.store
    job = store.jobs.submit("score", {"model": "dermoscopy-student", "device": "cpu"})
    run_job(store.root, job.id)
    panel.refresh_queue()


def shot_project_and_jobs(root: Path, jobs: bool = True) -> None:
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    with tempfile.TemporaryDirectory() as tmp:
        viewer, panel = _project(root, Path(tmp))
        score_project(panel)
        seg = SegmentWidget(viewer)
        viewer.window.add_dock_widget(seg, name="Lesion segmentation", area="right",
                                      tabify=True)
        wait(lambda: seg.picker.is_ready)
        panel.open_row(0)  # the most uncertain unlabelled image, with its cached prediction
        wait(lambda: panel.worker is None)
        seg.samples_spin.setValue(8)
        seg.run()
        wait(lambda: seg.worker is None)
        panel.save().result(60)
        panel.refresh_queue()
        panel.raise_()
        panel.parentWidget().raise_()
        save(viewer, "project.png")
        if not jobs:
            return

        viewer, panel = _project(root, Path(tmp) / "second")
        panel.next_image()
        wait(lambda: panel.worker is None)
        jobs = JobsWidget(viewer)
        viewer.window.add_dock_widget(jobs, name="Jobs", area="right", tabify=True)
        wait(lambda: jobs.form.picker.is_ready)
        jobs.form.kind_combo.setCurrentText("fine-tune")
        jobs.form.picker.select("dermoscopy-teacher")
        jobs.form.steps_spin.setValue(40)
        jobs.form.overrides_edit.setText("batch_size: 4, val_every: 10, val_samples: 2")
        job = jobs.launch()
        wait(lambda: jobs.jobs[job.id].status not in ("queued", "running"), timeout=900)
        jobs.poll()
        print(f"  jobs: {jobs.status.text()}")
        save(viewer, "jobs.png")


def shot_correction(root: Path) -> None:
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer = new_viewer("Correct segmentation")
    open_image(viewer, image_path(root, "dermoscopy"))
    seg = SegmentWidget(viewer)
    wait(lambda: seg.picker.is_ready)
    seg.samples_spin.setValue(8)
    seg.run()
    wait(lambda: seg.worker is None)
    for role in ("samples", "uncertainty"):
        if role in seg.last_layers:
            seg.last_layers[role].visible = False
    w = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(w, name="Correct segmentation", area="right")
    wait(lambda: w.backend is not None)
    w.source_combo.setCurrentText("sample")
    w.sample_spin.setValue(3)
    w.start()
    save(viewer, "correction.png")


SAM_IMAGE = "IMD009"  # validation split of lesion-sam-tiny and the dermoscopy models


def shot_sam_correction(root: Path) -> None:
    import numpy as np
    from skimage.io import imread

    from napari_lesion_diffkd.core.metrics import dice
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    folder = root / "ph2_dermoscopy"
    truth = imread(folder / "masks" / f"{SAM_IMAGE}.png") > 127
    viewer = new_viewer("Correct segmentation with SAM")
    layer = open_image(viewer, next((folder / "images").glob(f"{SAM_IMAGE}.*")))
    seg = SegmentWidget(viewer)
    wait(lambda: seg.picker.is_ready)
    seg.select_model("dermoscopy-student")
    seg.samples_spin.setValue(4)
    seg.run()
    wait(lambda: seg.worker is None)
    for role in ("samples", "uncertainty"):
        if role in seg.last_layers:
            seg.last_layers[role].visible = False
    consensus = seg.last_layers["consensus"]
    w = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(w, name="Correct segmentation", area="right")
    wait(lambda: w.backend is not None)
    w.source_combo.setCurrentText("consensus")
    proposal = w.start()
    rows, cols = np.nonzero(truth)
    r0, r1, c0, c1 = rows.min() - 6, rows.max() + 6, cols.min() - 6, cols.max() + 6
    viewer.layers[f"{layer.name} box"].add_rectangles(
        np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float))
    wait(lambda: not w.is_busy)
    prompts = viewer.layers[f"{layer.name} prompts"]
    prompts.add([[float(np.median(rows)), float(np.median(cols))]])
    wait(lambda: not w.is_busy)
    w.negative_check.setChecked(True)
    prompts.add([[float(r0 + 8), float(c1 - 8)]])  # a background corner inside the box
    wait(lambda: not w.is_busy)
    consensus.visible = False  # the proposal over the image, prompts on top
    print(f"  sam: consensus Dice {dice(consensus.data > 0, truth):.3f}, SAM proposal Dice "
          f"{dice(proposal.data > 0, truth):.3f}; {w.status.text()}")
    save(viewer, "sam-correction.png")


def main(argv: list[str] | None = None) -> int:
    from napari_lesion_diffkd.core.data.locate import find_data_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None,
                        help="segment | compare | project | correction (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated shots to leave out")
    # "correction" takes both correction shots (proposal, and SAM with box and clicks).
    args = parser.parse_args(argv)
    root = find_data_root()
    if root is None:
        print("no data folder found (set LESION_DIFFKD_DATA)", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    import napari_lesion_diffkd.core.registry  # noqa: F401  (torch first: pickers fill at once)

    only, skip = args.only, set(args.skip.split(","))
    for modality in SHOTS:
        if only in (None, "segment") and "segment" not in skip:
            shot_segment(root, modality)
        if only in (None, "compare") and "compare" not in skip:
            shot_compare(root, modality)
    if only in (None, "project", "jobs") and not {"project", "jobs"} <= skip:
        shot_project_and_jobs(root, jobs="jobs" not in skip)
    if only in (None, "correction") and "correction" not in skip:
        shot_correction(root)
        shot_sam_correction(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
