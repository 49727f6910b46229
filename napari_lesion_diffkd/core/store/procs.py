"""Is the process that claimed a job still alive? (pid + start-time token, zombies = dead)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def hostname() -> str:
    """This machine's name: a pid means nothing on another host sharing the project."""
    return socket.gethostname()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    return text[text.rindex(")") + 2:].split()


def pid_token(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc``, Linux), or None.

    Stored with the pid so that a new process that reuses the number is not mistaken for
    the job's.
    """
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22 of stat(5)


def pid_alive(pid: int | None, token: str | None = None) -> bool:
    """True while ``pid`` runs and (when known) still has start-time ``token``.

    A zombie (exited, not yet reaped by its parent) counts as dead.
    """
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _proc_stat(pid)
    if fields is None:
        return not Path("/proc/self/stat").exists()  # no procfs: trust kill(0)
    if fields[0] in ("Z", "X"):
        return False
    return token is None or pid_token(pid) == token
