"""Paths of the shared real data (read in place, never copied into the project).

The data sits in ``shared/`` next to the checkout (``../shared``); ``DTLIVE_SHARED_DIR`` points
elsewhere. A clone made somewhere else on this machine finds the workspace's ``/work/shared``.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    candidates = [os.environ.get("DTLIVE_SHARED_DIR"), ROOT.parent / "shared", "/work/shared"]
    for c in candidates:
        if c and (Path(c) / "data" / "run000591_hits.csv").is_file():
            return Path(c)
    raise FileNotFoundError(f"the shared detector data was not found (looked in {candidates[1:]}); "
                            "set DTLIVE_SHARED_DIR to the folder holding data/ and alerts/")


SHARED = _shared()
RUN_CSV = SHARED / "data" / "run000591_hits.csv"
SAMPLE_CSV = SHARED / "data" / "stream_sample_2023.csv"
ALERTS = SHARED / "alerts"
