"""Benchmark 1: processing throughput against a raw confluent-kafka consume of the same topic.

For each payload format (``csv``: one row per message; ``daq64``: many 64-bit words per message)
a fresh embedded broker gets a topic pre-filled with N hits of the real run-591 file (all rows
are HEAD-2 hits; the file is replayed in a loop with increasing orbits). Then, alternately and
``repeats`` times:

* **raw**: a plain ``confluent_kafka.Consumer`` (same settings as the processor's consumer:
  read_committed, same fetch sizes, same batch size), ``assign()``-ed at the beginning, batched
  ``consume()`` until every message is in; nothing else is done with the messages;
* **processor**: ``dtlive.streaming.processor.Processor(cfg, bootstrap, from_beginning=True).run(until_end=True)``
  **in this process** (what ``dtlive process --from-beginning --until-end`` runs), a new group id and
  output topic each time. Its published windows are summed and compared with the hits counted in the input as
  it was written (never with another run): a run that misses or adds a hit fails the target.
  Like ``dtlive process``, the run starts with the set-up's objects frozen out of garbage collection
  (:func:`dtlive.service.heap.freeze_startup_objects`).

Both consumers are created and assigned >= 1 s before their clock starts (the processor's own set-up
takes that long; the raw consumer sleeps), so both start with librdkafka's prefetch queue warm.
Timed: the consume(/process) loop until the end offset is reached, including the processor's final
flush and transaction commit. Figures: hits/s of each, the ratio processor / raw, process CPU time.

If a target is missed, one more processor run is made under cProfile and its hotspots are stored.
"""

from __future__ import annotations

import gc
import statistics
import time

from benchmarks.checks import CountedInput, count_check, verdict
from benchmarks.common import (
    bench_config,
    file_source,
    loadavg,
    log,
    pregenerate,
    print_hotspots,
    private_broker,
    producer,
    profile_call,
    sim_chunks,
)

TARGET_CSV_RATIO = 0.5
TARGET_DAQ64_HITS_PER_S = 10e6
BATCH_SIZE = 5_000  # dtlive process's default (dtlive.streaming.processor.BATCH_SIZE)
RECONSTRUCTION = False  # in-process figures of the counting products (the targets); end_to_end runs the default
DENSE_RATE = 2_000_000  # event-time density of the "dense" daq64 variant (rows per second of detector time)


def prefill(bootstrap: str, topic: str, fmt: str, rows: int, rows_per_message: int, source: str) -> dict:
    """Write exactly ``rows`` rows; ``hits``: the hits among them, counted from the input as it is sent."""
    from dtlive.config import load_config
    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate

    ensure_topics(load_config({}, env={}), bootstrap, [topic])
    if source == "file":
        chunks = file_source()
    else:  # simulated, dense: DENSE_RATE rows per second of event time
        chunks = iter(pregenerate(sim_chunks(DENSE_RATE, chunk_s=1.0, encode_csv_lines=False), rows))
    counted = CountedInput(chunks, rows)
    t0 = time.perf_counter()
    stats = emulate(producer(bootstrap), topic, iter(counted), rate=None, fmt=fmt,
                    rows_per_message=rows_per_message, progress=False)
    elapsed = time.perf_counter() - t0
    if stats.rows != counted.rows_seen:
        raise RuntimeError(f"the emulator sent {stats.rows:,} of the {counted.rows_seen:,} rows it was given")
    return {"rows": stats.rows, "hits": counted.hits, "messages": stats.messages, "prefill_s": round(elapsed, 3),
            "prefill_rows_per_s": round(stats.rows / elapsed)}


def raw_consume(bootstrap: str, topic: str, messages: int, timeout: float, batch_size: int = BATCH_SIZE,
                head_start: float = 1.0) -> dict:
    """Batched consume() of every partition of the topic (the processor's settings), doing nothing with the messages.

    ``head_start``: seconds between assign() and the timed loop, in which librdkafka already fetches (as it
    does while the processor sets up); 0 times the fetching from the broker as well.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from dtlive.kafka.clients import consumer_config

    cfg = bench_config(bootstrap)
    conf = consumer_config(cfg, bootstrap, group_id=f"bench-raw-{time.monotonic_ns()}", from_beginning=True)
    c = Consumer({**conf, "enable.partition.eof": False})
    partitions = c.list_topics(topic, timeout=15).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    time.sleep(head_start)  # by default the head start the processor's set-up gives its consumer
    got = nbytes = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + timeout
    while got < messages and time.perf_counter() < deadline:
        for m in c.consume(min(batch_size, messages - got), 0.2):  # never wait out the timeout for more than is left
            if m.error() is None:
                got += 1
                nbytes += len(m.value())
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    c.close()
    return {"messages": got, "bytes": nbytes, "seconds": round(elapsed, 4), "cpu_s": round(cpu, 3),
            "complete": got >= messages}


def processor_run(bootstrap: str, topic: str, tag: str, profile: bool = False) -> dict:
    """``dtlive process --from-beginning --until-end`` in this process, timed around run()."""
    from dtlive.service.heap import freeze_startup_objects
    from dtlive.streaming.processor import Processor

    # the targets are for the counting products; the reconstruction's cost: benchmarks.end_to_end, reco_speed
    cfg = bench_config(bootstrap, tag=tag, hits_topic=topic, reconstruction=RECONSTRUCTION)
    t_setup = time.perf_counter()
    proc = Processor(cfg, bootstrap, from_beginning=True, batch_size=BATCH_SIZE)
    totals = {"hits": 0, "windows": 0, "late": 0}

    def on_publish(item):
        totals["hits"] += int(item["message"]["total_hits"])
        totals["late"] += int(item["message"]["counts"]["late_hits"])
        totals["windows"] += 1

    proc.publisher.on_publish.append(on_publish)
    setup = time.perf_counter() - t_setup
    if setup < 1.0:
        time.sleep(1.0 - setup)
    freeze_startup_objects()  # as `dtlive process` does before its loop (dtlive.service.shutdown.serve)
    cpu0, t0 = time.process_time(), time.perf_counter()
    prof = None
    try:
        if profile:
            _, prof = profile_call(lambda: proc.run(until_end=True), loop=proc.source.loop)
        else:
            proc.run(until_end=True)
    finally:
        gc.unfreeze()  # this process goes on with other runs
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    out = {"messages": proc.source.messages, "hits_counted": totals["hits"], "late_hits": totals["late"],
           "windows": totals["windows"], "dead_lettered": proc.publisher.dead_lettered,
           "seconds": round(elapsed, 4), "cpu_s": round(cpu, 3),
           "setup_s": round(setup, 3)}
    proc.close()
    if prof is not None:
        out["profile"] = prof
    return out


def bench_format(name: str, fmt: str, rows: int, rows_per_message: int, repeats: int, profile: str,
                 source: str = "file") -> dict:
    with private_broker() as broker:
        bs = broker.bootstrap
        topic = f"bench.tp.{fmt}"
        log(f"throughput/{name}: pre-filling {rows:,} rows ({source}, {rows_per_message} per message)")
        fill = prefill(bs, topic, fmt, rows, rows_per_message, source)
        log(f"throughput/{name}: {fill['messages']:,} messages in {fill['prefill_s']} s")
        n_msgs = fill["messages"]
        n_hits = fill["hits"]  # counted from the input as it was written (sim: ~4 % of the rows are ancillary)
        runs = []
        for i in range(repeats):
            load_start = loadavg()
            raw = raw_consume(bs, topic, n_msgs, timeout=600)
            raw["hits_per_s"] = round(n_hits / raw["seconds"]) if raw["complete"] else None
            raw["count"] = count_check(n_msgs, raw["messages"], "messages (raw consumer)")
            proc = processor_run(bs, topic, tag=f"{fmt}{i}{time.monotonic_ns() % 10**6}")
            proc["hits_per_s"] = round(n_hits / proc["seconds"])
            proc["count"] = count_check(n_hits, proc["hits_counted"], late=proc["late_hits"])
            proc["all_hits_counted"] = proc["count"]["ok"]
            ratio = proc["hits_per_s"] / raw["hits_per_s"] if raw["hits_per_s"] else None
            runs.append({"raw": raw, "processor": proc, "ratio": round(ratio, 4) if ratio else None,
                         "loadavg_start": load_start, "loadavg_end": loadavg()})
            raw_rate = "incomplete" if raw["hits_per_s"] is None else f"{raw['hits_per_s']:,} hits/s"
            log(f"throughput/{name} #{i}: raw {raw_rate} ({raw['seconds']} s), processor "
                f"{proc['hits_per_s']:,} hits/s ({proc['seconds']} s, {proc['windows']} windows, "
                f"counted {proc['hits_counted']:,}/{n_hits:,}), ratio {ratio if ratio is None else round(ratio, 3)}")
        ratios = [r["ratio"] for r in runs if r["ratio"]]
        proc_rates = [r["processor"]["hits_per_s"] for r in runs]
        raw_rates = [r["raw"]["hits_per_s"] for r in runs if r["raw"]["hits_per_s"]]
        summary = {
            "name": name,
            "format": fmt,
            "data": "run000591_hits.csv looped (real hits)" if source == "file"
            else f"simulator at {DENSE_RATE:,} rows per event-time second",
            "rows": fill["rows"],
            "hits": n_hits,
            "hits_per_window": round(n_hits / max(runs[0]["processor"]["windows"], 1)),
            "messages": n_msgs,
            "rows_per_message": rows_per_message,
            "prefill": fill,
            "raw_hits_per_s_median": round(statistics.median(raw_rates)) if raw_rates else None,
            "processor_hits_per_s_median": round(statistics.median(proc_rates)),
            "processor_hits_per_s_best": max(proc_rates),
            "processor_msgs_per_s_median": round(statistics.median(n_msgs / r["processor"]["seconds"] for r in runs)),
            "raw_msgs_per_s_median": round(statistics.median(n_msgs / r["raw"]["seconds"] for r in runs)),
            "ratio_median": round(statistics.median(ratios), 4) if ratios else None,
            "processor_cpu_per_wall": round(statistics.median(r["processor"]["cpu_s"] / r["processor"]["seconds"]
                                                              for r in runs), 3),
            # hits per CPU-second of this process (all threads, librdkafka's included): the processor's own
            # ceiling on one core when the broker is not what limits it
            "processor_hits_per_cpu_s": round(statistics.median(n_hits / max(r["processor"]["cpu_s"], 1e-3)
                                                                for r in runs)),
            "raw_hits_per_cpu_s": round(statistics.median(n_hits / max(r["raw"]["cpu_s"], 1e-3) for r in runs)),
            "windows": runs[0]["processor"]["windows"],
            "all_hits_counted": all(r["processor"]["all_hits_counted"] for r in runs),
            "runs": runs,
        }
        if source != "file":
            summary["target"] = "(no target: shows the per-hit ceiling when windows are huge)"
            figures_met = None
        elif fmt == "csv":
            summary["target"] = f"processor/raw >= {TARGET_CSV_RATIO}"
            figures_met = bool(summary["ratio_median"] and summary["ratio_median"] >= TARGET_CSV_RATIO)
        else:
            summary["target"] = f">= {TARGET_DAQ64_HITS_PER_S:,.0f} hits/s on one core"
            figures_met = summary["processor_hits_per_s_median"] >= TARGET_DAQ64_HITS_PER_S
        # every run must have counted every hit (and the raw consumer read every message): else not met
        checks = [c for r in runs for c in (r["processor"]["count"], r["raw"]["count"])]
        summary["figures_met"] = figures_met
        summary["target_met"], summary["verdict"] = verdict(figures_met, checks)
        if profile == "always" or (profile == "missed" and not summary["target_met"]):
            log(f"throughput/{name}: profiling one more processor run (cProfile)")
            prof_run = processor_run(bs, topic, tag=f"{fmt}prof{time.monotonic_ns() % 10**6}", profile=True)
            summary["profile"] = prof_run.pop("profile")
            summary["profile"]["run"] = prof_run
            summary["profile"]["per_window_ms"] = per_window_ms(summary["profile"], prof_run["windows"])
        return summary


def per_window_ms(profile: dict, windows: int) -> dict:
    """Profiled time of the per-window steps (both threads summed), in ms per published window."""
    steps = ("publish", "window_dataset", "compute_products", "compute_arrays", "arrays_to_dataset", "encode_message")
    out: dict[str, float] = {}
    for thread in ("streamz_loop_thread", "main_thread"):
        for r in profile.get(thread, {}).get("dtlive_by_cumulative_time", []):
            step = r["function"].rsplit(":", 1)[-1]
            if r["function"].startswith("dtlive/") and step in steps:
                out[step] = out.get(step, 0.0) + r["cum_s"]
    return {k: round(1000 * v / max(windows, 1), 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def run(quick: bool = False, profile: str = "missed", repeats: int | None = None,
        csv_hits: int | None = None, daq64_hits: int | None = None, dense_rows: int | None = None,
        rows_per_message: int = 10_000) -> dict:
    repeats = repeats or (1 if quick else 3)
    csv_hits = csv_hits or (1_000_000 if quick else 2_000_000)
    daq64_hits = daq64_hits or (5_000_000 if quick else 40_000_000)
    dense_rows = dense_rows or (5_000_000 if quick else 20_000_000)
    return {
        "csv": bench_format("csv", "csv", csv_hits, 1, repeats, profile),
        "daq64": bench_format("daq64", "daq64", daq64_hits, rows_per_message, repeats, profile),
        "daq64_dense": bench_format("daq64_dense", "daq64", dense_rows, rows_per_message, repeats, profile,
                                    source="sim"),
    }


def print_table(res: dict) -> None:
    print("\n== 1. Throughput (processor in-process vs raw confluent-kafka consume, same topic, same run)")
    print(f"  {'variant':11} {'hits':>11} {'msgs':>10} {'raw hits/s':>12} {'proc hits/s':>12} {'ratio':>6} "
          f"{'windows':>7} {'hits/win':>9} {'cpu/wall':>8} {'proc hits/cpu-s':>15}  target")
    for name, r in res.items():
        shown = r.get("verdict") or {True: "MET", False: "MISSED", None: "-"}[r["target_met"]]
        print(f"  {name:11} {r['hits']:>11,} {r['messages']:>10,} {r['raw_hits_per_s_median'] or 0:>12,} "
              f"{r['processor_hits_per_s_median']:>12,} {r['ratio_median'] or 0:>6.3f} {r['windows']:>7} "
              f"{r['hits_per_window']:>9,} {r['processor_cpu_per_wall']:>8} {r['processor_hits_per_cpu_s']:>15,}  "
              f"{r['target']}: {shown}")
    for name, r in res.items():
        if "profile" in r:
            print(f"  -- profile of one more processor run, {name}:")
            print_hotspots(r["profile"])
            if r["profile"].get("per_window_ms"):
                print("    per window (ms, cumulative, both threads): "
                      + ", ".join(f"{k} {v}" for k, v in r["profile"]["per_window_ms"].items()))
