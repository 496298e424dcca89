"""Diagnostic for benchmark 4: where does the processor's memory grow? (tracemalloc)

    .venv/bin/python -m benchmarks.memory_trace --duration 300

Like ``benchmarks.memory`` (own broker, simulated hits at --rate rows/s emulated by this process), but
the processor runs in a child Python process (``--child``) as ``Processor(...).run()`` under
``tracemalloc`` (10 frames). The child snapshots Python allocations after the warm-up and at the end
and writes the biggest growths (by allocation site and by traceback) plus its RSS to JSON
(``results/memory_trace.json``). Growth that RSS shows but tracemalloc does not is native memory
(librdkafka, numpy buffers freed to a fragmented heap, ...). tracemalloc slows Python code, so use
this for diagnosis only, never for speed figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    RESULTS_DIR,
    bench_config,
    log,
    private_broker,
    producer,
    rss_mb,
    sim_chunks,
    stop_process,
)


def child(bootstrap: str, tag: str, duration: float, warmup: float, out: str) -> None:
    import tracemalloc

    tracemalloc.start(10)
    from dtlive.streaming.processor import Processor

    cfg = bench_config(bootstrap, tag=tag)
    proc = Processor(cfg, bootstrap, from_beginning=True)
    t0 = time.monotonic()
    proc.run(max_seconds=warmup)
    import gc

    gc.collect()
    first, rss_first = tracemalloc.take_snapshot(), rss_mb(os.getpid())[0]
    own_first = tracemalloc.get_tracemalloc_memory() / 2**20
    proc.run(max_seconds=max(duration - (time.monotonic() - t0), 1))
    gc.collect()
    last, rss_last = tracemalloc.take_snapshot(), rss_mb(os.getpid())[0]
    own_last = tracemalloc.get_tracemalloc_memory() / 2**20
    proc.close()
    flt = [tracemalloc.Filter(False, tracemalloc.__file__)]
    first, last = first.filter_traces(flt), last.filter_traces(flt)

    def top(key: str, n: int) -> list[dict]:
        return [
            {"size_diff_kb": round(s.size_diff / 1024, 1), "count_diff": s.count_diff,
             "size_kb": round(s.size / 1024, 1), "where": [str(f) for f in s.traceback.format()[-6:]]}
            for s in last.compare_to(first, key)[:n]
        ]

    traced_first = sum(s.size for s in first.statistics("filename")) / 2**20
    traced_last = sum(s.size for s in last.statistics("filename")) / 2**20
    Path(out).write_text(json.dumps({
        "warmup_s": warmup, "duration_s": duration, "windows_published": proc.publisher.published,
        "messages": proc.source.messages,
        "rss_mb_after_warmup": round(rss_first, 2), "rss_mb_end": round(rss_last, 2),
        "traced_mb_after_warmup": round(traced_first, 2), "traced_mb_end": round(traced_last, 2),
        "tracemalloc_own_mb_after_warmup": round(own_first, 2), "tracemalloc_own_mb_end": round(own_last, 2),
        "top_growth_by_line": top("lineno", 15), "top_growth_by_traceback": top("traceback", 8),
    }, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory_trace", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--warmup", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=3_000, help="rows/s; keep it low enough that the traced "
                    "processor keeps up, or librdkafka's prefetch queue (up to ~64 MB) fills and RSS grows")
    ap.add_argument("--child", nargs=3, metavar=("BOOTSTRAP", "TAG", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.duration, args.warmup, args.child[2])
        return 0
    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with private_broker() as broker, tempfile.TemporaryDirectory(prefix="dtlive-bench-trace-") as tmp:
        bs, tag = broker.bootstrap, f"trace{os.getpid()}"
        cfg = bench_config(bs, tag=tag)
        ensure_topics(cfg, bs, [cfg.hits_topic, cfg.monitor_topic])
        out = Path(tmp) / "trace.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DTLIVE_", "KAFKA_"))}
        env["DTLIVE_DB"] = f"sqlite:///{Path(tmp) / 'ledger.sqlite'}"
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.memory_trace", "--duration", str(args.duration),
                                 "--warmup", str(args.warmup), "--child", bs, tag, str(out)], env=env)
        try:
            time.sleep(5)
            log(f"memory_trace: emulating {args.rate:g} rows/s for {args.duration:g} s (processor under tracemalloc)")
            emulate(producer(bs), cfg.hits_topic, sim_chunks(args.rate), rate=args.rate, fmt="csv",
                    max_seconds=args.duration, progress=False, stop=lambda: proc.poll() is not None)
            proc.wait(timeout=120)
        finally:
            stop_process(proc)
        result = json.loads(out.read_text()) if out.exists() else {"error": "child wrote no result"}
    path = RESULTS_DIR / "memory_trace.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"RSS {result.get('rss_mb_after_warmup')} -> {result.get('rss_mb_end')} MB; Python-traced "
          f"{result.get('traced_mb_after_warmup')} -> {result.get('traced_mb_end')} MB; tracemalloc's own "
          f"{result.get('tracemalloc_own_mb_after_warmup')} -> {result.get('tracemalloc_own_mb_end')} MB")
    for r in result.get("top_growth_by_line", [])[:10]:
        print(f"  {r['size_diff_kb']:>9} KB {r['count_diff']:>8}  {r['where'][-1].strip()}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
