"""Soak: the stack at a steady rate for a long time, with faults injected on a schedule.

    .venv/bin/python -m benchmarks.soak --minutes 60 --rate 10000           # the figures in docs/performance.md
    .venv/bin/python -m benchmarks.soak --minutes 5 --rate 2000 --every 40  # a short try

A broker of its own (embedded Tansu on a free loopback port), PostgreSQL behind a loopback proxy the benchmark
can cut (a database of its own, dropped at the end; SQLite and no database fault without PostgreSQL), and the
services as users run them: ``dtlive process``, ``dtlive record`` and ``dtlive emulate --simulate``. The
benchmark is their supervisor: a service that exits is started again at once, and that is counted.

Every ``--every`` seconds the next fault of the cycle: a broker stall (SIGSTOP for 15 s), a broker restart (empty,
same port), kill -9 of the processor, a database outage (20 s, every connection cut), poison messages (malformed
rows, a 2 MB message, an absurd epoch header, one hit far ahead of the stream). A follower reads every result
(following the broker through its restarts). The report: rows sent against rows counted and rejected by reason,
the longest gap between results, the recovery time after each fault (until the next result), memory over time.
Everything runs on loopback and stops by itself after ``--minutes`` (plus a bounded drain).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks.common import RESULTS_DIR, free_port, log, rss_mb
from dtlive.config import Config
from dtlive.core.messages import EPOCH_HEADER, FORMAT_HEADER

FAULTS = ("broker_stall", "broker_restart", "processor_kill", "database_outage", "poison")
PG = "postgresql://postgres@127.0.0.1:5432"


class CuttableProxy:
    """A loopback TCP proxy to ``target``; :meth:`cut` closes every connection and refuses new ones for a while."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._up = threading.Event()
        self._up.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = False
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop:
                for key, _ in sel.select(0.5):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self, seconds: float) -> None:
        self._up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()
        time.sleep(seconds)
        self._up.set()

    def close(self) -> None:
        self._stop = True
        self._server.close()


class Follower(threading.Thread):
    """Reads every committed result, following the broker when it is replaced (a restart starts it empty)."""

    def __init__(self, bootstrap: str, topic: str = Config.monitor_topic):
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.windows: dict[tuple, dict] = {}  # (window id, run id, rows, hits) -> first arrival
        self.arrivals: list[float] = []
        self.duplicates = 0
        self.restarts = 0
        self._done = threading.Event()

    def _consumer(self):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"soak-{uuid.uuid4().hex[:6]}",
                      "isolation.level": "read_committed", "enable.auto.commit": False, "log_level": 0,
                      "socket.timeout.ms": 10000})
        c.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        return c

    def _cluster(self) -> str | None:
        from confluent_kafka.admin import AdminClient

        try:
            return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0}).list_topics(timeout=2).cluster_id
        except Exception:  # noqa: BLE001 - away: ask again later
            return None

    def run(self) -> None:
        consumer, cluster, asked = self._consumer(), self._cluster(), time.monotonic()
        while not self._done.is_set():
            for m in consumer.consume(500, 0.5):
                if m.error():
                    continue
                msg = json.loads(m.value())
                key = (msg["window"]["id"], msg["provenance"].get("run_id"), msg["counts"]["rows"], msg["total_hits"])
                if key in self.windows:
                    self.duplicates += 1
                    continue
                self.windows[key] = {"t": time.time(), "rows": msg["counts"]["rows"], "hits": msg["total_hits"],
                                     "late": msg["counts"]["late_hits"], "rejected": msg["counts"]["rejected"]}
                self.arrivals.append(time.time())
            if time.monotonic() - asked > 2:
                asked, now = time.monotonic(), self._cluster()
                if now is not None and cluster is not None and now != cluster:
                    self.restarts += 1
                    consumer.close()
                    consumer = self._consumer()
                cluster = now or cluster
        consumer.close()

    def stop(self) -> None:
        self._done.set()


class Stack:
    """Broker, processor, recorder and emulator; restarts a service that exits (the benchmark is the supervisor)."""

    def __init__(self, work: Path, db_url: str, rate: float, seconds: float):
        from dtlive.kafka.broker import EmbeddedBroker

        self.work, self.db_url, self.rate, self.seconds = work, db_url, rate, seconds
        self.port = free_port()
        self.broker = EmbeddedBroker(port=self.port, state_dir=work / "state").start()
        self.env = {**os.environ, "DTLIVE_DB": db_url, "DTLIVE_HISTORY": str(work / "history"),
                    "DTLIVE_STATE_DIR": str(work / "state")}
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self.exits: list[dict] = []
        self.start("process", "process")
        self.start("record", "record")

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start(self, name: str, *args: str) -> None:
        out = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "dtlive", "--bootstrap", self.bootstrap, *args],
                                            env=self.env, stdout=subprocess.DEVNULL, stderr=out)
        self.args = getattr(self, "args", {})
        self.args[name] = args

    def supervise(self) -> None:
        for name, proc in list(self.procs.items()):
            if name != "emulate" and proc.poll() is not None:
                self.exits.append({"service": name, "status": proc.returncode, "t": time.time()})
                self.restarts[name] = self.restarts.get(name, 0) + 1
                log(f"soak: {name} exited with {proc.returncode}; starting it again")
                self.start(name, *self.args[name])

    def restart_broker(self) -> None:
        from dtlive.kafka.broker import EmbeddedBroker

        self.broker.stop()
        self.broker = EmbeddedBroker(port=self.port, state_dir=self.work / "state").start()

    def memory(self) -> dict:
        out = {}
        for name, pid in [("broker", self.broker.pid), *((n, p.pid) for n, p in self.procs.items())]:
            with contextlib.suppress(Exception):
                out[name] = rss_mb(pid)[0]
        return out

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.broker.stop()


def poison(bootstrap: str) -> int:
    """Produce bad input; returns how many rows the broker took (each must come back counted, as a reject)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000, "log_level": 0})
    delivered = []
    messages = [
        (b"2,0,5,notanumber,0,0", []), (b"9,9,9", []), (b"\xff\xfe\x00garbage", []), (b"2,0,5,100,7", []),
        (b"x" * 2_000_000, []),  # one 2 MB line
        (b"2,0,5,100,7,3", [(EPOCH_HEADER, b"1e30")]),  # an absurd epoch
        (b"2,0,5,999999999999,0,0", []),  # one hit far ahead of the stream
    ]
    for value, headers in messages:
        p.produce(Config.hits_topic, value, headers=[(FORMAT_HEADER, b"csv"), *headers],
                  on_delivery=lambda err, msg: delivered.append(err is None))
    p.flush(30)
    return sum(delivered)


def db_url_for_run() -> tuple[str, str | None, CuttableProxy | None]:
    """A PostgreSQL database of this run's own behind a cuttable proxy, or SQLite when PostgreSQL is absent."""
    name = f"dtlive_soak_{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["psql", PG + "/postgres", "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True,
                       timeout=30)
    except (OSError, subprocess.SubprocessError):
        return f"sqlite:///{tempfile.mkdtemp()}/ledger.sqlite", None, None
    proxy = CuttableProxy(("127.0.0.1", 5432))
    return f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{name}", name, proxy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long the input runs (default 60)")
    ap.add_argument("--rate", type=float, default=10_000, help="simulated rows per second (default 10000)")
    ap.add_argument("--every", type=float, default=360.0, help="seconds between faults (default 360)")
    ap.add_argument("--name", default="soak", help="results file benchmarks/results/NAME.json")
    args = ap.parse_args(argv)
    seconds = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="dtlive-soak-"))
    db_url, db_name, proxy = db_url_for_run()
    log(f"soak: {args.minutes:g} min at {args.rate:,.0f} rows/s, a fault every {args.every:g} s; work dir {work}; "
        f"ledger {'PostgreSQL ' + db_name if db_name else 'SQLite (no database fault)'}")
    stack = Stack(work, db_url, args.rate, seconds)
    follower = Follower(stack.bootstrap)
    follower.start()
    faults: list[dict] = []
    memory: list[dict] = []
    poison_rows = 0
    try:
        deadline = time.monotonic() + 120  # the processor is up once it has committed its first checkpoint
        while time.monotonic() < deadline and "fence" not in _checkpoint_state(stack.bootstrap):
            time.sleep(1)
        stack.start("emulate", "emulate", "--simulate", "--rate", f"{args.rate:g}", "--format", "daq64",
                    "--duration", f"{seconds:g}s")
        started = time.monotonic()
        next_fault, cycle, last_mem = started + args.every, 0, 0.0
        while stack.procs["emulate"].poll() is None and time.monotonic() - started < seconds + 120:
            now = time.monotonic()
            stack.supervise()
            if now - last_mem >= 10:
                memory.append({"t_s": round(now - started, 1), **stack.memory()})
                last_mem = now
            if now >= next_fault and now - started < seconds - 30:
                kind = FAULTS[cycle % len(FAULTS)]
                cycle += 1
                if kind == "database_outage" and proxy is None:
                    kind = "poison"
                fault = {"kind": kind, "t": time.time()}
                log(f"soak: {kind} at {now - started:.0f} s")
                if kind == "broker_stall":
                    os.kill(stack.broker.pid, signal.SIGSTOP)
                    time.sleep(15)
                    os.kill(stack.broker.pid, signal.SIGCONT)
                elif kind == "broker_restart":
                    stack.restart_broker()
                elif kind == "processor_kill":
                    stack.procs["process"].send_signal(signal.SIGKILL)
                    stack.procs["process"].wait(10)
                    stack.supervise()
                elif kind == "database_outage":
                    proxy.cut(20)
                elif kind == "poison":
                    poison_rows += poison(stack.bootstrap)
                fault["end"] = time.time()
                faults.append(fault)
                next_fault = now + args.every
            time.sleep(0.5)
        emulated = stack.procs["emulate"].wait(60)
        sent = _sent_rows(work / "emulate.log")
        expected = sent + poison_rows
        drain = time.monotonic() + 120  # everything sent is counted, or the drain runs out
        while time.monotonic() < drain and sum(w["rows"] for w in follower.windows.values()) < expected:
            stack.supervise()
            time.sleep(1)
    finally:
        follower.stop()
        follower.join(10)
        stack.close()
        if proxy is not None:
            proxy.close()
        if db_name:
            subprocess.run(["psql", PG + "/postgres", "-qc", f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"],
                           capture_output=True, timeout=60)
    report = summarize(follower, faults, memory, stack, sent, poison_rows, emulated, args)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{args.name}.json").write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    return 0 if report["verdict"] == "met" else 1


def _checkpoint_state(bootstrap: str) -> str:
    from dtlive.config import load_config
    from dtlive.kafka.clients import partition_ends
    from dtlive.streaming.processor import checkpoint_topic

    cfg = load_config({}, env={})
    ends = partition_ends(cfg, bootstrap, checkpoint_topic(cfg), timeout=3)
    return "fence" if any(high > 0 for _, high in ends.values()) else ""


def _sent_rows(path: Path) -> int:
    found = re.findall(r"sent (\d+) rows", path.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def summarize(follower: Follower, faults: list[dict], memory: list[dict], stack: Stack, sent: int, poison_rows: int,
              emulated: int | None, args) -> dict:
    windows = sorted(follower.windows.values(), key=lambda w: w["t"])
    counted = sum(w["rows"] for w in windows)
    rejected: dict[str, int] = {}
    for w in windows:
        for reason, n in w["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + n
    arrivals = [w["t"] for w in windows]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    for f in faults:
        after = [t for t in arrivals if t > f["end"]]
        f["recovery_s"] = round(after[0] - f["end"], 2) if after else None
    expected = sent + poison_rows
    missing = expected - counted
    mem_first = memory[min(len(memory) - 1, 6)] if memory else {}
    report = {
        "minutes": args.minutes, "rate": args.rate, "every_s": args.every, "emulator_status": emulated,
        "rows_sent": sent, "poison_rows": poison_rows, "rows_counted": counted, "rows_missing": missing,
        "rejected_by_reason": rejected, "late_hits": sum(w["late"] for w in windows), "windows": len(windows),
        "duplicate_results": follower.duplicates, "broker_restarts_followed": follower.restarts,
        "longest_gap_s": round(max(gaps), 2) if gaps else None, "faults": faults,
        "service_exits": stack.exits, "memory_mb": memory,
        "memory_after_1min_mb": mem_first, "memory_at_end_mb": memory[-1] if memory else {},
    }
    report["verdict"] = "met" if missing == 0 and emulated == 0 else "not met"
    return report


def print_report(r: dict) -> None:
    print(f"\nsoak {r['minutes']:g} min at {r['rate']:,.0f} rows/s: {r['verdict']}")
    print(f"  rows sent {r['rows_sent']:,} + poison {r['poison_rows']:,} = "
          f"{r['rows_sent'] + r['poison_rows']:,}; counted {r['rows_counted']:,} (missing {r['rows_missing']:,}); "
          f"rejected by reason {r['rejected_by_reason']}; late {r['late_hits']:,}")
    print(f"  windows {r['windows']:,}, longest gap between results {r['longest_gap_s']} s, "
          f"broker restarts followed {r['broker_restarts_followed']}, service exits {len(r['service_exits'])}")
    for f in r["faults"]:
        print(f"  {f['kind']:<16} recovered after {f['recovery_s']} s")
    print(f"  memory (MB) after 1 min {r['memory_after_1min_mb']}, at the end {r['memory_at_end_mb']}")


if __name__ == "__main__":
    sys.exit(main())
