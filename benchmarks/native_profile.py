"""Where ``dtlive process --from-beginning --until-end`` spends its CPU, native frames included (py-spy).

A fresh embedded broker gets a pre-filled topic (as in :mod:`benchmarks.end_to_end`); then the CLI runs from
spawn to exit under ``py-spy record --native`` (samples of every thread: Python frames, and the C frames of
numpy, orjson and librdkafka beneath them). Each sample is put in one stage by the innermost frame that names
one (from the leaf up): decoding, the window split, the products, the message (build and JSON), the Kafka
client (consume, produce, transactions), the ledger, imports and start-up; the rest is "other". The table
gives each stage's share of the samples, its sampled CPU time per hit and the frames that decided it; the second
lists the hottest leaf frames. Reading native stacks stops the process at every sample, so the run is slower
than without the profiler: the shares are the figures to compare, the times are the sampled ones.

    .venv/bin/python -m benchmarks.native_profile --quick                 # daq64 5M hits, csv 200k messages
    .venv/bin/python -m benchmarks.native_profile --only daq64 --no-reconstruction

Needs ``py-spy`` (``pip install py-spy``) and permission to trace a child process (root, or ptrace allowed).
Everything stays on 127.0.0.1; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, dtlive_cli, log, private_broker
from benchmarks.end_to_end import TIMEOUT_S, prefill

RATE_HZ = 100  # samples per second and thread (each sample stops the process while its native stack is read)
# (stage, what a frame's text contains): the first rule matching a frame, walking from the leaf up, decides
STAGES = (
    ("imports and start-up", ("<frozen importlib", "_find_and_load")),
    ("message: JSON", ("orjson", "json/encoder", "dumps")),
    ("message: build", ("dtlive/core/messages.py",)),
    ("products: reconstruction", ("dtlive/core/reco/", "dtlive/core/products/eventbase.py",
                                  "dtlive/core/products/segments.py", "dtlive/core/products/timebox.py",
                                  "dtlive/core/products/events.py", "dtlive/core/products/t0diff.py")),
    ("products: counting", ("dtlive/core/products/",)),
    ("window split", ("dtlive/core/windows.py",)),
    ("decode", ("dtlive/core/decode.py", "dtlive/core/rows.py")),
    ("ledger", ("dtlive/storage/", "sqlalchemy", "sqlite")),
    ("kafka: produce and transactions", ("produce", "commit_transaction", "send_offsets", "begin_transaction",
                                         "flush")),
    ("kafka: consume", ("consume", "rd_kafka", "librdkafka", "cimpl")),
)


def classify(stack: list[str]) -> tuple[str, str]:
    """The stage of one sampled stack (frames root first) and the frame that decided it.

    >>> classify(["run (dtlive/streaming/processor.py:1)", "decode (dtlive/core/decode.py:9)", "0x1 (libc.so.6)"])
    ('decode', 'decode (dtlive/core/decode.py:9)')
    >>> classify(["<module> (x.py:1)", "0x7f (libfoo.so)"])
    ('other', '0x7f (libfoo.so)')
    """
    for frame in reversed(stack):
        for stage, needles in STAGES:
            if any(n in frame for n in needles):
                return stage, frame
    return "other", stack[-1]


def summarise(raw: str, hits: int, top: int = 15) -> dict:
    """Stage shares and the hottest leaf frames of py-spy's raw (collapsed) output.

    >>> s = summarise("a (dtlive/core/decode.py:1);b (libc.so.6) 3\\nc (x.py:2) 1\\n", hits=1000)
    >>> s["samples"], s["stages"][0]["stage"], s["stages"][0]["share"], s["leaves"][0]["frame"]
    (4, 'decode', 0.75, 'b (libc.so.6)')
    >>> s["stages"][0]["where"]
    [['a (dtlive/core/decode.py:1)', 0.75]]
    """
    stages: collections.Counter[str] = collections.Counter()
    where: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        stack = stack_text.split(";")
        stage, frame = classify(stack)
        stages[stage] += int(count)
        where[stage][frame] += int(count)
        leaves[stack[-1]] += int(count)
    n = sum(stages.values()) or 1
    return {
        "samples": sum(stages.values()),
        "stages": [{"stage": k, "share": round(v / n, 4), "cpu_s": round(v / RATE_HZ, 3),
                    "ns_per_hit": round(1e9 * v / RATE_HZ / max(hits, 1), 1),
                    "where": [[f, round(c / n, 4)] for f, c in where[k].most_common(3)]}
                   for k, v in stages.most_common()],
        "leaves": [{"frame": k, "share": round(v / n, 4)} for k, v in leaves.most_common(top)],
    }


def profile_case(name: str, fmt: str, rows: int, rows_per_message: int, extra: tuple[str, ...]) -> dict:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with private_broker() as broker, tempfile.TemporaryDirectory(prefix="dtlive-pyspy-") as private:
        bs, topic = broker.bootstrap, f"bench.pyspy.{name}"
        log(f"native_profile/{name}: pre-filling {rows:,} rows")
        fill = prefill(bs, topic, fmt, rows, rows_per_message, "file")
        out = Path(private) / "profile.txt"
        tag = f"{name}{time.monotonic_ns() % 10**6}"
        args = ["--bootstrap", bs, "process", "--input", topic, "--output", f"bench.pyspy.out.{tag}", "--group-id",
                f"bench-pyspy-{tag}", "--from-beginning", "--until-end", *extra]
        t0 = time.perf_counter()
        proc = dtlive_cli(*args, private_dir=private, prefix=(pyspy, "record", "--native", "--format", "raw",
                                                              "--rate", str(RATE_HZ), "-o", str(out), "--"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"py-spy or dtlive process failed ({proc.returncode}): {stderr[-2000:]}")
        res = summarise(out.read_text(), fill["hits"])
    res.update(name=name, format=fmt, hits=fill["hits"], messages=fill["messages"], wall_s=round(wall, 2),
               cli_args=list(extra))
    return res


def print_table(res: dict) -> None:
    for name, r in res.items():
        print(f"\n== {name}: {r['hits']:,} hits in {r['messages']:,} messages, `dtlive process` {r['wall_s']} s "
              f"under py-spy --native ({r['samples']:,} samples at {RATE_HZ} Hz per thread)")
        print(f"  {'stage':34} {'share':>6} {'cpu s':>7} {'ns/hit':>8}")
        for s in r["stages"]:
            print(f"  {s['stage']:34} {s['share']:>6.1%} {s['cpu_s']:>7.2f} {s['ns_per_hit']:>8.1f}")
            for frame, share in s["where"]:
                print(f"      {share:>6.1%}  {frame[:90]}")
        print("  hottest leaf frames:")
        for leaf in r["leaves"][:10]:
            print(f"    {leaf['share']:>6.1%}  {leaf['frame'][:100]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.native_profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="daq64 5M hits, csv 200k messages (else 40M / 1M)")
    ap.add_argument("--only", default="csv,daq64", help="comma-separated cases: csv, daq64")
    ap.add_argument("--no-reconstruction", action="store_true", help="run dtlive process with --no-reconstruction")
    ap.add_argument("--name", help="results file name (default native_profile[-quick])")
    args = ap.parse_args(argv)
    cases = {"csv": ("csv", 200_000 if args.quick else 1_000_000, 1),
             "daq64": ("daq64", 5_000_000 if args.quick else 40_000_000, 10_000)}
    extra = ("--no-reconstruction",) if args.no_reconstruction else ()
    res = {n: profile_case(n, *cases[n], extra) for n in args.only.split(",") if n}
    print_table(res)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{args.name or 'native_profile' + ('-quick' if args.quick else '')}.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
