"""Run the dtlive benchmarks and write ``benchmarks/results/<name>.json`` plus a table.

    .venv/bin/python -m benchmarks.run                 # full set (~25 min; memory runs 600 s)
    .venv/bin/python -m benchmarks.run --quick         # smaller inputs, shorter runs (~6 min)
    .venv/bin/python -m benchmarks.run --only memory --duration 600 --name memory-600s

Every benchmark starts and stops its own embedded broker on a free loopback port (``detection`` needs none).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks import (
    alerts,
    common,
    dashboard,
    detection,
    emulator_rate,
    end_to_end,
    history_load,
    latency,
    memory,
    scaling,
    throughput,
)
from benchmarks.common import RESULTS_DIR, ROOT, loadavg, log

ALL = ("end_to_end", "throughput", "latency", "emulator", "memory", "dashboard", "history", "alerts", "scaling",
       "detection")


def git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def code_state() -> dict:
    """The git commit and the uncommitted changes under dtlive/ right now."""
    return {"git_commit": git("rev-parse", "HEAD"), "loadavg_at_start": loadavg(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dtlive_dirty_files": (git("status", "--porcelain", "--", "dtlive") or "").splitlines()}


def environment() -> dict:
    import confluent_kafka

    import dtlive
    from dtlive.kafka.broker import broker_binary

    cpu = None
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty_files": len((git("status", "--porcelain", "--", "dtlive") or "").splitlines()),
        "dtlive_version": dtlive.__version__,
        "python": sys.version.split()[0],
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "broker": os.path.basename(broker_binary()),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small inputs and short runs (memory: 60 s)")
    ap.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    ap.add_argument("--duration", type=float, help="memory run length in s (default 600, --quick 60)")
    ap.add_argument("--latency-duration", type=float, help="seconds per latency case (default 30, --quick 12)")
    ap.add_argument("--profile", choices=("missed", "always", "never"), default="missed",
                    help="cProfile an extra processor run in the throughput benchmark, the listener and a worker "
                         "job in the alerts benchmark (default: if a target is missed)")
    ap.add_argument("--name", help="results file name (default: quick or full)")
    ap.add_argument("--no-reconstruction", action="store_true",
                    help="every processor without the muon reconstruction (the counting products only; to compare "
                         "with code that had no reconstruction)")
    args = ap.parse_args(argv)
    if args.no_reconstruction:
        common.RECONSTRUCTION = False  # bench_config's processors and the dtlive subprocesses (dtlive_cli)
    chosen = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(chosen) - set(ALL)
    if unknown:
        ap.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    name = args.name or ("quick" if args.quick else "full")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    out = {"command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
           "quick": args.quick, "environment": environment(), "results": {}, "errors": {}}
    runners = {
        "end_to_end": lambda: end_to_end.run(quick=args.quick),
        "throughput": lambda: throughput.run(quick=args.quick, profile=args.profile),
        "latency": lambda: latency.run(quick=args.quick, duration=args.latency_duration),
        "emulator": lambda: emulator_rate.run(quick=args.quick),
        "memory": lambda: memory.run(quick=args.quick, duration=args.duration),
        "dashboard": lambda: dashboard.run(quick=args.quick),
        "history": lambda: _history(args.quick),
        "alerts": lambda: alerts.run(quick=args.quick, profile=args.profile),
        "scaling": lambda: scaling.run(quick=args.quick),
        "detection": lambda: detection.run(quick=args.quick),
    }
    printers = {"end_to_end": end_to_end.print_table, "throughput": throughput.print_table,
                "latency": latency.print_table,
                "emulator": emulator_rate.print_table, "memory": memory.print_table,
                "dashboard": dashboard.print_table, "history": lambda res: print(f"\n== history: {res}"),
                "alerts": alerts.print_table, "scaling": scaling.print_table, "detection": detection.print_table}
    for bench in chosen:
        log(f"=== {bench}")
        t0 = time.monotonic()
        # dtlive may change while a long run goes on: record the code each benchmark measured
        out.setdefault("code", {})[bench] = code_state()
        try:
            out["results"][bench] = runners[bench]()
        except Exception:  # noqa: BLE001 - record it, run the others
            out["errors"][bench] = traceback.format_exc()
            log(f"{bench} FAILED:\n{out['errors'][bench]}")
        out.setdefault("seconds", {})[bench] = round(time.monotonic() - t0, 1)
        out["code"][bench]["loadavg_at_end"] = loadavg()
        path.write_text(json.dumps(out, indent=1, default=str) + "\n")  # keep partial results
    print(f"\n# dtlive benchmarks ({name}) — {out['environment']['time_utc']}, {out['environment']['cpus']} CPUs "
          f"({out['environment']['cpu']}), git {str(out['environment']['git_commit'])[:10]}")
    for bench in chosen:
        if bench in out["results"]:
            printers[bench](out["results"][bench])
        else:
            print(f"\n== {bench}: FAILED (see errors in {path})")
    print("\n== Targets")
    for line in targets(out["results"]):
        print("  " + line)
    print(f"\nresults: {path}")
    return 1 if out["errors"] else 0


def _history(quick: bool) -> dict:
    """benchmarks/history_load.py (a day of 2 s windows; --quick: the shipped layout only, 6 hours)."""
    out = RESULTS_DIR / "history_load.json"
    history_load.main(["--hours", "6", "--layouts", "arrow-hourly"] if quick else [])
    res = json.loads(out.read_text())
    return {k: v for k, v in res.items() if k != "environment"}


def shown(r: dict, key: str = "target_met") -> str:
    """A benchmark's verdict: its text (a miscount reads "not met: ..."), else MET / MISSED from the flag."""
    return r.get("verdict") or ("MET" if r.get(key) else "MISSED")


def targets(res: dict) -> list[str]:
    """One line per target; a target is only met when every hit of the input was counted."""
    lines = []
    tp = res.get("throughput", {})
    if "csv" in tp:
        lines.append(f"csv processor/raw ratio >= 0.5: {tp['csv']['ratio_median']} -> {shown(tp['csv'])}")
    if "daq64" in tp:
        lines.append(f"daq64 >= 10M hits/s on one core: {tp['daq64']['processor_hits_per_s_median']:,} hits/s -> "
                     f"{shown(tp['daq64'])}")
    if "daq64_dense" in tp:
        lines.append(f"daq64 dense (no target): {tp['daq64_dense']['processor_hits_per_s_median']:,} hits/s -> "
                     f"{shown(tp['daq64_dense'])}")
    for case, r in res.get("latency", {}).items():
        lines.append(f"latency {case} last-hit p99 <= {r['target_s']} s: {r['last_hit_latency_s']['p99']} s -> "
                     f"{shown(r, 'target_met_last_hit_p99')}; first-hit p99 <= {r.get('goal_first_hit_s')} s: "
                     f"{r['first_hit_latency_s']['p99']} s -> {'MET' if r.get('goal_met_first_hit_p99') else 'MISSED'}")
    for case, r in res.get("emulator", {}).items():
        lines.append(f"emulator {case} within +-1 %: {r['error_pct']:+.2f} % -> {shown(r)}"
                     f" (after the first second: {r['steady_error_pct']:+.2f} %)")
    mem = res.get("memory")
    if mem:
        lines.append(f"memory flat over {mem['duration_s']:g} s: peak {mem['rss_peak_mb']} MB, slope "
                     f"{mem['slope_mb_per_min_after_warmup']} MB/min after warm-up; hits: {mem.get('verdict', '-')}")
    al = res.get("alerts")
    if al and "latency_s" in al:
        lines.append(f"alerts notice -> rate_excess result (600 s look-back) p99 <= {al['target_s']} s: "
                     f"{al['latency_s']['p99']} s -> {shown(al, 'target_met_p99')} "
                     f"(p50 {al['latency_s']['p50']} s, max {al['latency_s']['max']} s)")
    db = res.get("dashboard", {}).get("browser")
    if db and "target_s" in db:
        lines.append(f"dashboard produce -> browser p99 <= {db['target_s']} s: {shown(db, 'target_met_p99')}")
    hist = res.get("history")
    if hist and "verdict" in hist:
        lines.append(f"history store ({hist.get('target')}): {hist['verdict']}")
    sc = res.get("scaling")
    if sc:
        lines.append(f"scaling (no target): every hit counted in every case: {sc.get('verdict', '-')}")
    dt = res.get("detection")
    if dt:
        lines.append(f"fault detection within the stated windows, no false alarm: {dt['verdict']} -> "
                     f"{'MET' if dt['all_within_stated'] and not dt['clean']['blocks_with_alarm'] else 'MISSED'}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
