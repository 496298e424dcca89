"""Benchmark: how soon the quality tests flag a simulated fault, and how often they flag a sound detector.

    .venv/bin/python -m benchmarks.detection [--quick] [--seeds N] [--clean-minutes M]   # -> results/detection.json
    .venv/bin/python -m benchmarks.run --only detection [--quick]

In-process, no broker: the simulator's windows of 2 s (default rates: 140 Hz of muons, 5 kHz of hits), their
products as the processor computes them, as ``dtlive.monitor/1`` messages, judged in lumi blocks of 5 windows
against a reference by :class:`dtlive.core.lumi.LumiJudge`, as the recorder judges them, with the packaged
tests (``dtlive/core/quality_tests.toml``); see :mod:`dtlive.core.detection`.

Per seed: the reference is the sound detector's first 30 windows (60 s). Each fault of
:data:`dtlive.core.detection.FAULT_CASES` (a dead channel, a noisy channel, a chamber losing HV, a t0 shift of
10 ns, a drift velocity 10 % low) starts at window 30, the first after the reference, on a block boundary; its
delay is the windows (and seconds) from its start to the end of the first block that flags its chamber
(median over the seeds). False alarms: blocks of the sound detector after the reference (one seed, an hour
by default) with any test at warning or error, per hour; with the spread of the time-box edges (t0, Tmax)
fitted per block around the reference's, the figures the ``timebox`` tests' tolerances rest on.
``--quick``: 2 seeds, 5 clean minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, loadavg, log

REFERENCE_WINDOWS = 30
MAX_FAULT_WINDOWS = 50  # a fault not flagged within 10 blocks counts as missed


def run(quick: bool = False, seeds: int | None = None, clean_minutes: float | None = None) -> dict:
    from dtlive.core.detection import (
        BLOCK,
        FAULT_CASES,
        SOUND,
        WINDOW_S,
        detect_case,
        false_alarms,
        simulated_reference,
    )
    from dtlive.core.judge import load_tests_config

    seeds = seeds or (2 if quick else 3)
    clean_minutes = clean_minutes if clean_minutes is not None else (5.0 if quick else 60.0)
    base = SOUND
    tests = load_tests_config()
    t_start = time.monotonic()
    runs: dict[str, list[dict]] = {name: [] for name in FAULT_CASES}
    references = {}
    for seed in range(1, seeds + 1):
        references[seed] = simulated_reference(base, seed, REFERENCE_WINDOWS)
        for name, case in FAULT_CASES.items():
            d = detect_case(case, references[seed], seed, REFERENCE_WINDOWS, MAX_FAULT_WINDOWS, base, tests=tests)
            runs[name].append({"seed": seed, **d})
            log(f"seed {seed} {name}: {d['windows']} windows, status {d['status']}, tests {d['tests']}")
    faults = {}
    for name, case in FAULT_CASES.items():
        found = [r["windows"] for r in runs[name] if r["detected"]]
        median = statistics.median(found) if len(found) == len(runs[name]) else None
        faults[name] = {
            "fault": case.faults.describe(), "chamber": case.chamber, "stated_within_windows": case.within_windows,
            "detected": f"{len(found)}/{len(runs[name])}",
            "delay_windows_median": median, "delay_s_median": None if median is None else median * WINDOW_S,
            "delay_windows_max": max(found) if found else None,
            "status_min": min((r["status"] for r in runs[name] if r["detected"]), default=None),
            "named_by_its_test": all(r["named"] for r in runs[name]),
            "within_stated": all(r["within"] for r in runs[name]),
            "tests": sorted({t for r in runs[name] for t in r["tests"]}), "runs": runs[name],
        }
    t_faults = time.monotonic() - t_start
    windows = int(round(clean_minutes * 60 / WINDOW_S / BLOCK)) * BLOCK
    t0 = time.monotonic()
    clean = false_alarms(base, references[1], 1, REFERENCE_WINDOWS, windows, tests=tests)
    t_clean = time.monotonic() - t0
    hours = clean["seconds"] / 3600
    edges = {key: _spread(v) for key, v in clean.pop("edges").items()}
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent).stdout.strip()
    return {
        "git": git, "quick": quick, "seeds": seeds, "reference_windows": REFERENCE_WINDOWS, "block_windows": BLOCK,
        "window_s": WINDOW_S, "config_hash": tests.hash, "faults": faults,
        "clean": {**clean, "hours": round(hours, 3), "windows": windows,
                  "false_alarm_blocks_per_hour": round(clean["blocks_with_alarm"] / hours, 2) if hours else None,
                  "edges": edges},
        "seconds": {"faults": round(t_faults, 1), "clean": round(t_clean, 1)}, "loadavg_end": loadavg(),
        "all_within_stated": all(f["within_stated"] for f in faults.values()),
        "verdict": _verdict(faults, clean),
    }


def _spread(v: dict) -> dict:
    """RMS and largest deviation of the fitted edges from the reference's, in ns and in fit uncertainties."""
    out = {"blocks": len(v.get("t0", []))}
    for k, values in v.items():
        a = np.asarray(values, float)
        out[k] = {"rms": round(float(np.sqrt(np.mean(a**2))), 3), "max_abs": round(float(np.abs(a).max()), 3),
                  "mean": round(float(a.mean()), 3)} if len(a) else {}
    return out


def _verdict(faults: dict, clean: dict) -> str:
    missed = [n for n, f in faults.items() if not f["within_stated"]]
    text = "every fault flagged within its stated windows" if not missed else f"late or missed: {', '.join(missed)}"
    return f"{text}; {clean['blocks_with_alarm']} clean blocks of {clean['blocks']} with an alarm"


def print_table(res: dict) -> None:
    print(f"\n== Fault detection (simulation, lumi blocks of {res['block_windows']} x {res['window_s']:g} s "
          f"windows against a {res['reference_windows']}-window reference, {res['seeds']} seeds)")
    print(f"  {'fault':<16}{'what':<40}{'detected':>9}{'delay win':>10}{'delay s':>8}{'max win':>8}"
          f"{'stated':>7}{'status':>7}  tests")
    for name, f in res["faults"].items():
        median = f["delay_windows_median"]
        print(f"  {name:<16}{f['fault'][:39]:<40}{f['detected']:>9}{median if median is not None else '-':>10}"
              f"{f['delay_s_median'] if median is not None else '-':>8}{f['delay_windows_max'] or '-':>8}"
              f"{f['stated_within_windows']:>7}{f['status_min'] if f['status_min'] is not None else '-':>7}  "
              f"{', '.join(f['tests'])}")
    c = res["clean"]
    print(f"  clean: {c['blocks']} blocks ({c['hours']:g} h): {c['blocks_with_alarm']} with an alarm "
          f"({c['false_alarm_blocks_per_hour']} per hour), {c['warnings']} warnings, {c['errors']} errors, "
          f"worst chamber status {c['max_status']}, chamber verdicts without statistics {c['not_judged']}")
    for a in c["alarms"][:5]:
        print(f"    alarm: {a}")
    print(f"  {'time-box edges vs reference':<52}{'blocks':>7}{'t0 rms':>8}{'t0 max':>8}{'pull rms':>9}"
          f"{'Tmax rms':>9}{'Tmax max':>9}{'pull rms':>9}  (ns)")
    for key, e in c["edges"].items():
        if e["blocks"]:
            print(f"  {key:<52}{e['blocks']:>7}{e['t0']['rms']:>8}{e['t0']['max_abs']:>8}{e['t0_pull']['rms']:>9}"
                  f"{e['tmax']['rms']:>9}{e['tmax']['max_abs']:>9}{e['tmax_pull']['rms']:>9}")
    print(f"  {res['verdict']} ({res['seconds']['faults']} s faults, {res['seconds']['clean']} s clean)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.detection", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 5 clean minutes")
    ap.add_argument("--seeds", type=int, help="seeds per fault (default 3, --quick 2)")
    ap.add_argument("--clean-minutes", type=float, help="minutes of the sound detector judged (default 60)")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, seeds=args.seeds, clean_minutes=args.clean_minutes)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "detection.json").write_text(json.dumps(res, indent=1, default=str))
    print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
