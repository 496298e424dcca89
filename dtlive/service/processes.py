"""Facts about local processes that several services need."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie, ended but not yet reaped, does not).

    >>> pid_alive(os.getpid()), pid_alive(0)
    (True, False)
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True  # no /proc: trust kill()


def process_age_s() -> float | None:
    """Seconds since this process started (its exec, not the import of dtlive), or None without ``/proc``.

    What a user waits for from typing a command to its first piece of work includes the interpreter's start and
    every import; this counts all of it (resolution: one clock tick, 10 ms).

    >>> 0 <= process_age_s() < 3600 * 24 * 365
    True
    """
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
