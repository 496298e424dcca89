"""Benchmark: scale-out on Dask (issue #7) — throughput vs Dask workers and topic partitions.

One private broker; the real run-591 hits looped (daq64, 10,000 words per message) are written once per
partition count (1, 4, 8; keyed by chamber, so with 8 partitions half of them stay empty) and then
processed to the end of the topic (``run(until_end=True)``) by:

* ``single``: :class:`dtlive.processor.Processor` in this process (the baseline, one core);
* ``dask-a`` with 1 and 2 workers: :class:`dtlive.scale.DaskProcessor` on a ``LocalCluster`` (processes,
  one thread each, loopback): the driver consumes and windows, the workers decode and histogram — exact;
* ``dask-b`` with 2 workers (only with > 1 partition): the other design, measured as an upper bound —
  each worker runs its own consumer on its share of the partitions and decodes + histograms per batch,
  with no windows, no publishing and no exactly-once (its products would not be exact across partitions:
  drift times pair hits with the scintillator of the other FPGA).

Reported: hits/s (all hits counted each time), per-worker efficiency = rate / (workers x the single rate),
CPU of this (driver) process per wall second. On a 2-core machine the broker, the driver and the workers
share two cores: the figures show the overheads of the design, not the speed-up a larger machine gives.

    .venv/bin/python -m benchmarks.scaling [--quick]    # -> benchmarks/results/scaling.json
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.common import RESULTS_DIR, bench_config, file_source, loadavg, log, private_broker, producer

ROWS_PER_MESSAGE = 10_000
BATCH_SIZE = 200  # messages per consume call: 2M hits, so every worker gets a piece


def fill(bootstrap: str, topic: str, partitions: int, rows: int) -> dict:
    from dtlive.config import load_config
    from dtlive.emulator import emulate
    from dtlive.kafka import ensure_topics

    ensure_topics(load_config({}, env={}), bootstrap, {topic: partitions})
    stats = emulate(producer(bootstrap), topic, file_source(), rate=None, fmt="daq64",
                    rows_per_message=ROWS_PER_MESSAGE, limit=rows, progress=False, partitions=partitions,
                    key="chamber")
    return {"rows": stats.rows, "messages": stats.messages}


def run_processor(bootstrap: str, topic: str, client=None) -> dict:
    from dtlive.processor import Processor
    from dtlive.scale import DaskProcessor

    cfg = bench_config(bootstrap, hits_topic=topic)
    kw = {"from_beginning": True, "batch_size": BATCH_SIZE}
    proc = DaskProcessor(cfg, bootstrap, client, **kw) if client is not None else Processor(cfg, bootstrap, **kw)
    hits = {"n": 0}
    proc.publisher._on_publish.append(lambda item: hits.__setitem__("n", hits["n"] + item["message"]["total_hits"]))
    cpu0, t0 = time.process_time(), time.perf_counter()
    proc.run(until_end=True, max_seconds=600)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    windows = proc.publisher.published
    proc.close()
    return {"hits": hits["n"], "seconds": round(seconds, 3), "driver_cpu_per_wall": round(cpu / seconds, 3),
            "windows": windows}


def _consume_partitions(bootstrap: str, topic: str, partitions: list[int], ends: dict) -> dict:
    """On a worker: its own consumer on ``partitions``, decode + clean + products per batch (design b)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from dtlive.nodes import Batch
    from dtlive.products import compute_arrays
    from dtlive.scale import decode_clean

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-b-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "fetch.max.bytes": 64 * 1024 * 1024,
                  "max.partition.fetch.bytes": 16 * 1024 * 1024, "fetch.wait.max.ms": 50})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    todo = {p: ends[p] for p in partitions if ends[p] > 0}
    hits, deadline = 0, time.monotonic() + 600
    while todo and time.monotonic() < deadline:
        msgs = [m for m in c.consume(BATCH_SIZE, 0.2) if not m.error()]
        if not msgs:
            continue
        d = decode_clean(Batch.from_messages(msgs, topic), "daq64", ())
        hits += int(compute_arrays(d.rows)["total_hits"])
        for m in msgs:
            if m.offset() + 1 >= todo.get(m.partition(), 1 << 62):
                todo.pop(m.partition(), None)
    c.close()
    return {"hits": hits}


def run_per_partition(bootstrap: str, topic: str, client) -> dict:
    from dtlive.config import load_config
    from dtlive.kafka import partition_ends

    ends = {p: high for p, (_, high) in partition_ends(load_config({}, env={}), bootstrap, topic).items()}
    workers = len(client.nthreads())
    shares = [[p for p in sorted(ends) if p % workers == w] for w in range(workers)]
    t0 = time.perf_counter()
    out = client.gather([client.submit(_consume_partitions, bootstrap, topic, s, ends, pure=False) for s in shares])
    seconds = time.perf_counter() - t0
    return {"hits": sum(o["hits"] for o in out), "seconds": round(seconds, 3), "windows": None}


def run(quick: bool = False) -> dict:
    from dtlive.scale import dask_client

    rows = 2_000_000 if quick else 6_000_000
    partition_counts = (1, 4, 8)
    cases = []
    with private_broker() as broker:
        bs = broker.bootstrap
        topics = {}
        for n in partition_counts:
            topics[n] = f"bench.scale.p{n}"
            f = fill(bs, topics[n], n, rows)
            log(f"scaling: {f['rows']:,} rows in {f['messages']:,} messages on {n} partition(s)")
        for n in partition_counts:
            r = run_processor(bs, topics[n])
            cases.append({"mode": "single", "workers": 1, "partitions": n, **r})
        for workers in (1, 2):
            with dask_client(f"local:{workers}") as client:
                for n in partition_counts:
                    r = run_processor(bs, topics[n], client)
                    cases.append({"mode": "dask-a", "workers": workers, "partitions": n, **r})
                    if workers == 2 and n > 1:
                        r = run_per_partition(bs, topics[n], client)
                        cases.append({"mode": "dask-b (upper bound, not exact)", "workers": workers,
                                      "partitions": n, **r})
    single = {c["partitions"]: c["hits"] / c["seconds"] for c in cases if c["mode"] == "single"}
    for c in cases:
        c["hits_per_s"] = round(c["hits"] / c["seconds"])
        c["all_hits_counted"] = c["hits"] == rows
        c["per_worker_efficiency"] = round(c["hits_per_s"] / (c["workers"] * single[c["partitions"]]), 3)
        log(f"scaling: {c['mode']:<32} workers {c['workers']} partitions {c['partitions']}: "
            f"{c['hits_per_s']:>10,} hits/s, efficiency {c['per_worker_efficiency']}")
    return {"rows": rows, "format": "daq64", "rows_per_message": ROWS_PER_MESSAGE, "batch_size": BATCH_SIZE,
            "cases": cases, "loadavg_end": loadavg()}


def print_table(res: dict) -> None:
    print(f"{'mode':<34}{'workers':>8}{'partitions':>11}{'hits/s':>13}{'eff/worker':>11}{'driver cpu':>11}")
    for c in res["cases"]:
        print(f"{c['mode']:<34}{c['workers']:>8}{c['partitions']:>11}{c['hits_per_s']:>13,}"
              f"{c['per_worker_efficiency']:>11}{c.get('driver_cpu_per_wall', '-'):>11}")


def main(argv=None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    res = run(quick=quick)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "scaling.json").write_text(json.dumps(res, indent=1))
    print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
