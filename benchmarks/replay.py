"""Benchmark: ``dtlive replay`` of CSV files, in one process and on Dask workers.

The real run-591 hits looped with increasing orbits (nothing late) are written once as CSV files into a
temporary directory (``--rows`` in all, ``--files`` files), then replayed into a throw-away history store by
:func:`dtlive.streaming.replay.replay`: in this process, and on a ``LocalCluster`` of 1 and 2 worker processes
(one thread each). Each case runs ``--repeat`` times; the median is reported with its spread.

Reported: rows/s, seconds, CPU of this process (the driver) and of the workers per wall second, and
whether the windows equal the one-process replay's (products and counts). On this 2-core machine two
workers can at best double one core's rate; the driver's own share shows the design's overhead.

    .venv/bin/python -m benchmarks.replay [--rows N] [--files N] [--repeat N]   # -> results/replay.json
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.checks import CountedInput, count_check, verdict
from benchmarks.common import RESULTS_DIR, file_source, loadavg, log

EPOCH = 1_700_000_000.0  # fixed, so the messages of all cases can be compared


def write_files(folder: Path, rows: int, files: int) -> tuple[list[str], int]:
    """``rows`` looped run-591 rows as ``files`` CSV files with the DAQ header (consecutive orbits).

    Returns the paths and the hits (HEAD 2 rows) written, counted as they are written: what every replay
    must count.
    """
    from dtlive.core import detector as det
    from dtlive.core.decode import encode_csv

    header = det.CSV_HEADER.encode() + b"\n"
    per_file = -(-rows // files)
    counted = CountedInput(file_source(), rows)
    paths = [str(folder / f"replay_{k:03d}.csv") for k in range(files)]
    handles = [open(p, "wb") for p in paths]  # noqa: SIM115 - closed below
    try:
        for f in handles:
            f.write(header)
        written = 0
        for chunk in counted:
            done = 0
            while done < len(chunk.rows):
                k = written // per_file
                part = chunk.rows.select(slice(done, done + per_file * (k + 1) - written))
                handles[k].write(b"\n".join(encode_csv(part)) + b"\n")
                done, written = done + len(part), written + len(part)
    finally:
        for f in handles:
            f.close()
    return paths, counted.hits


def _cpu() -> float:
    return time.process_time()


def one_case(paths: list[str], client=None) -> dict:
    from dtlive.config import load_config
    from dtlive.storage.history import HistoryStore
    from dtlive.streaming.replay import replay

    with tempfile.TemporaryDirectory() as store_dir:
        w0 = client.run(_cpu) if client is not None else {}
        c0 = time.process_time()
        t0 = time.perf_counter()
        summary = replay(paths, load_config({}, env={}), client=client, store=HistoryStore(store_dir),
                         orbit_epoch=EPOCH)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        workers = sum(v - w0.get(k, 0.0) for k, v in client.run(_cpu).items()) if client is not None else 0.0
    msgs = [{k: v for k, v in m.items() if k != "provenance"} | {"window": m["window"]["id"]}
            for m in summary["messages"]]
    return {"seconds": seconds, "hits": summary["hits"], "windows": summary["windows"], "pieces": summary["pieces"],
            "driver_cpu_per_wall": cpu / seconds, "workers_cpu_per_wall": workers / seconds, "msgs": msgs}


def run(rows: int = 3_000_000, files: int = 4, repeat: int = 3) -> dict:
    from dtlive.streaming.dask_driver import dask_client

    cases = []
    with tempfile.TemporaryDirectory() as folder:
        paths, hits_written = write_files(Path(folder), rows, files)
        size = sum(Path(p).stat().st_size for p in paths)
        log(f"replay: {rows:,} rows ({hits_written:,} hits) in {files} files, {size / 1e6:.0f} MB")
        reference = None
        for workers in (0, 1, 2):
            runs = []
            with dask_client(f"local:{workers}") if workers else contextlib.nullcontext() as client:
                if client is not None:
                    one_case(paths[:1], client)  # warm-up: the workers import dtlive
                for _ in range(repeat):
                    r = one_case(paths, client)
                    if reference is None:
                        reference = r["msgs"]
                    r["equal_to_one_process"] = r.pop("msgs") == reference
                    r["count"] = count_check(hits_written, r["hits"])
                    runs.append(r)
                    log(f"replay: {'one process' if not workers else f'{workers} worker(s)'}: "
                        f"{r['hits'] / r['seconds']:,.0f} rows/s in {r['seconds']:.2f} s")
            rates = [r["hits"] / r["seconds"] for r in runs]
            cases.append({"mode": "one process" if not workers else "dask", "workers": workers,
                          "rows_per_s": round(statistics.median(rates)), "min": round(min(rates)),
                          "max": round(max(rates)), "hits": runs[0]["hits"], "windows": runs[0]["windows"],
                          "pieces": runs[0]["pieces"],
                          "driver_cpu_per_wall": round(statistics.median(r["driver_cpu_per_wall"] for r in runs), 3),
                          "workers_cpu_per_wall": round(statistics.median(r["workers_cpu_per_wall"] for r in runs), 3),
                          "equal_to_one_process": all(r["equal_to_one_process"] for r in runs),
                          "all_hits_counted": all(r["count"]["ok"] for r in runs),
                          "verdict": case_verdict(runs)})
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent).stdout.strip()
    return {"git": git, "rows": rows, "hits_written": hits_written, "files": files, "bytes": size, "repeat": repeat,
            "cases": cases, "loadavg_end": loadavg(), "all_hits_counted": all(c["all_hits_counted"] for c in cases),
            "verdict": "; ".join(sorted({c["verdict"] for c in cases}))}


def case_verdict(runs: list[dict]) -> str:
    """Every run counted every hit written and gave the one-process replay's windows, else not met."""
    checks = [r["count"] for r in runs]
    differ = sum(not r["equal_to_one_process"] for r in runs)
    if differ:
        checks.append({"ok": False, "problem": f"{differ} run(s) with windows unlike the one-process replay's"})
    return verdict(None, checks)[1]


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=3_000_000, help="rows in all (default 3M, ~80 MB of CSV)")
    ap.add_argument("--files", type=int, default=4, help="split over this many files (default 4)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported (default 3)")
    args = ap.parse_args(argv)
    res = run(args.rows, args.files, args.repeat)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "replay.json").write_text(json.dumps(res, indent=1))
    print(f"{'mode':<13}{'workers':>8}{'rows/s':>12}{'min':>12}{'max':>12}{'driver cpu':>11}{'worker cpu':>11}"
          f"{'equal':>7}  counts")
    for c in res["cases"]:
        print(f"{c['mode']:<13}{c['workers']:>8}{c['rows_per_s']:>12,}{c['min']:>12,}{c['max']:>12,}"
              f"{c['driver_cpu_per_wall']:>11}{c['workers_cpu_per_wall']:>11}{c['equal_to_one_process']!s:>7}  "
              f"{c['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
