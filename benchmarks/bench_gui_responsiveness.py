"""GUI responsiveness: how long napari's event loop goes without turning while the plugin works.

Usage:
    python benchmarks/bench_gui_responsiveness.py [--interval-ms 15] [--idle-s 5]
        [--student-runs 8] [--teacher-runs 4] [--job-s 10] [--threads N] [--no-write]

A real napari viewer (under ``xvfb-run`` when there is no display: the script re-runs itself
there) with the plugin's Segment and Jobs panels docked and a PH2 image open. A QTimer
heartbeat on the GUI thread (``--interval-ms``, a precise timer) records when it fires; a
stall of the event loop shows as a long interval. For each scenario the table gives the
heartbeat's intervals (median, p95), the longest gap and the longest single plugin step
on the GUI thread (each ``GuiSteps`` step is timed), while:

* opening the panels: the Segment and Jobs panels are made and docked, until their model
  pickers are ready and the warm-up's background imports are done (plugin/_warmup.py);
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


class StepTimer:
    """Times each plugin step run on the GUI thread (``GuiSteps``: one result layer, one grid
    change, ...): the table's "longest step" says which part of a gap is the plugin's own
    work and which is napari drawing or the machine."""

    def __init__(self) -> None:
        from napari_lesion_diffkd.plugin import _gui_steps

        self.steps: list[tuple[float, str]] = []
        original = _gui_steps.GuiSteps._next
        timer = self

        def timed(steps_self) -> None:
            step = steps_self._steps[0] if steps_self._steps else None
            start = time.perf_counter()
            original(steps_self)
            if step is not None:
                code = getattr(step, "__code__", None)
                where = (f"{Path(code.co_filename).name}:{code.co_firstlineno}" if code
                         else getattr(step, "__qualname__", repr(step)))
                timer.steps.append((time.perf_counter() - start, where))

        _gui_steps.GuiSteps._next = timed

    def reset(self) -> None:
        self.steps = []

    def longest(self) -> tuple[float, str]:
        return max(self.steps, default=(0.0, ""))


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


STEPS: StepTimer | None = None


def measure(name: str, heartbeat: Heartbeat, body, work: str) -> dict:
    heartbeat.reset()
    if STEPS is not None:
        STEPS.reset()
    start = time.perf_counter()
    detail = body()
    seconds = time.perf_counter() - start
    iv = heartbeat.intervals()
    step_s, step_where = STEPS.longest() if STEPS is not None else (0.0, "")
    row = {"scenario": name, "work": detail or work, "seconds": seconds, "beats": len(iv),
           "median_ms": 1000 * statistics.median(iv), "p95_ms": 1000 * _percentile(iv, 0.95),
           "max_ms": 1000 * max(iv), "step_ms": 1000 * step_s, "step": step_where}
    print(f"  {name}: {row['beats']} beats in {seconds:.1f} s, median "
          f"{row['median_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms, longest {row['max_ms']:.0f} "
          f"ms; longest plugin step {row['step_ms']:.0f} ms ({step_where})", flush=True)
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
    global STEPS
    STEPS = StepTimer()
    run_for(1.0)  # the viewer's own first draws
    heartbeat = Heartbeat(args.interval_ms)
    rows: list[dict] = []
    panels: dict = {}

    def open_panels():
        from napari_lesion_diffkd.plugin._warmup import is_warm

        seg, jobs = SegmentWidget(viewer), JobsWidget(viewer)
        viewer.window.add_dock_widget(seg, name="Lesion segmentation", area="right")
        viewer.window.add_dock_widget(jobs, name="Jobs", area="right", tabify=True)
        run_until(lambda: seg.picker.is_ready and jobs.form.picker.is_ready and is_warm(),
                  120)
        panels.update(seg=seg, jobs=jobs)

    rows.append(measure("opening the Segment and Jobs panels (their widgets, the model "
                        "catalogue, the warm-up imports in a worker)", heartbeat,
                        open_panels, "until ready"))
    seg, jobs = panels["seg"], panels["jobs"]
    seg.select_image("lesion")
    student = seg.picker.current().label

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
    lines = ["| scenario | work | beats | median interval | p95 interval | longest gap | "
             "longest plugin step |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['scenario']} | {r['work']} | {r['beats']} | {r['median_ms']:.1f} ms | "
              f"{r['p95_ms']:.1f} ms | **{r['max_ms']:.0f} ms** | "
              + (f"{r['step_ms']:.0f} ms (`{r['step']}`)" if r["step"] else "-") + " |"
              for r in rows]
    return "\n".join(lines)


def target_note(rows: list[dict], load: tuple[float, float, float],
                load_end: tuple[float, float, float]) -> str:
    """The issue-14 target (longest gap <= 200 ms on an idle machine), row by row."""
    work = [r for r in rows if not r["scenario"].startswith("idle")]
    met = [r for r in work if r["max_ms"] <= TARGET_MS]
    missed = [r for r in work if r["max_ms"] > TARGET_MS]
    idle = next((r for r in rows if r["scenario"].startswith("idle")), None)
    busy = max(load[0], load_end[0]) > 1.5
    text = (f"Target: longest gap <= {TARGET_MS} ms on an idle machine. This machine was "
            + ("**not** idle" if busy else "idle")
            + f" (load average {load[0]:.2f} at the start, {load_end[0]:.2f} at the end, on "
            f"{os.cpu_count()} CPUs"
            + (f"; the idle row alone reached {idle['max_ms']:.0f} ms" if idle else "")
            + f"). Met by {len(met)} of {len(work)} scenarios")
    if missed:
        text += ("; missed by " + ", ".join(f"{r['scenario'].split(' (')[0]} "
                                            f"({r['max_ms']:.0f} ms)" for r in missed))
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
    load_end = os.getloadavg()
    command = "python benchmarks/bench_gui_responsiveness.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:]) else "")
    text = "\n".join([
        "## GUI responsiveness: napari's event loop while the plugin works",
        "",
        f"`{command}` (under `xvfb-run` when there is no display; normal priority), "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {total:.0f} s in all. A real napari viewer "
        "with the Segment and Jobs panels docked and a PH2 image open; a "
        f"{args.interval_ms} ms precise QTimer heartbeat on the GUI thread. Intervals "
        "between its beats: a stall of the event loop shows as a long one, so the **longest "
        "gap** is the longest the GUI did not respond. *Longest plugin step*: the longest "
        "single step the plugin ran on the GUI thread in that scenario (`GuiSteps`, one "
        "result layer or one grid change per event-loop turn; file:line of the step), so "
        "a gap much longer than it is napari drawing, a garbage collection or the machine. "
        "Sampling runs in a worker thread, training in its own process (`lesion-diffkd job "
        "run`, 1 thread).",
        "",
        table(rows),
        "",
        target_note(rows, load, load_end),
        "",
        "What the first-run, large-image and Compare gaps were made of, and what was done "
        "(measured with a stack sampler on the GUI thread during the stalls, cProfile "
        "around single steps and a timer per GuiSteps step; before: 532-682 ms first run, "
        "819-1532 ms large image, 812-1774 ms Compare, depending on the load):",
        "",
        "- **Garbage collection** (every scenario, also idle): after torch, pandas and "
        "napari are imported the process holds ~420,000 long-lived objects, and a full "
        "collection walked them all, 150-400 ms, on whatever GUI step was allocating (one "
        "layer insert took 597 ms instead of ~170). The warm-up now calls `gc.freeze()` "
        "once its imports are done (plugin/_warmup.py).",
        "- **First labels layer**: napari imported `skimage.color` and `scipy.linalg` on "
        "the GUI thread for its label colormap (~0.2 s; plus pandas, ~1.1 s, pre-imported "
        "before). Both are now pre-imported in the warm-up worker; a test checks in a "
        "fresh interpreter that the first result layers import nothing.",
        "- **Large image**: napari outlines a labels layer (the consensus is drawn as a 2 px "
        "outline) over the whole image on the GUI thread at every full refresh: 0.5-0.7 s "
        "at 4000 x 3000, once when the layer is made and again at every model write. The "
        "worker now computes the outline (napari's own algorithm) and the layer uses it "
        "while its content is the model's (checked by digest; edits and painting use "
        "napari's); the consensus stays full size and pixel-aligned (tests). Also from "
        "the worker: the consensus as uint8 and its digest; the write's bounding box no "
        "longer uses `np.nonzero` of a 12-Mpx mask.",
        "- **Compare**: turning the grid on (8 layer moves, 8 visibility changes, grid, "
        "camera; each re-draws the scene) was one 0.5-0.6 s step; it is now one step per "
        "cell, then the grid, then the camera (<= 90 ms each here), and moves that change "
        "nothing are skipped. Its layer names are short (`T: consensus \u00b7 lesion`) "
        "and a re-run with other models reuses each role's layers instead of removing "
        "them.",
        "",
        "Why the rows still above 200 ms miss (what is left):",
        "",
        "- **First sampling run** and **large image**: the longest plugin step is creating "
        "the consensus labels layer, which napari does in one call on the GUI thread (its "
        "vispy visuals and overlays, e.g. the polygon overlay with its dash atlas, its Qt "
        "controls, the selection change): about 100-250 ms per layer here, more for the "
        "process's first labels layer (one-off class and visual set-up) and under load. "
        "The plugin cannot split that call. The full-size uncertainty image (12 Mpx "
        "float32 at 4000 x 3000) is one more such step plus its texture upload.",
        "- **Compare**: its longest plugin step is ~110 ms; the rest of its longest gap "
        "is napari drawing outside the plugin's steps, most likely the first draw of the "
        "captions' text (building the font atlas took ~0.35 s once in a separate "
        "measurement) and the first shader compilation of each layer kind (software "
        "OpenGL here).",
        "- **Opening the panels**: building the two panels' Qt widgets and the model "
        "catalogue on the GUI thread (not a run; not profiled further).",
        "- Tried and dropped: a warm-up that added, drew and removed a tiny labels and "
        "image layer when a panel opened took the first-of-a-kind costs out of the first "
        "run, but after a layer was removed from one shown viewer, the next viewer in the "
        "same process crashed in `glDrawArrays` (llvmpipe); removing a text Points layer "
        "crashed a single viewer the same way (which is also why Compare reuses its "
        "layers). Pre-creating the result layers when an image opens would move, not "
        "remove, the per-layer cost and add empty layers to the list; not done.",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), torch "
        f"{torch.get_num_threads()} intra-op threads in the viewer's process, "
        f"Python {platform.python_version()}. "
        + ("**Shared machine**: other engineers' work (training, benchmarks, test runs, "
           "under `nice -n 19` while this ran at normal priority) ran at the same time "
           if max(load[0], load_end[0]) > 1.5 else "")
        + f"(load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start, "
        f"{load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} at the end), so the "
        "gaps include waits for a CPU. The tests assert no such threshold (a busy CI "
        "machine failed one at 230 ms against 200 ms): they check behaviour "
        "(`tests/plugin/test_first_run.py`: one new layer per event-loop turn; "
        "`test_warmup_imports.py`, `test_large_image_widget.py`, "
        "`test_jobs_and_responsiveness.py`).",
    ])
    print(text)
    if not args.no_write:
        update_section(ROOT / "docs" / "benchmarks.md", "gui-responsiveness", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
