"""The job queue in the project database: submit, claim a device, report, finish, cancel.

Life of a job::

    submit -> queued --claim--> running --finish--> done | failed | cancelled
                 ^                  |
                 +----- requeue ----+  (re-run of a failed / cancelled job: resume)

* **Claim** (``BEGIN IMMEDIATE``, so check-and-take is atomic across processes): a heavy
  job also takes the row of its device in ``device_claims``; while another *live* job
  holds it, the claim fails and the job stays queued. At most one heavy job per device.
* **Stale jobs**: a ``running`` job of this host whose process is gone (killed, crashed,
  machine rebooted; see :mod:`.procs`) is marked ``failed`` with ``resumable`` set when it
  can continue (a checkpoint was recorded, or it is a per-image job that skips finished
  images) and its device claim is released. Done by :meth:`JobQueue.reap_stale`, which
  every claim runs first.
* **Reports** come only from the owning process (``pid`` matches), throttled by the runner.
"""

from __future__ import annotations

import builtins
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari_lesion_diffkd.core.store.errors import InvalidInputError, JobStateError
from napari_lesion_diffkd.core.store.procs import hostname, pid_alive, pid_token
from napari_lesion_diffkd.core.store.records import JobRecord, dumps
from napari_lesion_diffkd.core.store.schema import now

if TYPE_CHECKING:
    import sqlite3

    from napari_lesion_diffkd.core.store.project import ProjectStore

#: Job types that redo only unfinished images, so any interrupted run can continue.
PER_IMAGE_TYPES = ("predict", "pseudo-label", "score")
LOG_LIMIT = 65536  # characters of log kept in the row (the process log file has all)


_JOB_TYPE_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")


@dataclass(frozen=True)
class Claim:
    """Outcome of :meth:`JobQueue.claim`: ``claimed``, else why not (``status`` of the job,
    ``holder``: the job holding the device)."""

    claimed: bool
    status: str
    holder: int | None = None


class JobQueue:
    """Job rows of one :class:`ProjectStore` (``store.jobs``)."""

    def __init__(self, store: ProjectStore):
        self.store = store

    # ----------------------------------------------------------------- reading

    def get(self, job_id: int) -> JobRecord:
        """The job's row (:class:`InvalidInputError` if unknown)."""
        row = self.store.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InvalidInputError(f"no job {job_id} in the project {self.store.root}")
        return JobRecord.from_row(row)

    def list(self, status: str | None = None) -> list[JobRecord]:
        """Jobs, optionally of one status, oldest first."""
        sql = "SELECT * FROM jobs" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        rows = self.store.conn.execute(sql, (status,) if status else ()).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def next_queued(self) -> JobRecord | None:
        """The oldest queued job, or None."""
        jobs = self.list("queued")
        return jobs[0] if jobs else None

    # ----------------------------------------------------------------- state changes

    def submit(self, job_type: str, config: dict[str, Any], heavy: bool = True) -> JobRecord:
        """Queue a job. ``config`` must be JSON-serialisable; its keys depend on the type
        (see :mod:`core.tasks`). Returns the new row.

        The store only checks that ``job_type`` is a well-formed name: which types exist is
        the job layer's business (:func:`core.job_runner.submit_job` checks it)."""
        if not isinstance(job_type, str) or not _JOB_TYPE_NAME.fullmatch(job_type):
            raise InvalidInputError(f"bad job type name {job_type!r} (lowercase letters, "
                                    "digits and '-', at most 40 characters)")
        if not isinstance(config, dict):
            raise InvalidInputError(f"job config must be a JSON object, got {type(config)}")
        with self.store.write() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (type, config, status, heavy, created_at, updated_at) "
                "VALUES (?, ?, 'queued', ?, ?, ?)",
                (job_type, dumps(config), int(heavy), now(), now()))
            job_id = int(cur.lastrowid or 0)
        return self.get(job_id)

    def requeue(self, job_id: int) -> JobRecord:
        """Make a job runnable again: queued stays queued, failed / cancelled (resume) become
        queued. Raises :class:`JobStateError` for a done job or one running in a live
        process."""
        self.reap_stale()
        with self.store.write() as conn:
            job = self._row(conn, job_id)
            if job.status == "done":
                raise JobStateError(f"job {job_id} is already done; submit a new job")
            if job.status == "running":
                raise JobStateError(f"job {job_id} is running in process {job.pid}")
            if job.status in ("failed", "cancelled"):
                conn.execute(
                    "UPDATE jobs SET status = 'queued', cancel_requested = 0, error = NULL, "
                    "message = ?, updated_at = ? WHERE id = ?",
                    (f"re-queued after {job.status}", now(), job_id))
        return self.get(job_id)

    def claim(self, job_id: int, device: str, pid: int | None = None) -> Claim:
        """Atomically start a queued job in process ``pid`` (default: this one) on
        ``device``, taking the device's claim if the job is heavy (see module docstring)."""
        pid = os.getpid() if pid is None else pid
        self.reap_stale()
        with self.store.write() as conn:
            job = self._row(conn, job_id)
            if job.status != "queued":
                return Claim(False, job.status)
            if job.heavy:
                row = conn.execute("SELECT job_id FROM device_claims WHERE device = ?",
                                   (device,)).fetchone()
                if row is not None and row[0] != job_id:
                    return Claim(False, job.status, int(row[0]))
                conn.execute("INSERT OR REPLACE INTO device_claims (device, job_id, claimed_at)"
                             " VALUES (?, ?, ?)", (device, job_id, now()))
            conn.execute(
                "UPDATE jobs SET status = 'running', device = ?, pid = ?, pid_token = ?, "
                "host = ?, attempts = attempts + 1, resumable = 0, cancel_requested = 0, "
                "error = NULL, message = 'started', started_at = ?, updated_at = ?, "
                "finished_at = NULL WHERE id = ?",
                (device, pid, pid_token(pid), hostname(), now(), now(), job_id))
        return Claim(True, "running")

    def report(self, job_id: int, step: int, total: int, message: str, log: str = "",
               checkpoints: builtins.list[dict[str, Any]] | None = None) -> bool:
        """Write progress from the job's own process. Returns True when a cancel was
        requested (the runner then stops at the next event)."""
        progress = min(1.0, step / total) if total else 0.0
        sets = ("step = ?, total = ?, progress = ?, message = ?, "
                f"log = substr(log || ?, -{LOG_LIMIT}), updated_at = ?")
        args: builtins.list[Any] = [step, total, progress, message, log, now()]
        if checkpoints is not None:
            sets += ", checkpoints = ?"
            args.append(dumps(checkpoints))
        with self.store.write() as conn:
            conn.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND status = 'running' "
                         "AND pid = ?", (*args, job_id, os.getpid()))
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
        return bool(row and row[0])

    def finish(self, job_id: int, status: str, result: dict[str, Any] | None = None,
               error: str | None = None, log: str = "") -> JobRecord:
        """End a job from its own process: ``done`` / ``failed`` / ``cancelled``; releases
        the device. ``resumable`` is derived (see module docstring)."""
        if status not in ("done", "failed", "cancelled"):
            raise ValueError(f"finish() status must be done/failed/cancelled, not {status!r}")
        with self.store.write() as conn:
            job = self._row(conn, job_id)
            resumable = status != "done" and _can_resume(job)
            conn.execute(
                f"UPDATE jobs SET status = ?, result = ?, error = ?, resumable = ?, "
                f"log = substr(log || ?, -{LOG_LIMIT}), finished_at = ?, updated_at = ?, "
                "progress = CASE WHEN ? = 'done' THEN 1.0 ELSE progress END "
                "WHERE id = ? AND status = 'running' AND pid = ?",
                (status, None if result is None else dumps(result), error, int(resumable),
                 log, now(), now(), status, job_id, os.getpid()))
            conn.execute("DELETE FROM device_claims WHERE job_id = ?", (job_id,))
        return self.get(job_id)

    def request_cancel(self, job_id: int) -> JobRecord:
        """Ask a job to stop: a queued job is cancelled at once, a running one gets its
        ``cancel_requested`` flag (the runner polls it; :func:`core.job_runner.cancel_job`
        also signals the process). Ended jobs are left as they are."""
        with self.store.write() as conn:
            job = self._row(conn, job_id)
            if job.status == "queued":
                conn.execute("UPDATE jobs SET status = 'cancelled', message = 'cancelled "
                             "before it started', finished_at = ?, updated_at = ?, "
                             "resumable = ? WHERE id = ?",
                             (now(), now(), int(_can_resume(job)), job_id))
            elif job.status == "running":
                conn.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? "
                             "WHERE id = ?", (now(), job_id))
        return self.get(job_id)

    def mark_ended(self, job_id: int, status: str, error: str | None = None) -> JobRecord:
        """End a queued job that cannot start, or a running job from *outside* its process
        once the process is gone (after a kill); releases the device."""
        with self.store.write() as conn:
            job = self._row(conn, job_id)
            if job.status in ("queued", "running"):
                self._end(conn, job, status, error)
        return self.get(job_id)

    def reap_stale(self) -> builtins.list[int]:
        """Mark ``running`` jobs of this host whose process is gone as failed (resumable
        when possible), release claims of jobs that are not running; returns reaped ids."""
        host = hostname()
        running = self.list("running")
        dead = [j for j in running if j.host == host and not pid_alive(j.pid, j.pid_token)]
        if not dead and not self._dangling_claims():
            return []
        reaped = []
        with self.store.write() as conn:
            for job in dead:
                fresh = self._row(conn, job.id)  # re-read under the lock
                if fresh.status == "running" and fresh.pid == job.pid:
                    self._end(conn, fresh, "failed",
                              f"process {job.pid} ended without reporting (killed or crashed)")
                    reaped.append(job.id)
            conn.execute("DELETE FROM device_claims WHERE job_id NOT IN "
                         "(SELECT id FROM jobs WHERE status = 'running')")
        return reaped

    # ----------------------------------------------------------------- helpers

    def _dangling_claims(self) -> bool:
        return self.store.conn.execute(
            "SELECT 1 FROM device_claims WHERE job_id NOT IN "
            "(SELECT id FROM jobs WHERE status = 'running') LIMIT 1").fetchone() is not None

    def _row(self, conn: sqlite3.Connection, job_id: int) -> JobRecord:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InvalidInputError(f"no job {job_id} in the project {self.store.root}")
        return JobRecord.from_row(row)

    def _end(self, conn: sqlite3.Connection, job: JobRecord, status: str,
             error: str | None) -> None:
        resumable = _can_resume(job)
        note = f"{error or status}; " + ("resumable: run it again to continue"
                                          if resumable else "not resumable")
        conn.execute(
            f"UPDATE jobs SET status = ?, error = ?, resumable = ?, message = ?, "
            f"log = substr(log || ?, -{LOG_LIMIT}), finished_at = ?, updated_at = ? "
            "WHERE id = ?",
            (status, error, int(resumable), note, f"{now()} [{status}] {note}\n", now(), now(),
             job.id))
        conn.execute("DELETE FROM device_claims WHERE job_id = ?", (job.id,))


def _can_resume(job: JobRecord) -> bool:
    return bool(job.checkpoints) or job.type in PER_IMAGE_TYPES
