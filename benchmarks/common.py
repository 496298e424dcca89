"""Shared plumbing of the benchmarks: a private broker, topics, data, RSS, profiles, statistics.

Everything here is thin glue around dtlive's own API (``EmbeddedBroker``, ``emulate``,
``Processor``, ``decode``); nothing of the library is re-implemented.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = next((p for p in (ROOT.parent / "shared" / "data" / "run000591_hits.csv",
                               Path("/work/shared/data/run000591_hits.csv")) if p.is_file()),
                 ROOT.parent / "shared" / "data" / "run000591_hits.csv")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- broker and topics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_broker() -> Iterator:
    """A fresh embedded Tansu broker on a free loopback port with a temporary state dir."""
    from dtlive.kafka.broker import EmbeddedBroker

    state = tempfile.mkdtemp(prefix="dtlive-bench-")
    broker = EmbeddedBroker(port=free_port(), state_dir=state).start()
    log(f"broker {broker.bootstrap} (pid {broker.pid})")
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(state, ignore_errors=True)


RECONSTRUCTION: bool | None = None  # None: dtlive's default; ``benchmarks.run --no-reconstruction`` sets False


def bench_config(bootstrap: str, tag: str | None = None, **overrides):
    """A dtlive Config with unique topic names and group id (so runs never see each other's data)."""
    from dtlive.config import load_config

    tag = tag or uuid.uuid4().hex[:8]
    values = {
        **({} if RECONSTRUCTION is None else {"reconstruction": RECONSTRUCTION}),
        "bootstrap": bootstrap,
        "hits_topic": f"bench.hits.{tag}",
        "monitor_topic": f"bench.monitor.{tag}",
        "rejected_topic": f"bench.rejected.{tag}",
        "group_id": f"bench-proc-{tag}",
        **overrides,
    }
    return load_config(values, env={})


def producer(bootstrap: str):
    """A producer configured like ``dtlive emulate`` (:func:`dtlive.kafka.emulator.emulator_producer`)."""
    from confluent_kafka import Producer

    from dtlive.config import load_config
    from dtlive.kafka.emulator import emulator_producer

    p = emulator_producer(load_config({"bootstrap": bootstrap}, env={}), bootstrap)
    assert isinstance(p.producer, Producer)  # the emulator's producer sends again what a broker restart lost
    return p


def observer_consumer(bootstrap: str, **extra):
    """A plain assigned consumer (no group join) that sees committed data quickly."""
    from confluent_kafka import Consumer

    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-observer-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 10,
        "log_level": 3,
        **extra,
    }
    return Consumer(conf)


def read_topic(bootstrap: str, topic: str, expect: int | None = None, timeout: float = 120.0,
               isolation: str = "read_uncommitted") -> list:
    """Every message of partition 0 of ``topic`` (bounded by ``timeout``); message objects."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = observer_consumer(bootstrap, **{"isolation.level": isolation, "fetch.wait.max.ms": 100})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        target = max(high, expect or 0)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out, deadline, quiet = [], time.monotonic() + timeout, time.monotonic()
        while len(out) < target and time.monotonic() < deadline and time.monotonic() - quiet < 5:
            msgs = c.consume(50_000, 0.5)
            if msgs:
                quiet = time.monotonic()
            out += [m for m in msgs if m.error() is None]
        return out
    finally:
        c.close()


# ---------------------------------------------------------------- data


def file_source():
    """The real run-591 hits (all HEAD 2), replayed in a loop with increasing orbits."""
    from dtlive.kafka.emulator import file_chunks

    return file_chunks([str(DATA_FILE)], loop=True)


def matched_sim_config(rows_per_s: float):
    """A simulator configuration whose *event-time* row rate is ~``rows_per_s``.

    With it the emulator paced at ``rows_per_s`` plays event time at wall-clock speed, as a real DAQ
    would, so 2 s windows last 2 s of wall time. ~96 % hits (HEAD 2), ~4 % ancillary rows;
    the muon rate is the real 140 Hz, capped to stay below 30 % of the hits.
    """
    from dtlive.core.simulate import SimConfig

    hits = 0.96 * rows_per_s
    hits_per_muon = 11.0
    return SimConfig(
        hit_rate_hz=hits,
        muon_rate_hz=min(140.0, 0.3 * hits / hits_per_muon),
        ancillary_rate_hz=0.04 * rows_per_s / 10.0,  # packets of 5 rows, per FPGA (2 FPGAs)
    )


def sim_chunks(rows_per_s: float, seed: int = 0, chunk_s: float = 0.25, encode_csv_lines: bool = True):
    """Endless simulator chunks at wall-clock-matched density (see :func:`matched_sim_config`).

    With ``encode_csv_lines`` every chunk carries its CSV lines already (like a file replay), so
    the emulator does not stall encoding a chunk inside its paced loop.
    """
    from dtlive.core.decode import encode_csv
    from dtlive.core.simulate import stream
    from dtlive.kafka.emulator import Chunk

    for rows in stream(chunk_s=chunk_s, seed=seed, config=matched_sim_config(rows_per_s)):
        yield Chunk(rows, encode_csv(rows) if encode_csv_lines else None)


def pregenerate(chunks, rows: int) -> list:
    """The first chunks holding at least ``rows`` rows, as a list (generated before any timing)."""
    out, n = [], 0
    for c in chunks:
        out.append(c)
        n += len(c.rows)
        if n >= rows:
            break
    return out


# ---------------------------------------------------------------- processes and memory


def loadavg() -> list[float] | None:
    """The machine's 1/5/15-minute load averages: other work on a shared machine skews every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc (nan if unavailable)."""
    rss = hwm = float("nan")
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all threads)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def dtlive_cli(*args: str, private_dir: str | os.PathLike[str], prefix: tuple[str, ...] = (),
               kafka: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """``dtlive ARGS`` as a subprocess of the venv's Python, isolated from the user's dtlive state.

    ``prefix``: a command that runs it (a profiler, say: ``("py-spy", "record", ..., "--")``). ``kafka``:
    librdkafka settings for its clients (``{"fetch.wait.max.ms": "20"}``), as ``KAFKA_*`` variables.

    No ``DTLIVE_*`` setting of the caller leaks in; the ledger (``DTLIVE_DB``), history store and broker
    state directory all live in ``private_dir``, so a benchmark never writes into the user's files.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTLIVE_", "KAFKA_"))}
    private = Path(private_dir)
    env.update(DTLIVE_DB=f"sqlite:///{private / 'ledger.sqlite'}", DTLIVE_HISTORY=str(private / "history"),
               DTLIVE_STATE_DIR=str(private / "state"))
    if RECONSTRUCTION is not None:
        env["DTLIVE_RECONSTRUCTION"] = str(RECONSTRUCTION).lower()
    env.update({"KAFKA_" + key.upper().replace(".", "_"): str(value) for key, value in (kafka or {}).items()})
    return subprocess.Popen([*prefix, sys.executable, "-m", "dtlive", *args], env=env, **popen)


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> int | None:
    """SIGINT (the processor commits and exits), then SIGTERM, then SIGKILL — this process only."""
    import signal

    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    return proc.poll()


# ---------------------------------------------------------------- statistics and profiles


def percentiles(values, ps=(50, 90, 99)) -> dict:
    a = np.asarray(values, float)
    if not len(a):
        return {f"p{p}": None for p in ps} | {"max": None, "n": 0}
    return {f"p{p}": round(float(np.percentile(a, p)), 4) for p in ps} | {
        "min": round(float(a.min()), 4), "max": round(float(a.max()), 4), "mean": round(float(a.mean()), 4),
        "n": int(len(a))}


def slope_per_minute(t_s, values) -> float | None:
    """Least-squares slope of ``values`` against time, per minute."""
    t, v = np.asarray(t_s, float), np.asarray(values, float)
    if len(t) < 3 or np.ptp(t) <= 0:
        return None
    return float(np.polyfit(t, v, 1)[0] * 60)


def _hotspots(prof: cProfile.Profile, wall: float, top: int) -> dict:
    st = pstats.Stats(prof, stream=io.StringIO())

    def name(func) -> str:  # dtlive/<module path>, else the file's folder and name
        path, line, fname = func
        if path == "~":
            return fname
        parts = Path(path).parts
        start = max((i for i, part in enumerate(parts[:-1]) if part == "dtlive"), default=len(parts) - 2)
        return f"{'/'.join(parts[start:])}:{line}:{fname}"

    rows = [
        {"function": name(func), "calls": nc, "own_s": round(tt, 4), "cum_s": round(ct, 4),
         "own_pct": round(100 * tt / wall, 1), "cum_pct": round(100 * ct / wall, 1)}
        for func, (_cc, nc, tt, ct, _callers) in st.stats.items()
    ]
    return {"total_own_s": round(st.total_tt, 3),
            "by_own_time": sorted(rows, key=lambda r: -r["own_s"])[:top],
            "by_cumulative_time": sorted(rows, key=lambda r: -r["cum_s"])[:top],
            "dtlive_by_cumulative_time": sorted((r for r in rows if r["function"].startswith("dtlive/")),
                                                key=lambda r: -r["cum_s"])}


def profile_call(fn, loop=None, top: int = 30) -> tuple[object, dict]:
    """Run ``fn()`` under cProfile; return its result and the hotspots, as % of the call's wall time.

    cProfile (Python 3.11) sees one thread only. dtlive's streamz source hands every batch to the
    streamz IO-loop thread (``Stream.emit`` -> ``sync(loop, ...)``) and waits there, so with ``loop``
    (a tornado IOLoop) a second profiler is switched on inside that thread and reported separately.
    """
    import threading

    main = cProfile.Profile()
    other = cProfile.Profile() if loop is not None else None

    def in_loop(action):
        done = threading.Event()

        def cb():
            action()
            done.set()

        loop.add_callback(cb)
        done.wait(10)

    if other is not None:
        in_loop(other.enable)
    t0 = time.perf_counter()
    try:
        result = main.runcall(fn)
    finally:
        wall = time.perf_counter() - t0
        if other is not None:
            in_loop(other.disable)
    out = {"profiled_wall_s": round(wall, 3), "main_thread": _hotspots(main, wall, top)}
    if other is not None:
        out["streamz_loop_thread"] = _hotspots(other, wall, top)
    return result, out


def print_hotspots(profile: dict, n: int = 12) -> None:
    for thread in ("streamz_loop_thread", "main_thread"):
        if thread not in profile:
            continue
        print(f"    cProfile {thread} (% of {profile['profiled_wall_s']} s wall), top by own time:")
        for r in profile[thread]["by_own_time"][:n]:
            print(f"      {r['own_pct']:5.1f}% own {r['cum_pct']:5.1f}% cum {r['calls']:>9}  {r['function']}")
        mine = profile[thread]["dtlive_by_cumulative_time"]
        if mine:
            print(f"    cProfile {thread}, dtlive functions by cumulative time:")
            for r in mine[:n]:
                print(f"      {r['cum_pct']:5.1f}% cum {r['own_pct']:5.1f}% own {r['calls']:>9}  {r['function']}")
