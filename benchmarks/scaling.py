"""Benchmark: scale-out on Dask — throughput vs Dask workers and topic partitions.

One private broker; the real run-591 hits looped (daq64, 10,000 words per message) are written once per
partition count (1, 4, 8; keyed by chamber, so with 8 partitions half of them stay empty) and then
processed to the end of the topic (``run(until_end=True)``) by:

* ``raw``: a plain confluent-kafka consumer with the processor's settings reading every partition and
  doing nothing else, timed from its assign() (no head start): the broker's limit;
* ``single``: :class:`dtlive.streaming.processor.Processor` in this process (the baseline, one core);
* ``dask-b`` with 1 and 2 workers: :class:`dtlive.streaming.dask_driver.DaskProcessor` on a ``LocalCluster`` (processes,
  one thread each, loopback): one partition actor per worker reads, decodes and windows its share of the
  partitions; the driver merges the per-window partial products and publishes — exact, exactly once.
  With 1 partition only one actor can work (the second worker stays idle).

Each case runs ``--repeat`` times (default 3) and the run with the median rate is reported, with all rates.
Reported: hits/s (every run must count every hit written, as counted from the input: else the case says
"not met: N hits missing/extra"), per-worker efficiency = rate / (workers x the single rate),
CPU per wall second of the driver (this process) and of the workers, and hits per CPU-second (all
processes of dtlive; the broker not counted). On a 2-core machine the broker, the driver and the workers
share two cores: the figures show the overheads of the design, not the speed-up a larger machine gives.

    .venv/bin/python -m benchmarks.scaling [--quick | --rows N]    # -> benchmarks/results/scaling.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.checks import CountedInput, count_check, verdict
from benchmarks.common import (
    RESULTS_DIR,
    bench_config,
    cpu_seconds,
    file_source,
    loadavg,
    log,
    pregenerate,
    private_broker,
    producer,
    sim_chunks,
)

ROWS_PER_MESSAGE = 10_000
DENSE_RATE = 2_000_000  # rows per second of detector time in daq64-dense (as benchmarks.throughput)
BATCH_SIZE = 200  # messages per consume call: 2M hits, so every worker gets a piece


def fill(bootstrap: str, topic: str, partitions: int, rows: int, fmt: str = "daq64") -> dict:
    """Write ``rows`` rows keyed by chamber; ``daq64-dense`` is simulated (~4M hits per window) as daq64.

    ``hits``: the hits among the rows written, counted from the input as it is sent. The input is cut to
    ``rows`` rows before the emulator and sent whole (with partitions an emulator's limit would cut the last
    chunk's messages, which are in orbit order per key, so the rows sent would not be its first ones).
    """
    from dtlive.config import load_config
    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate

    ensure_topics(load_config({}, env={}), bootstrap, {topic: partitions})
    if fmt == "daq64-dense":
        source, fmt = iter(pregenerate(sim_chunks(DENSE_RATE, chunk_s=1.0, encode_csv_lines=False), rows)), "daq64"
    else:
        source = file_source()
    counted = CountedInput(source, rows)
    stats = emulate(producer(bootstrap), topic, iter(counted), rate=None, fmt=fmt, rows_per_message=ROWS_PER_MESSAGE,
                    progress=False, partitions=partitions, key="chamber")
    if stats.rows != counted.rows_seen:
        raise RuntimeError(f"the emulator sent {stats.rows:,} of the {counted.rows_seen:,} rows it was given")
    return {"rows": stats.rows, "messages": stats.messages, "hits": counted.hits}


def _cpu() -> float:
    return time.process_time()


def run_processor(bootstrap: str, topic: str, client=None, broker_pid: int | None = None) -> dict:
    from dtlive.streaming.dask_driver import DaskProcessor
    from dtlive.streaming.processor import Processor

    cfg = bench_config(bootstrap, hits_topic=topic)
    kw = {"from_beginning": True, "batch_size": BATCH_SIZE}
    proc = DaskProcessor(cfg, bootstrap, client, **kw) if client is not None else Processor(cfg, bootstrap, **kw)
    hits = {"n": 0, "late": 0}

    def on_publish(item):
        hits["n"] += item["message"]["total_hits"]
        hits["late"] += item["message"]["counts"]["late_hits"]

    proc.publisher.on_publish.append(on_publish)
    wcpu0 = client.run(_cpu) if client is not None else {}
    b0 = cpu_seconds(broker_pid) if broker_pid else 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    proc.run(until_end=True, max_seconds=600)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    broker_cpu = cpu_seconds(broker_pid) - b0 if broker_pid else 0.0
    workers_cpu = sum(v - wcpu0.get(k, 0.0) for k, v in client.run(_cpu).items()) if client is not None else 0.0
    windows = proc.publisher.published
    actors = len(proc.slots) if client is not None else 0
    proc.close()
    return {"hits": hits["n"], "late_hits": hits["late"], "seconds": round(seconds, 3),
            "driver_cpu_per_wall": round(cpu / seconds, 3),
            "workers_cpu_per_wall": round(workers_cpu / seconds, 3),
            "broker_cpu_per_wall": round(broker_cpu / seconds, 3),
            "hits_per_cpu_s": round(hits["n"] / (cpu + workers_cpu)), "windows": windows, "actors": actors}


def raw(bootstrap: str, topic: str, rows: int, messages: int) -> dict:
    """The broker's limit: :func:`benchmarks.throughput.raw_consume` of every partition, as a case."""
    from benchmarks.throughput import raw_consume

    r = raw_consume(bootstrap, topic, messages, timeout=300, batch_size=BATCH_SIZE, head_start=0.0)
    return {"hits": rows if r["complete"] else 0, "seconds": r["seconds"], "driver_cpu_per_wall": 0.0,
            "workers_cpu_per_wall": 0.0, "hits_per_cpu_s": 0, "windows": 0, "actors": 0,
            "count": count_check(messages, r["messages"], "messages (raw consumer)")}


def median(runs: list[dict], expected_hits: int) -> dict:
    """The run with the median rate, with every run's rate (hits/s) in ``rates`` and every run's count checked.

    ``count``: the first failed count check of any run (else the median run's): one run that lost or added a
    hit makes the case fail, even if the median run counted right.
    """
    runs = [r if "count" in r else {**r, "count": count_check(expected_hits, r["hits"], late=r.get("late_hits", 0))}
            for r in runs]
    ranked = sorted(runs, key=lambda r: r["hits"] / r["seconds"])
    chosen = ranked[len(ranked) // 2]
    bad = [r["count"] for r in runs if not r["count"]["ok"]]
    return {**chosen, "rates": [round(r["hits"] / r["seconds"]) for r in runs],
            "count": bad[0] if bad else chosen["count"], "runs_miscounted": len(bad)}


def run(quick: bool = False, rows: int | None = None, fmt: str = "daq64", repeat: int = 3) -> dict:
    from dtlive.streaming.dask_driver import dask_client

    rows = rows or (2_000_000 if quick else 12_000_000) // (6 if fmt == "csv-batch" else 1)
    partition_counts = (1, 4, 8)
    cases = []
    with private_broker() as broker:
        bs = broker.bootstrap
        topics, messages, filled = {}, {}, {}
        for n in partition_counts:
            topics[n] = f"bench.scale.{fmt}.p{n}"
            f = fill(bs, topics[n], n, rows, fmt)
            messages[n], filled[n] = f["messages"], f["hits"]
            log(f"scaling: {f['rows']:,} rows in {f['messages']:,} messages on {n} partition(s)")
        for n in partition_counts:
            r = median([raw(bs, topics[n], filled[n], messages[n]) for _ in range(repeat)], filled[n])
            cases.append({"mode": "raw", "workers": 0, "partitions": n, **r})
            r = median([run_processor(bs, topics[n], broker_pid=broker.pid) for _ in range(repeat)], filled[n])
            cases.append({"mode": "single", "workers": 1, "partitions": n, **r})
        for workers in (1, 2):
            with dask_client(f"local:{workers}") as client:
                for n in partition_counts:
                    r = median([run_processor(bs, topics[n], client, broker_pid=broker.pid) for _ in range(repeat)],
                               filled[n])
                    cases.append({"mode": "dask-b", "workers": workers, "partitions": n, **r})
    single = {c["partitions"]: c["hits"] / c["seconds"] for c in cases if c["mode"] == "single"}
    for c in cases:
        c["hits_per_s"] = round(c["hits"] / c["seconds"])
        c["all_hits_counted"] = c["count"]["ok"]  # every run of the case, in windows (a late hit is a missing one)
        c["verdict"] = verdict(None, [c["count"]])[1]
        c["per_worker_efficiency"] = round(c["hits_per_s"] / (max(c["workers"], 1) * single[c["partitions"]]), 3)
        log(f"scaling: {c['mode']:<32} workers {c['workers']} partitions {c['partitions']}: "
            f"{c['hits_per_s']:>10,} hits/s (runs {c['rates']}), efficiency {c['per_worker_efficiency']}")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent).stdout.strip()
    return {"git": git, "rows": rows, "repeat": repeat, "format": fmt, "rows_per_message": ROWS_PER_MESSAGE,
            "batch_size": BATCH_SIZE, "cases": cases, "loadavg_end": loadavg(),
            "all_hits_counted": all(c["all_hits_counted"] for c in cases),
            "verdict": verdict(None, [c["count"] for c in cases])[1]}


def print_table(res: dict) -> None:
    print(f"{'mode':<10}{'workers':>8}{'partitions':>11}{'actors':>7}{'hits/s':>13}{'eff/worker':>11}"
          f"{'driver cpu':>11}{'worker cpu':>11}{'broker cpu':>11}{'hits/cpu-s':>12}  counts")
    for c in res["cases"]:
        print(f"{c['mode']:<10}{c['workers']:>8}{c['partitions']:>11}{c['actors']:>7}{c['hits_per_s']:>13,}"
              f"{c['per_worker_efficiency']:>11}{c['driver_cpu_per_wall']:>11}{c['workers_cpu_per_wall']:>11}"
              f"{c.get('broker_cpu_per_wall', 0):>11}"
              f"{c['hits_per_cpu_s']:>12,}  {c.get('verdict', '-')}")
    print(f"  every hit counted in every run: {res.get('verdict', '-')}")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2M hits per topic instead of 12M")
    ap.add_argument("--rows", type=int, help="hits per topic (overrides --quick)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported (default 3)")
    ap.add_argument("--format", choices=("daq64", "csv-batch", "daq64-dense"), default="daq64",
                    help="payload format (10,000 rows per message): daq64 is cheap to decode per hit, csv-batch "
                         "~10x dearer, the case where the workers' CPU matters (default rows / 6); daq64-dense: "
                         "simulated hits at 2M rows per second of detector time (~4M hits per 2 s window, with "
                         "scintillator and ancillary rows): per-window costs vanish")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, rows=args.rows, fmt=args.format, repeat=args.repeat)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "scaling.json" if args.format == "daq64" else f"scaling-{args.format}.json"
    (RESULTS_DIR / name).write_text(json.dumps(res, indent=1))
    print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
