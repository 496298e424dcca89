"""Finding and stopping the processes a test started, by a marker in their environment.

A test sets e.g. ``DTLIVE_TEST_MARKER=<uuid>`` in the environment of what it starts (JupyterHub,
Voilà, repo2docker-like builds); every child inherits it, so nothing is left running afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def tagged_pids(marker: str) -> list[int]:
    """Processes whose environment contains ``marker`` (an exact ``NAME=value`` entry)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def kill_tagged(marker: str, timeout: float = 10.0) -> list[int]:
    """SIGINT, then SIGKILL after ``timeout``, every process carrying ``marker``; returns the pids found."""
    pids = tagged_pids(marker)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while tagged_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in tagged_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
