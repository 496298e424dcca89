"""Benchmark 4: processor memory over a long run.

A fresh embedded broker; ``dtlive process`` as a **subprocess** (CLI, defaults, ``--from-beginning`` on a
new topic); this process runs the emulator (simulated hits at ``rate`` rows/s, event time at wall-clock
speed as in benchmark 2) for ``duration`` seconds. A sampler thread reads the processor's VmRSS and
VmHWM from ``/proc/<pid>/status`` every ``interval`` seconds (the broker's RSS too, for information:
Tansu keeps every message in memory, so it grows by design).

Reported: RSS at the first sample, peak (max sample and VmHWM), at the end, and the least-squares slope in
MB per minute over the samples after the first ``warmup_s`` seconds (imports, first windows, librdkafka
buffers), and over the second half of the run: the heap keeps filling for a few minutes after the warm-up (the
allocators' high-water marks after the first bursts of input, see dtlive.service.heap), so the second half says whether
RSS has levelled off. The machine's highest 1-minute load is recorded too: stalls make bursts, bursts steps.
Flat means |slope| small against the level, e.g. well below 1 MB/min; the full-run
figures are the ones to compare with the 10-minute target. The run only counts if every hit
the emulator wrote (counted from its input) is in a published window: else "not met: N hits missing".
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from benchmarks.checks import CountedInput, count_check, verdict
from benchmarks.common import (
    bench_config,
    cpu_seconds,
    loadavg,
    log,
    private_broker,
    producer,
    read_topic,
    rss_mb,
    sim_chunks,
    slope_per_minute,
    stop_process,
)
from benchmarks.latency import start_processor


class Sampler(threading.Thread):
    def __init__(self, pids: dict[str, int], interval: float, max_s: float):
        super().__init__(daemon=True, name="rss-sampler")
        self.pids, self.interval = pids, interval
        self.deadline = time.monotonic() + max_s
        self.stop_event = threading.Event()
        self.samples: list[dict] = []
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            row = {"t": round(time.monotonic() - self.t0, 2)}
            for name, pid in self.pids.items():
                rss, hwm = rss_mb(pid)
                row[f"{name}_rss_mb"], row[f"{name}_hwm_mb"] = round(rss, 2), round(hwm, 2)
            row["processor_cpu_s"] = round(cpu_seconds(self.pids["processor"]), 2)
            row["loadavg_1m"] = (loadavg() or [None])[0]
            self.samples.append(row)
            self.stop_event.wait(self.interval)


def published_hits(bootstrap: str, topic: str) -> tuple[int, int]:
    """(hits in the committed results on ``topic``, hits they report as dead-lettered late)."""
    import json

    msgs = [json.loads(m.value()) for m in read_topic(bootstrap, topic, timeout=30, isolation="read_committed")]
    return sum(int(m["total_hits"]) for m in msgs), sum(int(m["counts"]["late_hits"]) for m in msgs)


def run(quick: bool = False, duration: float | None = None, rate: float = 10_000, fmt: str = "csv",
        interval: float | None = None) -> dict:
    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate

    duration = duration or (60.0 if quick else 600.0)
    interval = interval or (2.0 if duration <= 120 else 5.0)
    warmup_s = min(30.0, duration / 4)
    with private_broker() as broker, tempfile.TemporaryDirectory(prefix="dtlive-bench-mem-") as tmp:
        bs = broker.bootstrap
        cfg = bench_config(bs)
        ensure_topics(cfg, bs, [cfg.hits_topic, cfg.monitor_topic])
        proc_log = Path(tmp) / "process.log"
        proc = start_processor(cfg, bs, tmp)
        sampler = None
        try:
            sampler = Sampler({"processor": proc.pid, "broker": broker.pid}, interval, duration + 60)
            sampler.start()
            log(f"memory: emulating {rate:g} rows/s ({fmt}) for {duration:g} s, sampling RSS every {interval:g} s")
            chunks = CountedInput(sim_chunks(rate, chunk_s=0.25, encode_csv_lines=fmt == "csv"))
            stats = emulate(producer(bs), cfg.hits_topic, iter(chunks), rate=rate, fmt=fmt, max_seconds=duration,
                            progress=False)
            hits_sent = chunks.hits_in_first(stats.rows)  # from the input: the emulator sent a prefix of it
            # let the processor drain and flush: until every hit is in a published window (bounded)
            deadline = time.monotonic() + cfg.idle_s + 60
            published = published_hits(bs, cfg.monitor_topic)
            while published[0] < hits_sent and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(1.0)
                published = published_hits(bs, cfg.monitor_topic)
            alive = proc.poll() is None
        finally:
            if sampler is not None:
                sampler.stop_event.set()
                sampler.join(10)
            code = stop_process(proc)
        samples = sampler.samples
        tail = proc_log.read_text(errors="replace")[-2000:]
    rss = [s["processor_rss_mb"] for s in samples]
    t = [s["t"] for s in samples]
    steady = [(a, b) for a, b in zip(t, rss) if a >= warmup_s]
    slope = slope_per_minute([a for a, _ in steady], [b for _, b in steady])
    slope_all = slope_per_minute(t, rss)
    late = [(a, b) for a, b in zip(t, rss) if a >= t[-1] / 2] if t else []
    slope_late = slope_per_minute([a for a, _ in late], [b for _, b in late])
    load = [s["loadavg_1m"] for s in samples if s.get("loadavg_1m") is not None]
    broker_rss = [s["broker_rss_mb"] for s in samples]
    cpu = samples[-1]["processor_cpu_s"] - samples[0]["processor_cpu_s"] if len(samples) > 1 else None
    count = count_check(hits_sent, published[0], late=published[1])
    return {
        "duration_s": duration,
        "rate": rate,
        "format": fmt,
        "rows_sent": stats.rows,
        "hits_sent": hits_sent,
        "hits_published": published[0],
        "count": count,
        "all_hits_counted": count["ok"],
        "verdict": verdict(None, [count])[1],
        "emulator_rows_per_s": round(stats.rate),
        "interval_s": interval,
        "warmup_s": warmup_s,
        "samples": len(samples),
        "processor_alive_at_end": alive,
        "processor_exit_code": code,
        "processor_cpu_fraction": round(cpu / (t[-1] - t[0]), 3) if cpu and len(t) > 1 else None,
        "rss_start_mb": rss[0] if rss else None,
        "rss_after_warmup_mb": steady[0][1] if steady else None,
        "rss_peak_mb": max(rss) if rss else None,
        "vmhwm_mb": samples[-1]["processor_hwm_mb"] if samples else None,
        "rss_end_mb": rss[-1] if rss else None,
        "slope_mb_per_min_after_warmup": round(slope, 3) if slope is not None else None,
        "slope_mb_per_min_all": round(slope_all, 3) if slope_all is not None else None,
        "slope_mb_per_min_second_half": round(slope_late, 3) if slope_late is not None else None,
        "rss_second_half_min_max_mb": [min(b for _, b in late), max(b for _, b in late)] if late else None,
        "loadavg_1m_max": max(load) if load else None,
        "broker_rss_start_mb": broker_rss[0] if broker_rss else None,
        "broker_rss_end_mb": broker_rss[-1] if broker_rss else None,
        "processor_log_tail": tail,
        "series": samples,
    }


def print_table(r: dict) -> None:
    print(f"\n== 4. Processor memory ({r['duration_s']:g} s at {r['rate']:g} rows/s {r['format']}, "
          f"RSS sampled every {r['interval_s']:g} s from /proc)")
    print(f"  start {r['rss_start_mb']} MB | after {r['warmup_s']:g} s warm-up {r['rss_after_warmup_mb']} MB | "
          f"peak {r['rss_peak_mb']} MB (VmHWM {r['vmhwm_mb']}) | end {r['rss_end_mb']} MB | "
          f"slope after warm-up {r['slope_mb_per_min_after_warmup']} MB/min (whole run {r['slope_mb_per_min_all']}, "
          f"second half {r.get('slope_mb_per_min_second_half')}, its range {r.get('rss_second_half_min_max_mb')} MB) | "
          f"max load {r.get('loadavg_1m_max')} | "
          f"processor cpu {r['processor_cpu_fraction']} | broker RSS {r['broker_rss_start_mb']} -> "
          f"{r['broker_rss_end_mb']} MB | hits: {r.get('verdict', '-')}")
