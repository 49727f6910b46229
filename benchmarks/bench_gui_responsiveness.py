"""GUI responsiveness: how long napari's event loop goes without turning while the plugin works.

Usage:
    python benchmarks/bench_gui_responsiveness.py [--interval-ms 15] [--idle-s 5]
        [--student-runs 8] [--teacher-runs 4] [--job-s 10] [--threads N] [--no-write]

A real napari viewer (under ``xvfb-run`` when there is no display: the script re-runs itself
there) with the plugin's Segment and Jobs panels docked and a PH2 image open. A QTimer
heartbeat on the GUI thread (``--interval-ms``, a precise timer) records when it fires; a
stall of the event loop shows as a long interval. For each scenario the table gives the
heartbeat's intervals (median, p95) and the longest gap, while:

* idle: nothing runs (the reference: the timer's own jitter on this machine);
* first sampling run: the default student's first run (model load in the worker, the result
  layers created on the GUI thread);
* large image: ``--large-runs`` runs on the PH2 image upscaled to 4000 x 3000 (a working
  shape, then upsampled maps; the first run creates that image's layers);
* Compare: ``--compare-runs`` runs of the Compare panel, teacher vs student (the first
  loads and warms up both models and creates both sets of layers, grid on);
* sampling, default student / teacher (K = 8): ``--student-runs`` / ``--teacher-runs`` runs
  one after another (the teacher after one unmeasured warm-up run that loads it);
* training job: a fine-tune of the teacher (1 thread) in its own process
  (``lesion-diffkd job run``), the Jobs panel polling it at 2 Hz, for ``--job-s`` seconds
  from its first step (the process's start-up is not measured);
* teacher sampling + training job: both at once (the scene of the former test threshold).

The test suite asserts no wall-clock limit on this (tests/plugin: the work runs off the GUI
thread and the event loop turns while it runs); these numbers depend on the machine and its
load, which the table's note records. The job is cancelled at the end, and killed whatever
happens. Updates the ``gui-responsiveness`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import update_section  # noqa: E402

TEACHER = "dermoscopy-teacher"
TARGET_MS = 200  # issue 14: the longest gap on an idle machine
XVFB_MARK = "_BENCH_GUI_UNDER_XVFB"


def _rerun_under_xvfb() -> int | None:
    """Re-run this script under xvfb-run when there is no display (None: run here)."""
    if (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get(XVFB_MARK) or os.environ.get("QT_QPA_PLATFORM")):
        return None
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        raise SystemExit("no display and no xvfb-run: install xvfb or set DISPLAY")
    env = {**os.environ, XVFB_MARK: "1"}
    return subprocess.call([xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable,
                            *sys.argv], env=env)


class Heartbeat:
    """A precise QTimer on the GUI thread; ``intervals()`` of the beats since ``reset()``."""

    def __init__(self, interval_ms: int) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.beats: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.beats.append(time.perf_counter()))
        self.timer.start()

    def reset(self) -> None:
        self.beats = [time.perf_counter()]  # the scenario's start counts as a beat

    def intervals(self) -> list[float]:
        b = self.beats + [time.perf_counter()]  # a stall at the very end counts too
        return [y - x for x, y in zip(b, b[1:])]


def run_until(condition, timeout_s: float) -> None:
    """Run the Qt event loop (a real ``exec``, as napari does) until ``condition()``."""
    from qtpy.QtCore import QEventLoop, QTimer

    if condition():
        return
    loop = QEventLoop()
    check = QTimer()
    check.setInterval(10)
    check.timeout.connect(lambda: loop.quit() if condition() else None)
    give_up = QTimer()
    give_up.setSingleShot(True)
    give_up.setInterval(int(timeout_s * 1000))
    give_up.timeout.connect(loop.quit)
    check.start()
    give_up.start()
    loop.exec()
    check.stop()
    give_up.stop()
    if not condition():
        raise TimeoutError(f"not done after {timeout_s:.0f} s")


def run_for(seconds: float) -> None:
    end = time.perf_counter() + seconds
    run_until(lambda: time.perf_counter() >= end, seconds + 60)


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def measure(name: str, heartbeat: Heartbeat, body, work: str) -> dict:
    heartbeat.reset()
    start = time.perf_counter()
    detail = body()
    seconds = time.perf_counter() - start
    iv = heartbeat.intervals()
    row = {"scenario": name, "work": detail or work, "seconds": seconds, "beats": len(iv),
           "median_ms": 1000 * statistics.median(iv), "p95_ms": 1000 * _percentile(iv, 0.95),
           "max_ms": 1000 * max(iv)}
    print(f"  {name}: {row['beats']} beats in {seconds:.1f} s, median "
          f"{row['median_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms, longest {row['max_ms']:.0f} "
          "ms", flush=True)
    return row


def _ph2_subset(data_root: Path, folder: Path, n: int = 12) -> Path:
    """A dataset folder with the first ``n`` PH2 pairs (symlinks), as the tests build it."""
    src = data_root / "ph2_dermoscopy"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for image in sorted((src / "images").iterdir())[:n]:
        (folder / "images" / image.name).symlink_to(image)
        mask = src / "masks" / (image.stem + ".png")
        (folder / "masks" / mask.name).symlink_to(mask)
    return folder


def run(args: argparse.Namespace) -> list[dict]:
    import napari
    import numpy as np
    import torch
    from skimage.io import imread

    from napari_lesion_diffkd.core.data.locate import find_data_root
    from napari_lesion_diffkd.core.store import import_folder
    from napari_lesion_diffkd.plugin._context import app_context
    from napari_lesion_diffkd.plugin._qt_guard import guard_none_refcount
    from napari_lesion_diffkd.plugin.compare_widget import CompareWidget
    from napari_lesion_diffkd.plugin.jobs_widget import JobsWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    if args.threads:
        torch.set_num_threads(args.threads)
    data_root = find_data_root()
    if data_root is None:
        raise SystemExit("real data not found (set LESION_DIFFKD_DATA)")
    image = imread(sorted((data_root / "ph2_dermoscopy" / "images").iterdir())[0])

    viewer = napari.Viewer(title="bench_gui_responsiveness", show=True)
    guard_none_refcount()
    viewer.window.resize(1560, 960)
    viewer.add_image(np.asarray(image), name="lesion", rgb=True)
    seg, jobs = SegmentWidget(viewer), JobsWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Lesion segmentation", area="right")
    viewer.window.add_dock_widget(jobs, name="Jobs", area="right", tabify=True)
    run_until(lambda: seg.picker.is_ready and jobs.form.picker.is_ready, 120)
    seg.select_image("lesion")
    student = seg.picker.current().label
    heartbeat = Heartbeat(args.interval_ms)
    rows: list[dict] = []

    def segment(runs: int):
        def body():
            for i in range(runs):
                seg.seed_spin.setValue(i + 1)
                seg.run()
                run_until(lambda: seg.worker is None, 300)
            if "done in" not in seg.status.text():
                raise RuntimeError(f"segmentation failed: {seg.status.text()}")
        return body

    tmp = Path(tempfile.mkdtemp(prefix="bench-gui-"))
    process = None
    try:
        rows.append(measure("idle (viewer, both panels, image open)", heartbeat,
                            lambda: run_for(args.idle_s), f"{args.idle_s:g} s"))
        rows.append(measure(f"first sampling run, {student} (loads it, creates layers)",
                            heartbeat, segment(1), "1 run"))
        rows.append(measure(f"sampling, {student} (default), K = "
                            f"{seg.samples_spin.value()}", heartbeat,
                            segment(args.student_runs), f"{args.student_runs} runs"))
        if args.large_runs:
            # A 4000 x 3000 photo (the PH2 image upscaled): computed at a working shape,
            # its maps upsampled (core/segmenter.py); its first run creates its layers.
            from skimage.transform import resize

            big = (resize(np.asarray(image), (3000, 4000), order=1, preserve_range=True,
                          anti_aliasing=False).round().astype(np.uint8))
            viewer.add_image(big, name="large", rgb=True)
            seg.select_image("large")
            rows.append(measure(f"large image 4000 x 3000, {student} (first run on it "
                                "creates its layers)", heartbeat, segment(args.large_runs),
                                f"{args.large_runs} runs"))
            seg.select_image("lesion")
        if args.compare_runs:
            compare = CompareWidget(viewer)
            viewer.window.add_dock_widget(compare, name="Compare", area="right", tabify=True)
            run_until(lambda: compare.teacher_picker.is_ready
                      and compare.student_picker.is_ready, 120)
            compare.image_combo.setCurrentText("lesion")

            def comparing():
                for _ in range(args.compare_runs):
                    compare.run()
                    run_until(lambda: compare.worker is None, 600)
                if not compare.status.text().startswith("done"):
                    raise RuntimeError(f"compare failed: {compare.status.text()}")

            rows.append(measure(f"Compare {TEACHER} / {student}, K = 8 (first run loads "
                                "and warms up both, creates 8 layers, grid on)", heartbeat,
                                comparing, f"{args.compare_runs} runs"))
            compare.grid_check.setChecked(False)
        seg.select_model(TEACHER)
        seg.samples_spin.setValue(8)
        segment(1)()  # warm-up: loads the teacher
        rows.append(measure(f"sampling, {TEACHER}, K = 8", heartbeat,
                            segment(args.teacher_runs), f"{args.teacher_runs} runs"))

        # A training job in its own process, the Jobs panel polling it.
        context = app_context(viewer)
        context.set_project(tmp / "project")
        import_folder(context.store, _ph2_subset(data_root, tmp / "ph2"), modality="dermoscopy")
        jobs.form.kind_combo.setCurrentText("fine-tune")
        if not jobs.form.picker.select(TEACHER):
            raise RuntimeError(f"{TEACHER} not in the Jobs panel")
        jobs.form.steps_spin.setValue(5000)
        jobs.form.threads_spin.setValue(1)
        jobs.form.overrides_edit.setText("batch_size: 2")
        job = jobs.launch()
        if job is None:
            raise RuntimeError(f"launch failed: {jobs.status.text()}")
        process = jobs.processes[job.id]
        run_until(lambda: jobs.jobs[job.id].step > 0 or process.poll() is not None, 300)
        if process.poll() is not None:
            raise RuntimeError(f"the job process ended: {jobs.jobs[job.id].status}")

        def job_only():
            step = jobs.jobs[job.id].step
            run_for(args.job_s)
            return f"{args.job_s:g} s, {jobs.jobs[job.id].step - step} training steps"

        rows.append(measure("training job (own process), Jobs panel polling", heartbeat,
                            job_only, ""))

        def both():
            step = jobs.jobs[job.id].step
            segment(args.teacher_runs)()
            return (f"{args.teacher_runs} runs, {jobs.jobs[job.id].step - step} "
                    "training steps meanwhile")

        rows.append(measure(f"sampling, {TEACHER} K = 8, + training job", heartbeat, both, ""))
        worker = jobs.cancel()
        run_until(lambda: not worker.is_running, 120)
    finally:
        if process is not None and process.poll() is None:  # whatever happened above
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(30)
        heartbeat.timer.stop()
        viewer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| scenario | work | beats | median interval | p95 interval | longest gap |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['scenario']} | {r['work']} | {r['beats']} | {r['median_ms']:.1f} ms | "
              f"{r['p95_ms']:.1f} ms | **{r['max_ms']:.0f} ms** |" for r in rows]
    return "\n".join(lines)


def target_note(rows: list[dict], load: tuple[float, float, float]) -> str:
    """The issue-14 target (longest gap <= 200 ms on an idle machine), row by row."""
    work = [r for r in rows if not r["scenario"].startswith("idle")]
    met = [r for r in work if r["max_ms"] <= TARGET_MS]
    missed = [r for r in work if r["max_ms"] > TARGET_MS]
    idle = next((r for r in rows if r["scenario"].startswith("idle")), None)
    text = (f"Target: longest gap <= {TARGET_MS} ms on an idle machine. This machine was not "
            f"idle (load average {load[0]:.2f} at the start"
            + (f"; the idle row alone reached {idle['max_ms']:.0f} ms" if idle else "")
            + f"). Met by {len(met)} of {len(work)} scenarios")
    if missed:
        text += ("; missed by " + ", ".join(f"{r['scenario'].split(' (')[0]} "
                                            f"({r['max_ms']:.0f} ms)" for r in missed)
                 + ": the runs that create new layers, each new napari layer costing the GUI "
                 "thread a few hundred ms here (spread over event-loop turns, one layer "
                 "per turn, plugin/_gui_steps.py; the layers of later runs are updated in "
                 "place)")
    return text + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval-ms", type=int, default=15, help="heartbeat interval")
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--student-runs", type=int, default=8)
    parser.add_argument("--teacher-runs", type=int, default=4)
    parser.add_argument("--job-s", type=float, default=10.0)
    parser.add_argument("--large-runs", type=int, default=2, help="4000 x 3000 image runs")
    parser.add_argument("--compare-runs", type=int, default=2, help="Compare panel runs")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads of the viewer's process (0: default)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    code = _rerun_under_xvfb()
    if code is not None:
        return code

    import torch

    load = os.getloadavg()
    start = time.perf_counter()
    rows = run(args)
    total = time.perf_counter() - start
    command = "python benchmarks/bench_gui_responsiveness.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:]) else "")
    text = "\n".join([
        "## GUI responsiveness: napari's event loop while the plugin works",
        "",
        f"`{command}` (under `xvfb-run` when there is no display), "
        f"{time.strftime('%Y-%m-%d')}, {total:.0f} s in all. A real napari viewer with the "
        "Segment and Jobs panels docked and a PH2 image open; a "
        f"{args.interval_ms} ms precise QTimer heartbeat on the GUI thread. Intervals "
        "between its beats: a stall of the event loop shows as a long one, so the **longest "
        "gap** is the longest the GUI did not respond. Sampling runs in a worker thread, "
        "training in its own process (`lesion-diffkd job run`, 1 thread); the first "
        "sampling run also creates the result layers on the GUI thread.",
        "",
        table(rows),
        "",
        target_note(rows, load),
        "",
        "The first run's gap is what napari does on the GUI thread to create the result "
        "layers: their Qt controls, their vispy visuals and overlays (a labels layer's "
        "polygon overlay alone took about 0.5 s in a profile) and shaders, compiled in "
        "software OpenGL under Xvfb. Two former parts of it are gone: napari's first labels "
        "layer imported pandas on the GUI thread (about 1.1 s), now imported with the "
        "fusion and STAPLE code in a worker when a panel opens (plugin/_warmup.py), and a "
        "2D image no longer gets a hidden (K, Y, X) samples layer (a second labels layer "
        "and a dims slider). Later runs update the layers in place. The idle row is the "
        "reference for what the machine itself adds: the same timer, nothing running.",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), torch "
        f"{torch.get_num_threads()} intra-op threads in the viewer's process, "
        f"Python {platform.python_version()}. **Shared machine**: other engineers' work "
        f"ran at the same time (load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        "at the start), so the gaps include waits for a CPU. The tests assert no such "
        "threshold (a busy CI machine failed one at 230 ms against 200 ms): "
        "`tests/plugin/test_jobs_and_responsiveness.py` and `test_sam_correction.py` check "
        "only that the work runs off the GUI thread and that the event loop turns meanwhile.",
    ])
    print(text)
    if not args.no_write:
        update_section(ROOT / "docs" / "benchmarks.md", "gui-responsiveness", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
