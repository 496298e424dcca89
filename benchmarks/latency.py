"""Benchmark 2: produce -> result latency with the processor running live.

Per case (rate, format) a fresh embedded broker; ``dtlive process`` runs as its own **subprocess**
(the CLI, default window 2 s and lateness 0.1 s, ``--from-beginning`` on a new topic); this process
runs the emulator (``dtlive.kafka.emulator.emulate``, paced at ``rate`` rows/s) and, in a thread, an
observer: a read_committed consumer assigned to the result topic that stamps ``time.time()`` on
every result message as soon as it can read it (``fetch.wait.max.ms=10``).

The simulated hits come from ``dtlive.core.simulate`` configured so the detector's own row rate equals
the emulator rate, i.e. event time runs at wall-clock speed as with a real DAQ (at 100k rows/s a
2 s window holds ~200k rows). Chunks are generated, and CSV-encoded, before the clock starts.

Produce times are the messages' CreateTime, stamped by the producer client at ``produce()``: after
the run the hits topic is read back and decoded with ``dtlive.core.decode.decode``, which gives every hit's
orbit and produce time. For every published window:

* ``last_hit_latency``  = result available - produce time of the window's last-produced hit
  (target: <= window + lateness + 0.5 s = 2.6 s);
* ``first_hit_latency`` = result available - produce time of its first-produced hit (the longest any
  hit waits for its window's result: window + lateness + the closing delay; goal: <= window + 0.25 s);
* ``data_age`` = result available - wall time of the window's end (orbit_epoch + (last_orbit+1) orbits).

The target is only met if every hit the emulator wrote (counted from the chunks it was given) is in a
published window: a missing or extra hit makes the verdict "not met: N hits missing/extra".

Windows whose first hit was produced in the first ``warmup_s`` seconds, and the tail windows that only
the idle flush can close (no later hit moved the watermark past them), are reported but left out of the
percentiles.

Each case runs twice: with the processor's defaults, and with its consumer's ``fetch.wait.max.ms`` at 20 ms
(``KAFKA_FETCH_WAIT_MAX_MS=20``). The embedded broker holds every fetch for that long, data or not, so the
default of 200 ms (chosen for the broker's cost per fetch, see ``dtlive.kafka.clients``) adds up to 0.2 s to
the closing delay; a Kafka broker answers a fetch as soon as data is there, which the second run approaches.

    .venv/bin/python -m benchmarks.run --only latency [--quick] [--latency-duration S]
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.checks import CountedInput, count_check, verdict
from benchmarks.common import (
    bench_config,
    cpu_seconds,
    dtlive_cli,
    loadavg,
    log,
    observer_consumer,
    percentiles,
    pregenerate,
    private_broker,
    producer,
    read_topic,
    rss_mb,
    sim_chunks,
    stop_process,
)

GOAL_FIRST_HIT_AFTER_WINDOW_S = 0.25  # p99 from a window's first hit <= window + this
SHORT_FETCH = {"fetch.wait.max.ms": "20"}  # the second run of each case (see the module doc)


class Observer(threading.Thread):
    """Reads the result topic and stamps the wall-clock arrival time of every message."""

    def __init__(self, bootstrap: str, topic: str, max_s: float):
        super().__init__(daemon=True, name="result-observer")
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self.consumer = observer_consumer(bootstrap)
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + max_s
        self.seen: list[tuple[float, dict]] = []

    def hits(self) -> int:
        """Hits in the results seen so far."""
        return sum(int(msg["total_hits"]) for _, msg in list(self.seen))

    def run(self):
        try:
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                for m in self.consumer.consume(100, 0.05):
                    if m.error() is None:
                        now = time.time()
                        self.seen.append((now, json.loads(m.value())))
        finally:
            self.consumer.close()


def wait_for(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def processor_fenced(cfg, bootstrap: str) -> bool:
    """True once the processor committed its start-up fence marker on its checkpoint topic."""
    from dtlive.kafka.clients import partition_ends
    from dtlive.streaming.processor import checkpoint_topic

    try:
        ends = partition_ends(cfg, bootstrap, checkpoint_topic(cfg), timeout=2)
    except Exception:  # noqa: BLE001 - not there yet
        return False
    return any(high > low for low, high in ends.values())


def hit_produce_times(bootstrap: str, topic: str, messages: int) -> tuple[np.ndarray, np.ndarray]:
    """(orbit, produce time s) of every hit on the topic, sorted by orbit."""
    from dtlive.config import Config
    from dtlive.core import detector as det
    from dtlive.core.decode import decode
    from dtlive.core.messages import FORMAT_HEADER

    msgs = read_topic(bootstrap, topic, expect=messages)
    fmt = dict(msgs[0].headers() or []).get(FORMAT_HEADER, Config.default_format.encode()).decode()
    out = decode([m.value() for m in msgs], fmt, None, np.arange(len(msgs)))
    rows = out.rows
    ts = np.array([m.timestamp()[1] for m in msgs], np.int64) / 1000.0
    is_hit = rows.head == det.HIT_HEAD
    orbit, when = rows.orbit[is_hit].astype(np.int64), ts[rows.offset[is_hit]]
    order = np.argsort(orbit, kind="stable")
    return orbit[order], when[order]


def start_processor(cfg, bootstrap: str, private_dir: str, kafka: dict[str, str] | None = None):
    """``dtlive process --from-beginning`` as a subprocess (log in ``private_dir/process.log``), once fenced;
    ``kafka``: librdkafka settings of its clients.

    Raises RuntimeError with the log's tail if it exits or does not fence within 60 s (and stops it).
    """
    proc_log = Path(private_dir) / "process.log"
    with open(proc_log, "wb") as fh:
        proc = dtlive_cli("--bootstrap", bootstrap, "process", "--input", cfg.hits_topic, "--output",
                          cfg.monitor_topic, "--rejected", cfg.rejected_topic, "--group-id", cfg.group_id,
                          "--from-beginning", private_dir=private_dir, kafka=kafka, stdout=fh, stderr=fh)
    ready = wait_for(lambda: proc.poll() is not None or processor_fenced(cfg, bootstrap), 60, 0.5)
    if not ready or proc.poll() is not None:
        stop_process(proc)
        raise RuntimeError(f"processor did not start:\n{proc_log.read_text()[-3000:]}")
    return proc


def run_case(rate: float, fmt: str, duration: float, warmup_s: float = 3.0,
             kafka: dict[str, str] | None = None) -> dict:
    from dtlive.core import detector as det
    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate

    name = f"{fmt}@{rate:g}" + "".join(f" {k}={v}" for k, v in (kafka or {}).items())
    with private_broker() as broker, tempfile.TemporaryDirectory(prefix="dtlive-bench-lat-") as tmp:
        bs = broker.bootstrap
        cfg = bench_config(bs)
        ensure_topics(cfg, bs, [cfg.hits_topic, cfg.monitor_topic])
        log(f"latency/{name}: generating {duration:g} s of simulated rows")
        source = sim_chunks(rate, chunk_s=0.25, encode_csv_lines=(fmt == "csv"))
        chunks = CountedInput(pregenerate(source, int(rate * (duration + 2))))
        proc = start_processor(cfg, bs, tmp, kafka)
        observer = None
        try:
            time.sleep(2.0)  # the processor reads its resume state after the fence
            observer = Observer(bs, cfg.monitor_topic, max_s=duration + 120)
            observer.start()
            load_start = loadavg()
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            log(f"latency/{name}: emulating {rate:g} rows/s for {duration:g} s")
            stats = emulate(producer(bs), cfg.hits_topic, iter(chunks), rate=rate, fmt=fmt,
                            max_seconds=duration, progress=False)
            emit_end = time.monotonic()
            load_end = loadavg()
            # the hits written, counted from the input (the emulator sent a prefix of the chunks it was given)
            hits_sent = chunks.hits_in_first(stats.rows)
            # Wait for the windows the watermark closes and the idle flush of the tail (idle_s = 3 s); bounded.
            wait_for(lambda: observer.hits() >= hits_sent or proc.poll() is not None, cfg.idle_s + 30.0)
            proc_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            proc_rss = rss_mb(proc.pid)
        finally:
            if observer is not None:
                observer.stop_event.set()
                observer.join(10)
            stop_process(proc)
        log(f"latency/{name}: sent {stats.rows:,} rows in {stats.messages:,} messages "
            f"({stats.rate:,.0f} rows/s); {len(observer.seen)} results seen; reading produce times back")
        orbit, when = hit_produce_times(bs, cfg.hits_topic, stats.messages)
        lateness_orbits = int(round(cfg.lateness_s / det.ORBIT_S))
        max_orbit = int(orbit.max()) if len(orbit) else 0
        start_wall = float(when.min()) if len(when) else 0.0
        windows, kept = [], {"last": [], "first": [], "age": [], "closing": []}
        hits_published = late_hits = 0
        for arrived, msg in sorted(observer.seen, key=lambda x: x[1]["window"]["id"]):
            w = msg["window"]
            a, b = np.searchsorted(orbit, w["first_orbit"]), np.searchsorted(orbit, w["last_orbit"], side="right")
            hits_published += int(msg["total_hits"])
            late_hits += int(msg["counts"]["late_hits"])
            if b <= a:
                continue
            t_first, t_last = float(when[a:b].min()), float(when[a:b].max())
            # the first hit past the lateness allowance closes the window: from its produce time on, the
            # delay is the pipeline's own; before it, the window waits for event time to pass
            c = np.searchsorted(orbit, w["last_orbit"] + lateness_orbits, side="right")
            t_close = float(when[c:].min()) if c < len(when) else float("nan")
            epoch = msg["provenance"].get("orbit_epoch")
            end_wall = epoch + (w["last_orbit"] + 1) * det.ORBIT_S if epoch else float("nan")
            rec = {"id": w["id"], "arrived": round(arrived, 4), "hits": int(b - a),
                   "published_hits": int(msg["total_hits"]),
                   "last_hit_latency": round(arrived - t_last, 4), "first_hit_latency": round(arrived - t_first, 4),
                   "data_age": round(arrived - end_wall, 4),
                   "closing_hit_latency": round(arrived - t_close, 4),
                   "warmup": t_first - start_wall < warmup_s,
                   "idle_flushed": w["last_orbit"] + lateness_orbits >= max_orbit}
            windows.append(rec)
            if not (rec["warmup"] or rec["idle_flushed"]):
                kept["last"].append(rec["last_hit_latency"])
                kept["first"].append(rec["first_hit_latency"])
                kept["age"].append(rec["data_age"])
                kept["closing"].append(rec["closing_hit_latency"])
        target = cfg.window_s + cfg.lateness_s + 0.5
        goal_first = cfg.window_s + GOAL_FIRST_HIT_AFTER_WINDOW_S
        last = percentiles(kept["last"])
        first = percentiles(kept["first"])
        # every hit written must be in a published window, and the topic must hold what the emulator sent
        checks = [count_check(hits_sent, hits_published, late=late_hits),
                  count_check(hits_sent, len(orbit), "hits on the topic")]
        met, text = verdict(bool(last["n"] and last["p99"] <= target), checks)
        return {
            "rate": rate,
            "format": fmt,
            "kafka": dict(kafka or {}),
            "duration_s": duration,
            "window_s": cfg.window_s,
            "lateness_s": cfg.lateness_s,
            "emulated_rows": stats.rows,
            "emulated_messages": stats.messages,
            "emulator_rows_per_s": round(stats.rate),
            "emulate_wall_s": round(emit_end - t0, 3),
            "hits_sent": hits_sent,
            "hits_produced": int(len(orbit)),
            "hits_published": hits_published,
            "late_hits": late_hits,
            "counts": checks,
            "windows_seen": len(observer.seen),
            "windows_in_stats": len(kept["last"]),
            "processor_cpu_fraction": round(proc_cpu, 3),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "processor_rss_mb": round(proc_rss[0], 1),
            "last_hit_latency_s": last,
            "first_hit_latency_s": first,
            "data_age_s": percentiles(kept["age"]),
            "closing_hit_latency_s": percentiles(kept["closing"]),
            "target_s": target,
            "target_met_last_hit_p99": met,
            "verdict": text,
            "target_met_first_hit_p99": bool(first["n"] and first["p99"] <= target) and all(c["ok"] for c in checks),
            "goal_first_hit_s": goal_first,
            "goal_met_first_hit_p99": bool(first["n"] and first["p99"] <= goal_first) and all(c["ok"] for c in checks),
            "windows": windows,
        }


def run(quick: bool = False, duration: float | None = None, cases=None) -> dict:
    duration = duration or (12.0 if quick else 30.0)
    cases = cases or [(1_000, "csv"), (100_000, "csv"), (100_000, "daq64")]
    out = {}
    for rate, fmt in cases:
        out[f"{fmt}@{rate:g}"] = run_case(rate, fmt, duration)
        out[f"{fmt}@{rate:g} fetch 20 ms"] = run_case(rate, fmt, duration, kafka=SHORT_FETCH)
    return out


def print_table(res: dict) -> None:
    some = next(iter(res.values()), {})
    print(f"\n== 2. Latency produce -> result available (processor live; window {some.get('window_s', 2.0):g} s, "
          f"lateness {some.get('lateness_s', 0.1):g} s; percentiles over windows)")
    print(f"  {'case':24} {'rows/s':>8} {'windows':>7} {'last-hit p50':>12} {'p99':>6} {'first-hit p50':>13} "
          f"{'p99':>6} {'closing-hit p99':>15} {'age p50':>7} {'proc cpu':>8} {'hits pub/prod':>15}  "
          f"target: last-hit p99 <= {some.get('target_s', 2.6):g} s; goal: first-hit p99 <= "
          f"{some.get('goal_first_hit_s', 2.25):g} s")
    for name, r in res.items():
        lh, fh, age = r["last_hit_latency_s"], r["first_hit_latency_s"], r["data_age_s"]
        closing = r.get("closing_hit_latency_s", {}).get("p99")
        f = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
        print(f"  {name:24} {r['emulator_rows_per_s']:>8,} {r['windows_in_stats']:>7} {f(lh['p50']):>12} "
              f"{f(lh['p99']):>6} {f(fh['p50']):>13} {f(fh['p99']):>6} {f(closing):>15} {f(age['p50']):>7} "
              f"{r['processor_cpu_fraction']:>8} {r['hits_published']:>7,}/{r['hits_produced']:<7,}  "
              f"{r.get('verdict') or ('MET' if r['target_met_last_hit_p99'] else 'MISSED')}"
              f" (first-hit goal: {'met' if r.get('goal_met_first_hit_p99') else 'missed'})")
