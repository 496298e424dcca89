"""Benchmark 3: emulator rate accuracy.

For each requested rate (1k, 10k, 100k rows/s) and format, a fresh embedded broker and the CLI exactly
as a user runs it, as a **subprocess**: ``dtlive emulate --simulate --rate R --duration D --format F``.
Afterwards the topic is read back; every message's CreateTime (stamped by the producer client at
``produce()``, ms resolution) and its number of rows (decoded with ``dtlive.core.decode.decode``) give the
achieved rate::

    achieved = rows sent before the last message / (CreateTime of last message - CreateTime of first)

(the emulator sends message k when the rows before it are due, so this is the paced rate, free of
start-up and final-flush time). Also reported: the rate in every whole 1 s interval (min/max), and the
emulator's own summary line (rows / its elapsed time, which includes start-up and the final flush).
Target: achieved within +-1 % of requested, and every row the emulator reports sent is on the topic
(else "not met: N rows on the topic missing").
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time

import numpy as np

from benchmarks.checks import count_check, verdict
from benchmarks.common import (
    bench_config,
    dtlive_cli,
    loadavg,
    log,
    pregenerate,
    private_broker,
    producer,
    read_topic,
    sim_chunks,
)

TOLERANCE = 0.01


def run_case(rate: float, fmt: str, duration: float) -> dict:
    from dtlive.kafka.clients import ensure_topics

    with private_broker() as broker, tempfile.TemporaryDirectory(prefix="dtlive-bench-emu-") as tmp:
        bs = broker.bootstrap
        cfg = bench_config(bs)
        ensure_topics(cfg, bs, [cfg.hits_topic])
        log(f"emulator/{fmt}@{rate:g}: dtlive emulate --simulate --rate {rate:g} --duration {duration:g}")
        load_start = loadavg()
        t0 = time.monotonic()
        proc = dtlive_cli("--bootstrap", bs, "emulate", "--simulate", "--rate", f"{rate:g}", "--duration",
                          f"{duration:g}", "--format", fmt, "--topic", cfg.hits_topic,
                          private_dir=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=duration + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        wall = time.monotonic() - t0
        text = err.decode(errors="replace")
        m = re.search(r"sent (\d+) rows in (\d+) messages .* in ([0-9.]+) s \(([0-9,]+) rows/s\)", text)
        if proc.returncode != 0 or not m:
            raise RuntimeError(f"dtlive emulate failed ({proc.returncode}):\n{text[-3000:]}")
        sent_rows, sent_msgs = int(m.group(1)), int(m.group(2))
        out = measure(bs, cfg.hits_topic, fmt, rate, sent_msgs)
        out.update(duration_s=duration, mode="cli subprocess", loadavg_start=load_start, loadavg_end=loadavg(),
                   emulator_reported_rows=sent_rows,
                   emulator_reported_rate=float(m.group(4).replace(",", "")), subprocess_wall_s=round(wall, 2))
        return with_count(out, sent_rows)


def with_count(out: dict, sent_rows: int) -> dict:
    """The rate verdict only stands if the topic holds every row the emulator says it sent."""
    count = count_check(sent_rows, out["rows_on_topic"], "rows on the topic")
    out["all_rows_on_topic"] = count["ok"]
    out["rate_met"] = out["target_met"]
    out["target_met"], out["verdict"] = verdict(out["rate_met"], [count])
    return out


def run_control(rate: float, fmt: str, duration: float) -> dict:
    """Control: ``emulate()`` in this process on chunks generated beforehand (no cold start in the loop)."""
    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate

    with private_broker() as broker:
        bs = broker.bootstrap
        cfg = bench_config(bs)
        ensure_topics(cfg, bs, [cfg.hits_topic])
        chunks = pregenerate(sim_chunks(5_000, chunk_s=1.0, encode_csv_lines=False), int(rate * (duration + 2)))
        log(f"emulator/control {fmt}@{rate:g}: emulate() in-process on pre-generated chunks, {duration:g} s")
        stats = emulate(producer(bs), cfg.hits_topic, iter(chunks), rate=rate, fmt=fmt, max_seconds=duration,
                        progress=False)
        out = measure(bs, cfg.hits_topic, fmt, rate, stats.messages)
        out.update(duration_s=duration, mode="in-process, pre-generated chunks (control)",
                   emulator_reported_rows=stats.rows, emulator_reported_rate=round(stats.rate, 1))
        return with_count(out, stats.rows)


def measure(bs: str, topic: str, fmt: str, rate: float, sent_msgs: int) -> dict:
    from dtlive.core.decode import decode

    msgs = read_topic(bs, topic, expect=sent_msgs)
    ts = np.array([x.timestamp()[1] for x in msgs], np.int64) / 1000.0
    if fmt == "daq64":
        sizes = np.array([len(x.value()) // 8 for x in msgs], np.int64)
    else:
        decoded = decode([x.value() for x in msgs], fmt, None, np.arange(len(msgs)))
        sizes = np.bincount(decoded.rows.offset, minlength=len(msgs)) + np.bincount(
            [r.offset for r in decoded.rejects], minlength=len(msgs)).astype(np.int64)
    rows_before_last = int(sizes[:-1].sum())
    span = float(ts[-1] - ts[0])
    achieved = rows_before_last / span if span > 0 else float("nan")
    # Whole 1-second intervals from the first message.
    secs = int(span)
    per_s = np.bincount(((ts - ts[0]) // 1).astype(np.int64), weights=sizes, minlength=secs + 1)[:secs]
    # Steady state: from the first message at least 1 s after the first one, to the last.
    k = int(np.searchsorted(ts, ts[0] + 1.0))
    steady_span = float(ts[-1] - ts[k]) if k < len(ts) - 1 else 0.0
    steady = int(sizes[k:-1].sum()) / steady_span if steady_span > 0 else float("nan")
    burst_rows = int(sizes[: int(np.searchsorted(ts, ts[0] + 0.1))].sum())  # sent in the first 100 ms
    return {
        "requested": rate,
        "format": fmt,
        "messages": len(msgs),
        "rows_on_topic": int(sizes.sum()),
        "span_s": round(span, 3),
        "achieved_rows_per_s": round(achieved, 1),
        "error_pct": round(100 * (achieved / rate - 1), 3),
        "steady_rows_per_s_after_1s": round(steady, 1),
        "steady_error_pct": round(100 * (steady / rate - 1), 3),
        "rows_in_first_100ms": burst_rows,
        "expected_rows_in_100ms": round(rate * 0.1),
        "per_second_min": float(per_s.min()) if secs else None,
        "per_second_max": float(per_s.max()) if secs else None,
        "target_met": bool(abs(achieved / rate - 1) <= TOLERANCE),
    }


def run(quick: bool = False, duration: float | None = None, rates=(1_000, 10_000, 100_000),
        formats=("csv", "daq64")) -> dict:
    duration = duration or (5.0 if quick else 10.0)
    out = {f"{fmt}@{rate:g}": run_case(rate, fmt, duration) for fmt in formats for rate in rates}
    out["control csv@10000"] = run_control(10_000, "csv", duration)
    return out


def print_table(res: dict) -> None:
    print("\n== 3. Emulator rate accuracy (dtlive emulate --simulate as a subprocess; rate from CreateTime on topic;"
          " 'control' = emulate() in-process on pre-generated chunks)")
    print(f"  {'case':18} {'requested':>9} {'achieved':>10} {'err %':>7} {'after 1s':>10} {'err %':>7} "
          f"{'1st 100ms':>9} {'1s min':>8} {'1s max':>8} {'own rpt':>8} {'rows':>9}  target +-1 %")
    for name, r in res.items():
        print(f"  {name:18} {r['requested']:>9,.0f} {r['achieved_rows_per_s']:>10,.1f} {r['error_pct']:>7.2f} "
              f"{r['steady_rows_per_s_after_1s']:>10,.1f} {r['steady_error_pct']:>7.2f} "
              f"{r['rows_in_first_100ms']:>9,} {r['per_second_min'] or 0:>8,.0f} {r['per_second_max'] or 0:>8,.0f} "
              f"{r['emulator_reported_rate']:>8,.0f} {r['rows_on_topic']:>9,}  "
              f"{r.get('verdict') or ('MET' if r['target_met'] else 'MISSED')}")
