"""End to end, as users run it: ``dtlive process --from-beginning --until-end`` from start to exit, cold.

For each input (``csv``: one row per message; ``daq64``: 10,000 words per message at run 591's density;
``daq64_dense``: the simulator at 2M rows per event-time second) a fresh embedded broker gets a pre-filled
topic; then, in the same run and alternately:

* **raw**: a new Python process that does nothing but a plain ``confluent_kafka.Consumer`` with the
  processor's consumer settings, assigned at the beginning, batched ``consume()`` until every message is in,
  then exit. It imports nothing of dtlive. This is the limit the client library and the broker set.
* **floor**: the raw consumer that also reads, of every message, what any processor must read through the
  client library's API: its headers (the format and orbit-epoch headers), partition and offset. What that
  costs per message is the client library's, whatever the processing after it; ``floor_ratio`` (floor / raw)
  is the most a processor reading every message's headers can reach.
* **cli**: ``python -m dtlive process --from-beginning --until-end`` with a new group id and output topic,
  the ledger on (SQLite in a private directory, as by default), and once more with ``--no-ledger`` (which of
  the two goes first alternates between repeats).

Both are timed by this process from spawn to exit (``wall_s``), with their CPU time (user + system, all
threads) from the kernel. Each also reports from inside when its first input arrived, counted from its own
exec (``first_input_s``: interpreter, imports, set-up and the first fetch) and how long reading took from
there (``input_s``): the processor prints these on its last line. Rates are hits (and messages) per second
of ``wall_s``; ``ratio`` is cli / raw of the same run. The processor's published windows are read back and
their hits compared with the hits counted in the input as it was written: a miscount fails the verdict.

The run bookkeeping (the ledger's record of the run, kept by a child process) is reported two ways: ``ledger``,
the wall time of the run with the ledger against the one without (``ledger_cost``: on a 2-core machine shared
with the broker a pair of runs differs by several per cent either way, whatever the ledger does), and
``bookkeeping``, the CPU seconds the child used (the processor's last line gives them) as a share of the run's
CPU (``bookkeeping_cpu_share``): what the bookkeeping itself takes, and what its goal is checked on.

Goals: csv cli/raw >= 0.8, daq64 cli/raw >= 0.5, start-up to the first input <= 1 s, bookkeeping <= 2 % of the
CPU.

    .venv/bin/python -m benchmarks.end_to_end            # full: csv 10M messages, daq64 200M hits, dense 100M
    .venv/bin/python -m benchmarks.end_to_end --quick    # csv 1M, daq64 20M, dense 20M

Everything stays on 127.0.0.1; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.checks import CountedInput, count_check, verdict
from benchmarks.common import (
    RESULTS_DIR,
    dtlive_cli,
    file_source,
    loadavg,
    log,
    private_broker,
    producer,
    read_topic,
    sim_chunks,
)

GOALS = {"csv": 0.8, "daq64": 0.5}
GOAL_FIRST_INPUT_S = 1.0
GOAL_LEDGER_COST = 0.02
DENSE_RATE = 2_000_000
TIMEOUT_S = 1800

# The raw consumer: its own process, no dtlive import; prints one JSON line.
RAW = r"""
import json, sys, time
from pathlib import Path
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

def age():
    start = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
    return float(Path("/proc/uptime").read_text().split()[0]) - start / __import__("os").sysconf("SC_CLK_TCK")

conf, topic, messages, batch = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fields = sys.argv[6] == "fields"
c = Consumer(conf)
parts = c.list_topics(topic, timeout=15).topics[topic].partitions
c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
got = nbytes = 0
first = first_at = None
deadline = time.monotonic() + float(sys.argv[5])
while got < messages and time.monotonic() < deadline:
    for m in c.consume(min(batch, messages - got), 0.2):
        if m.error() is None:
            if first is None:
                first, first_at = age(), time.monotonic()
            got += 1
            nbytes += len(m.value())
            if fields:  # what a processor reads of each message besides its value
                m.headers(), m.partition(), m.offset()
done = time.monotonic()
c.close()
print(json.dumps({"messages": got, "bytes": nbytes, "first_input_s": first,
                  "input_s": None if first_at is None else done - first_at}))
"""

_PROCESSED = re.compile(r"processed (\d+) messages in ([\d.]+) s \(([\d,]+) msg/s, "
                        r"first input ([\d.]+) s after start\)")
_BOOKKEEPING = re.compile(r"run kept in the ledger with ([\d.]+) s of CPU")


def timed(cmd: list[str], **popen) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd`` to its exit: (result, wall seconds from spawn to exit, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, **popen)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out, wall, cpu


def prefill(bootstrap: str, topic: str, fmt: str, rows: int, rows_per_message: int, source: str) -> dict:
    """Exactly ``rows`` rows onto ``topic``; ``hits``: the hits among them, counted as they are sent."""
    from dtlive.config import load_config
    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate

    ensure_topics(load_config({}, env={}), bootstrap, [topic])
    chunks = file_source() if source == "file" else sim_chunks(DENSE_RATE, chunk_s=1.0, encode_csv_lines=False)
    counted = CountedInput(chunks, rows)
    t0 = time.perf_counter()
    stats = emulate(producer(bootstrap), topic, iter(counted), rate=None, fmt=fmt, rows_per_message=rows_per_message,
                    progress=False)
    if stats.rows != counted.rows_seen:
        raise RuntimeError(f"the emulator sent {stats.rows:,} of the {counted.rows_seen:,} rows it was given")
    return {"rows": stats.rows, "hits": counted.hits, "messages": stats.messages,
            "prefill_s": round(time.perf_counter() - t0, 2)}


def raw_run(bootstrap: str, topic: str, messages: int, fields: bool = False) -> dict:
    """The raw consume in a process of its own (``fields``: the floor, reading each message's headers too)."""
    from dtlive.config import load_config
    from dtlive.kafka.clients import consumer_config

    cfg = load_config({}, env={})
    conf = {**consumer_config(cfg, bootstrap, group_id=f"bench-raw-{time.monotonic_ns()}", from_beginning=True),
            "enable.partition.eof": False}
    conf = {k: v for k, v in conf.items() if isinstance(v, str | int | float | bool)}
    out, wall, cpu = timed([sys.executable, "-c", RAW, json.dumps(conf), topic, str(messages), "5000",
                            str(TIMEOUT_S), "fields" if fields else "value"])
    if out.returncode != 0:
        raise RuntimeError(f"raw consumer failed: {out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(wall_s=round(wall, 3), cpu_s=round(cpu, 3))
    res["count"] = count_check(messages, res["messages"], f"messages ({'floor' if fields else 'raw'} consumer)")
    return res


def cli_run(bootstrap: str, topic: str, tag: str, ledger: bool, n_hits: int, extra: tuple[str, ...] = ()) -> dict:
    out_topic, group = f"bench.e2e.out.{tag}", f"bench-e2e-{tag}"
    with tempfile.TemporaryDirectory(prefix="dtlive-e2e-") as private:
        args = ["--bootstrap", bootstrap, "process", "--input", topic, "--output", out_topic, "--group-id", group,
                "--from-beginning", "--until-end", *([] if ledger else ["--no-ledger"]), *extra]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = dtlive_cli(*args, private_dir=private, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"dtlive process exited {proc.returncode}: {stderr[-2000:]}")
    m = _PROCESSED.search(stderr)
    res = {"wall_s": round(wall, 3),
           "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3),
           "messages": int(m.group(1)) if m else None, "input_s": float(m.group(2)) if m else None,
           "first_input_s": float(m.group(4)) if m else None, "last_line": stderr.strip().splitlines()[-1][-300:]}
    kept = _BOOKKEEPING.search(stderr)
    res["bookkeeping_cpu_s"] = float(kept.group(1)) if kept else None
    windows = read_topic(bootstrap, out_topic, timeout=120, isolation="read_committed")
    counted = late = 0
    for w in windows:
        msg = json.loads(w.value())
        counted += int(msg["total_hits"])
        late += int(msg["counts"]["late_hits"])
    res.update(windows=len(windows), hits_counted=counted)
    res["count"] = count_check(n_hits, counted, late=late)
    return res


def bench_case(name: str, fmt: str, rows: int, rows_per_message: int, source: str, repeats: int,
               extra: tuple[str, ...] = ()) -> dict:
    with private_broker() as broker:
        bs, topic = broker.bootstrap, f"bench.e2e.{name}"
        log(f"end_to_end/{name}: pre-filling {rows:,} rows ({source}, {rows_per_message} per message)")
        fill = prefill(bs, topic, fmt, rows, rows_per_message, source)
        log(f"end_to_end/{name}: {fill['messages']:,} messages, {fill['hits']:,} hits in {fill['prefill_s']} s")
        runs = []
        for i in range(repeats):
            load = loadavg()
            raw = raw_run(bs, topic, fill["messages"])
            floor = raw_run(bs, topic, fill["messages"], fields=True)
            tag = f"{name}{i}{time.monotonic_ns() % 10**6}"
            # the ledger's cost is the difference of two runs: which goes first alternates, so that what the
            # order does (the broker's state after a run, the machine's) is not taken for it
            order = (True, False) if i % 2 == 0 else (False, True)
            done = {ledger: cli_run(bs, topic, tag + ("" if ledger else "n"), ledger=ledger, n_hits=fill["hits"],
                                    extra=extra) for ledger in order}
            cli, bare = done[True], done[False]
            runs.append({"raw": raw, "floor": floor, "cli": cli, "cli_no_ledger": bare, "loadavg_start": load,
                         "loadavg_end": loadavg()})
            log(f"end_to_end/{name} #{i}: raw {raw['wall_s']} s (first input {raw['first_input_s']:.2f} s), "
                f"cli {cli['wall_s']} s (first input {cli['first_input_s']} s), no ledger {bare['wall_s']} s; "
                f"ratio {raw['wall_s'] / cli['wall_s']:.3f}; floor {floor['wall_s']} s (floor ratio "
                f"{raw['wall_s'] / floor['wall_s']:.3f})")
    med = statistics.median
    hits, msgs = fill["hits"], fill["messages"]
    raw_wall, cli_wall = med(r["raw"]["wall_s"] for r in runs), med(r["cli"]["wall_s"] for r in runs)
    bare_wall = med(r["cli_no_ledger"]["wall_s"] for r in runs)
    ratio = med(r["raw"]["wall_s"] / r["cli"]["wall_s"] for r in runs)
    first = med(r["cli"]["first_input_s"] for r in runs if r["cli"]["first_input_s"] is not None)
    ledger_cost = med(r["cli"]["wall_s"] / r["cli_no_ledger"]["wall_s"] - 1 for r in runs)
    shares = [r["cli"]["bookkeeping_cpu_s"] / r["cli"]["cpu_s"] for r in runs if r["cli"]["bookkeeping_cpu_s"]]
    bookkeeping = med(shares) if shares else float("nan")
    out = {
        "name": name, "format": fmt, "rows_per_message": rows_per_message,
        "data": "run000591_hits.csv looped (real hits)" if source == "file"
        else f"simulator at {DENSE_RATE:,} rows per event-time second",
        "rows": fill["rows"], "hits": hits, "messages": msgs, "prefill": fill, "repeats": repeats,
        "cli_args": list(extra),
        "raw_wall_s": raw_wall, "cli_wall_s": cli_wall, "cli_no_ledger_wall_s": bare_wall,
        "raw_hits_per_s": round(hits / raw_wall), "cli_hits_per_s": round(hits / cli_wall),
        "raw_msgs_per_s": round(msgs / raw_wall), "cli_msgs_per_s": round(msgs / cli_wall),
        "ratio": round(ratio, 3),
        "floor_wall_s": med(r["floor"]["wall_s"] for r in runs),
        "floor_ratio": round(med(r["raw"]["wall_s"] / r["floor"]["wall_s"] for r in runs), 3),
        "raw_first_input_s": round(med(r["raw"]["first_input_s"] for r in runs), 3),
        "cli_first_input_s": round(first, 3),
        "cli_steady_hits_per_s": round(hits / med(r["cli"]["input_s"] for r in runs)),
        "raw_steady_hits_per_s": round(hits / med(r["raw"]["input_s"] for r in runs)),
        "ledger_cost": round(ledger_cost, 4),
        "bookkeeping_cpu_share": round(bookkeeping, 4),
        "cli_cpu_ns_per_hit": round(1e9 * med(r["cli"]["cpu_s"] for r in runs) / hits, 1),
        "raw_cpu_ns_per_hit": round(1e9 * med(r["raw"]["cpu_s"] for r in runs) / hits, 1),
        "runs": runs,
    }
    goal = GOALS.get(fmt) if source == "file" else None
    out["goal"] = (f"cli/raw >= {goal}, first input <= {GOAL_FIRST_INPUT_S} s, bookkeeping <= {GOAL_LEDGER_COST:.0%} "
                   "of the CPU") if goal else "(no ratio goal: the per-hit ceiling with huge windows)"
    met = None if goal is None else bool(ratio >= goal and first <= GOAL_FIRST_INPUT_S
                                         and bookkeeping <= GOAL_LEDGER_COST)
    checks = [c for r in runs for c in (r["raw"]["count"], r["floor"]["count"], r["cli"]["count"],
                                        r["cli_no_ledger"]["count"])]
    out["target_met"], out["verdict"] = verdict(met, checks)
    return out


def run(quick: bool = False, repeats: int | None = None, only: tuple[str, ...] = ("csv", "daq64", "daq64_dense"),
        extra: tuple[str, ...] = ()) -> dict:
    repeats = repeats or (1 if quick else 2)
    cases = {"csv": ("csv", 1_000_000 if quick else 10_000_000, 1, "file"),
             "daq64": ("daq64", 20_000_000 if quick else 200_000_000, 10_000, "file"),
             "daq64_dense": ("daq64", 20_000_000 if quick else 100_000_000, 10_000, "sim")}
    return {name: bench_case(name, *cases[name], repeats=repeats, extra=extra) for name in only}


def print_table(res: dict) -> None:
    print("\n== End to end: `dtlive process --from-beginning --until-end` from start to exit, cold, beside a raw "
          "consume in its own process (same topic, same run)")
    print(f"  {'case':11} {'hits':>11} {'msgs':>10} {'raw hits/s':>12} {'cli hits/s':>12} {'ratio':>6} "
          f"{'floor':>6} {'1st input':>9} {'raw 1st':>8} {'ledger':>7} {'bookkeeping':>11} {'ns/hit':>7}  verdict")
    for name, r in res.items():
        print(f"  {name:11} {r['hits']:>11,} {r['messages']:>10,} {r['raw_hits_per_s']:>12,} "
              f"{r['cli_hits_per_s']:>12,} {r['ratio']:>6.3f} {r['floor_ratio']:>6.3f} "
              f"{r['cli_first_input_s']:>8.2f}s {r['raw_first_input_s']:>7.2f}s "
              f"{r['ledger_cost']:>+7.1%} {r['bookkeeping_cpu_share']:>11.2%} {r['cli_cpu_ns_per_hit']:>7.0f}  "
              f"{r['verdict']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller inputs, one repeat")
    ap.add_argument("--repeats", type=int, help="runs of each kind per case (default 2, --quick 1)")
    ap.add_argument("--only", default="csv,daq64,daq64_dense", help="comma-separated cases")
    ap.add_argument("--name", help="results file name (default end_to_end[-quick])")
    ap.add_argument("--no-reconstruction", action="store_true", help="run dtlive process with --no-reconstruction")
    args = ap.parse_args(argv)
    res = run(args.quick, args.repeats, tuple(x for x in args.only.split(",") if x),
              ("--no-reconstruction",) if args.no_reconstruction else ())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    from benchmarks.run import environment

    path = RESULTS_DIR / f"{args.name or 'end_to_end' + ('-quick' if args.quick else '')}.json"
    path.write_text(json.dumps({"command": " ".join(["python", "-m", "benchmarks.end_to_end", *(argv or sys.argv[1:])]),
                                "environment": environment(), "results": res}, indent=1, default=str) + "\n")
    print_table(res)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
