"""``lesion-diffkd loop``: rounds of the semi-supervised active-learning loop as project jobs
(type ``loop-round``, see ``core/active_learning/loop.py``), each run in its own process
through the job runner; ``--worker`` drains the project's job queue instead.

Exit codes as ``job run``: 0 every round / job done, 1 one failed, 3 cancelled (also after
Ctrl-C, which cancels the running job), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from napari_lesion_diffkd.cli.job import EXIT_BY_STATUS, PROJECT_ENV_VAR

DESCRIPTION = """\
One round: fine-tune the teacher on the human labels, pseudo-label the unlabelled images
(K samples + STAPLE + uncertainty), distil the student on the human labels plus the
confident pseudo labels (score_key <= --threshold), score the unlabelled images with the
new student and re-rank the annotation queue (--strategy). Each round is a 'loop-round'
job run in its own process; its progress is printed here.

An unfinished round (failed, cancelled, killed) is resumed first and counts as a round
(--new leaves it as it is and starts a new one, e.g. after a bad config).
A new round takes --config (YAML/JSON of loop-round keys; relative paths are relative to
the file), else the previous round's config; --strategy, --threshold, --device and
--threads override it. Keys: napari_lesion_diffkd/core/active_learning/loop.py.

--worker runs every queued job of the project (any type) in order, each in its own
process, one at a time, then exits."""
_PATH_KEYS = ("teacher", "teacher_config", "student", "student_config")
_FOLLOW_S = 0.5  # seconds between looks at a running job's log and row
_PROGRESS_EVERY_S = 5.0  # at most one progress line per this many seconds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loop", help="run rounds of the active-learning loop on a project",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=os.environ.get(PROJECT_ENV_VAR, "."),
                   help=f"project folder (default: ${PROJECT_ENV_VAR} or .)")
    p.add_argument("--rounds", type=int, default=1, help="rounds to run (default 1)")
    p.add_argument("--config", help="YAML/JSON file of loop-round settings")
    p.add_argument("--strategy", help="random | uncertainty | uncertainty-diversity")
    p.add_argument("--threshold", type=float,
                   help="confident pseudo label: score_key <= this (default 0.1)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--threads", type=int, help="torch CPU threads of the job")
    p.add_argument("--new", action="store_true",
                   help="start a new round even if the newest one is unfinished")
    p.add_argument("--worker", action="store_true",
                   help="drain the queued jobs (any type) in order, then exit")
    p.add_argument("--poll", type=float, default=1.0,
                   help="seconds between device checks while a job waits")
    p.set_defaults(func=run)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.store import StoreError

    try:
        if args.worker:
            return _work(args)
        if args.rounds < 1:
            return _error("--rounds must be >= 1")
        file_config = _read_config(Path(args.config)) if args.config else None
        for _ in range(args.rounds):
            job_id = _round_job(args, file_config)
            row, interrupted = _follow(args.project, job_id, args.poll)
            print(json.dumps(_summary(row)), flush=True)
            if interrupted or row.status != "done":
                return EXIT_BY_STATUS.get(row.status, 1)
        return 0
    except (StoreError, OSError, ValueError) as exc:
        return _error(str(exc))


def _read_config(path: Path) -> dict[str, Any]:
    """A loop config file; relative paths in it are made absolute (file's folder first,
    then the current folder) so that the job finds them from the project folder."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of loop-round keys")
    for key in _PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            for base in (path.resolve().parent, Path.cwd()):
                if (base / value).exists():
                    data[key] = str((base / value).resolve())
                    break
    return data


def _round_job(args: argparse.Namespace, file_config: dict[str, Any] | None) -> int:
    """The id of the round to run now: the newest loop-round job when it is unfinished,
    else a new one (see DESCRIPTION)."""
    from napari_lesion_diffkd.core.active_learning.loop import LoopSettings
    from napari_lesion_diffkd.core.store import JobStateError, ProjectStore

    with ProjectStore(args.project) as store:
        store.jobs.reap_stale()
        rounds = [j for j in store.jobs.list() if j.type == "loop-round"]
        last = rounds[-1] if rounds else None
        if last is not None and last.status == "running":
            raise JobStateError(f"loop-round job {last.id} is running (process {last.pid}): "
                                f"wait for it, or 'lesion-diffkd job cancel {last.id}'")
        if last is not None and last.status != "done" and not args.new:
            why = f": {last.error}" if last.error else ""
            print(f"resuming loop-round job {last.id} ({last.status}{why}) with its own "
                  "config (--new starts a new round instead)", flush=True)
            return last.id
        config = dict(file_config if file_config is not None
                      else (last.config if last is not None else {}))
        for key in ("strategy", "threshold", "device", "threads"):
            if getattr(args, key) is not None:
                config[key] = getattr(args, key)
        LoopSettings.from_config(config)  # refuse a bad config before queueing it
        job = store.jobs.submit("loop-round", config)
    print(f"submitted loop-round job {job.id}", flush=True)
    return job.id


def _follow(project: str, job_id: int, poll: float) -> tuple[Any, bool]:
    """Run the job in its own process, printing its log lines and, now and then, its
    progress, until it ends. Ctrl-C cancels it. Returns (its row, interrupted)."""
    from napari_lesion_diffkd.core.job_runner import (
        PROCESS_LOG,
        cancel_job,
        job_dir,
        start_job_process,
    )
    from napari_lesion_diffkd.core.store import ProjectStore

    log = job_dir(project, job_id) / PROCESS_LOG
    offset = log.stat().st_size if log.is_file() else 0  # earlier attempts are not shown
    proc = start_job_process(project, job_id, poll_s=poll)
    interrupted, shown, last_print = False, "", 0.0
    with ProjectStore(project) as store:
        try:
            while proc.poll() is None:
                offset = _echo_new(log, offset)
                row = store.jobs.get(job_id)
                if (row.total and row.message != shown
                        and time.monotonic() - last_print >= _PROGRESS_EVERY_S):
                    print(f"  [{100 * row.progress:5.1f}%] {row.message}", flush=True)
                    shown, last_print = row.message, time.monotonic()
                time.sleep(_FOLLOW_S)
        except KeyboardInterrupt:
            interrupted = True
            print(f"cancelling job {job_id} ...", file=sys.stderr, flush=True)
            cancel_job(project, job_id, process=proc)
        _echo_new(log, offset)
        store.jobs.reap_stale()  # a process that died without a word
        return store.jobs.get(job_id), interrupted


def _echo_new(log: Path, offset: int) -> int:
    """Print the complete lines written to ``log`` after ``offset`` (but the job process's
    own JSON summary: :func:`_summary` prints one); returns the new offset."""
    if not log.is_file():
        return offset
    with log.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode(errors="replace").splitlines(keepends=True)
    sys.stdout.write("".join(line for line in lines if not line.startswith('{"id": ')))
    sys.stdout.flush()
    return offset + end


def _summary(row: Any) -> dict[str, Any]:
    result = None if row.result is None else {
        k: v for k, v in row.result.items() if k not in ("steps", "ranking")}
    return {"id": row.id, "type": row.type, "status": row.status, "error": row.error,
            "result": result}


def _work(args: argparse.Namespace) -> int:
    """Run the queued jobs oldest first, each in its own process, until none is left."""
    from napari_lesion_diffkd.core.store import ProjectStore

    statuses: dict[int, str] = {}
    while True:
        with ProjectStore(args.project) as store:
            store.jobs.reap_stale()
            job = store.jobs.next_queued()
            if job is not None and job.id in statuses:  # its process never started it
                job = store.jobs.mark_ended(job.id, "failed", "its process exited before "
                                            "starting it (see its process.log)")
                statuses[job.id] = job.status
                print(json.dumps(_summary(job)), flush=True)
                continue
        if job is None:
            break
        print(json.dumps({"id": job.id, "type": job.type, "status": "starting"}), flush=True)
        row, interrupted = _follow(args.project, job.id, args.poll)
        statuses[job.id] = row.status
        print(json.dumps(_summary(row)), flush=True)
        if interrupted:
            break
    counts = {s: sum(v == s for v in statuses.values()) for s in ("done", "failed",
                                                                   "cancelled")}
    print(json.dumps({"jobs": len(statuses), **counts}), flush=True)
    if counts["failed"]:
        return EXIT_BY_STATUS["failed"]
    return EXIT_BY_STATUS["cancelled"] if counts["cancelled"] else 0
