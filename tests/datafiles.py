"""Paths of the shared real data (read in place, never copied into the project)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RUN_CSV = SHARED / "data" / "run000591_hits.csv"
SAMPLE_CSV = SHARED / "data" / "stream_sample_2023.csv"
ALERTS = SHARED / "alerts"
