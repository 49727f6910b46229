"""``lesion-diffkd job``: the project's job queue from the command line.

``submit TYPE --config JSON`` queues a job (``--start`` also launches it in the background),
``run ID`` executes one in this process (a failed or cancelled job resumes), ``list`` shows
the queue, ``cancel ID`` stops one. The project folder comes from ``--project``, else
``$LESION_DIFFKD_PROJECT``, else the current folder. Job types and their config keys:
``napari_lesion_diffkd/core/tasks/__init__.py``.

Exit codes of ``run``: 0 done, 1 failed, 3 cancelled, 75 still queued (``--no-wait`` and
the device is busy), 2 bad arguments, a job that cannot run, or a job that failed because
the disk is full. Every action prints one ``error: ...`` line and exits 2 when the project
database is damaged, empty, read-only or cannot be opened, or the disk is full.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from napari_lesion_diffkd.cli._store_errors import error_line, store_command

PROJECT_ENV_VAR = "LESION_DIFFKD_PROJECT"
DESCRIPTION = """\
Jobs run in their own process, one heavy job per device at a time; progress, status and
checkpoints are kept in the project database.

  submit TYPE --config JSON   queue a job (types: train, distill, predict, pseudo-label,
                              score); --start also launches it in the background
  run ID                      execute a job here; a failed or cancelled job resumes
  list                        show the jobs (stale ones are marked failed first)
  cancel ID                   stop a job (its checkpoints are kept)

The project folder is --project, else $LESION_DIFFKD_PROJECT, else the current folder."""
EXIT_BY_STATUS = {"done": 0, "failed": 1, "cancelled": 3, "queued": 75}
#: Config keys holding file paths: made absolute at submit time (relative to the caller).
_PATH_KEYS = ("train_config", "student_config", "data")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("job", help="submit, run, list and cancel project jobs",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="job_command", metavar="ACTION")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        action: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        action.add_argument("--project", default=os.environ.get(PROJECT_ENV_VAR, "."),
                            help=f"project folder (default: ${PROJECT_ENV_VAR} or .)")
        return action

    s = add("submit", "queue a job: train, distill, predict, pseudo-label, score")
    s.add_argument("type", help="job type")
    s.add_argument("--config", default="{}", help="JSON object, or @FILE holding one")
    s.add_argument("--light", action="store_true",
                   help="does not need the device exclusively")
    s.add_argument("--start", action="store_true", help="also start it in the background")
    s.set_defaults(func=store_command(_submit))

    r = add("run", "execute a job in this process (resumes a failed/cancelled one)")
    r.add_argument("id", type=int)
    r.add_argument("--no-wait", action="store_true",
                   help="exit (code 75) instead of waiting while the device is busy")
    r.add_argument("--poll", type=float, default=1.0, help="seconds between device checks")
    r.add_argument("--no-resume", action="store_true",
                   help="leave a failed or cancelled job as it is (do not resume it)")
    r.set_defaults(func=store_command(_run))

    ls = add("list", "show the jobs")
    ls.add_argument("--status", choices=("queued", "running", "done", "failed", "cancelled"))
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=store_command(_list))

    c = add("cancel", "cancel a job (SIGTERM, then SIGKILL after --grace seconds)")
    c.add_argument("id", type=int)
    c.add_argument("--grace", type=float, default=10.0)
    c.set_defaults(func=store_command(_cancel))
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _error(message: str) -> int:
    return error_line(message)


def _parse_config(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    config = json.loads(text)
    if not isinstance(config, dict):
        raise TypeError("--config must be a JSON object")
    for key in _PATH_KEYS:  # relative to where the user typed the command
        value = config.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            parts = [str(Path(v.strip()).resolve()) if Path(v.strip()).exists() else v.strip()
                     for v in value.split(",")]
            config[key] = ",".join(parts)
    return config


def _submit(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.job_runner import submit_job
    from napari_lesion_diffkd.core.store import ProjectStore, StoreError

    try:
        config = _parse_config(args.config)
    except (OSError, TypeError, ValueError) as exc:
        return _error(f"--config: {exc}")
    try:
        with ProjectStore(args.project, create=True) as store:
            job = submit_job(store, args.type, config, heavy=not args.light)
    except StoreError as exc:
        return _error(str(exc))
    print(json.dumps({"id": job.id, "type": job.type, "status": job.status}))
    if args.start:
        from napari_lesion_diffkd.core.job_runner import start_job_process

        proc = start_job_process(args.project, job.id)
        print(json.dumps({"id": job.id, "pid": proc.pid}))
    return 0


def _run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.job_runner import run_job
    from napari_lesion_diffkd.core.store import StoreError

    try:
        job = run_job(args.project, args.id, wait=not args.no_wait, poll_s=args.poll,
                      handle_signals=True, echo=lambda line: print(line, flush=True),
                      resume=not args.no_resume)
    except StoreError as exc:
        return _error(str(exc))
    print(json.dumps({"id": job.id, "status": job.status, "error": job.error,
                      "result": _short(job.result)}), flush=True)
    if job.status == "failed" and (job.error or "").startswith("disk full:"):
        return _error(f"job {job.id}: {job.error}")
    return EXIT_BY_STATUS.get(job.status, 1)


def _short(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result without long lists (a score ranking is shown by its top 5)."""
    if result is None:
        return None
    out = dict(result)
    if isinstance(out.get("ranking"), list):
        out["ranking"] = out["ranking"][:5]
    return out


def _list(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.store import ProjectStore, StoreError

    try:
        with ProjectStore(args.project) as store:
            store.jobs.reap_stale()
            jobs = store.jobs.list(args.status)
    except StoreError as exc:
        return _error(str(exc))
    for j in jobs:
        if args.json:
            print(json.dumps({"id": j.id, "type": j.type, "status": j.status,
                              "progress": j.progress, "step": j.step, "total": j.total,
                              "message": j.message, "device": j.device, "pid": j.pid,
                              "resumable": j.resumable, "error": j.error,
                              "checkpoints": j.checkpoints, "created_at": j.created_at,
                              "finished_at": j.finished_at}))
        else:
            extra = " resumable" if j.resumable and j.status != "done" else ""
            print(f"{j.id:>4}  {j.type:<12} {j.status:<9} {100 * j.progress:5.1f}%  "
                  f"{j.message[:50]}{extra}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.job_runner import cancel_job
    from napari_lesion_diffkd.core.store import StoreError

    try:
        job = cancel_job(args.project, args.id, grace_s=args.grace)
    except StoreError as exc:
        return _error(str(exc))
    print(json.dumps({"id": job.id, "status": job.status}))
    return 0
