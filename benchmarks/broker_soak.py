"""Broker soak: does the embedded broker hold a shift under the stack a notebook leaves running?

    .venv/bin/python -m benchmarks.broker_soak --minutes 30            # -> results/broker_soak.json
    .venv/bin/python -m benchmarks.broker_soak --minutes 5 --viewers-every 0 --notices-every 0

The stack is started the way users start it: an embedded Tansu broker (the same command line
``ensure_stack`` uses, on a free loopback port, state in a temporary directory), then
:func:`dtlive.deploy.stack.ensure_stack`: ``dtlive process``, ``dtlive record``, ``dtlive alerts listen`` and
``dtlive emulate --simulate`` (1,000 rows/s daq64 by default) as subprocesses. Ledger, history and
artifacts live in the temporary directory too. Every ``--viewers-every`` minutes, dashboards come and go
(``--viewers`` :class:`dtlive.ui.live.ResultsFeed` for ``--viewer-s`` seconds, plus one notebook-style
``read_results(last=20)``), and every ``--notices-every`` minutes ``dtlive alerts send superk-sn`` injects a
notice.

Every ``--interval`` seconds (default 10) a sample records:

* broker CPU (% of one core, from ``/proc/<pid>/stat`` utime+stime) and RSS, and the same of each service;
* consumer groups the broker knows (``AdminClient.list_consumer_groups``) and the state and member count
  of the listener's group (``describe_consumer_groups``);
* the end offset of every topic (the checkpoint topic grows by one record per processor transaction,
  so its rate is the transaction rate);
* the processor's lag: the hits topic's end minus the offsets it committed in its transactions (the restart
  offsets of its open window, so ~1-2 windows of input even when it keeps up; Tansu's ListOffsets answer can
  leave out the newest multi-record batch, so it can be a few messages below 0).

At the end the emulator is stopped, the processor drains, and the check is ``hits sent`` (the hits topic
from the processor's first input offset, decoded: rows with HEAD == 2) ``= hits counted`` (``total_hits`` of
the published windows) ``+ hits rejected`` (the windows' ``counts.rejected``). A JSON with the time series goes
to ``benchmarks/results/<name>.json`` and a short table is printed. Only loopback; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, cpu_seconds, free_port, loadavg, log, read_topic, rss_mb, slope_per_minute
from dtlive.config import Config

SERVICES = ("processor", "recorder", "alerts", "emulator")


def _private_env(tmp: Path, kafka: dict[str, str]) -> None:
    """This process's environment as a user's clean one, with every dtlive file inside ``tmp``.

    ``kafka``: librdkafka settings for every service, as a user sets them (``KAFKA_LINGER_MS=5``).
    """
    for k in [k for k in os.environ if k.startswith(("DTLIVE_", "KAFKA_"))]:
        del os.environ[k]
    os.environ.update(DTLIVE_DB=f"sqlite:///{tmp / 'ledger.sqlite'}", DTLIVE_HISTORY=str(tmp / "history"),
                      DTLIVE_STATE_DIR=str(tmp / "state"), DTLIVE_ARTIFACTS=str(tmp / "artifacts"))
    os.environ.update({"KAFKA_" + k.upper().replace(".", "_"): v for k, v in kafka.items()})


class Probe:
    """Asks the broker what dtlive did to it: groups, topic ends, the processor's committed offsets."""

    def __init__(self, bootstrap: str, cfg):
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self.cfg = cfg
        quiet = {"bootstrap.servers": bootstrap, "log_level": 3}
        self.admin = AdminClient(quiet)
        # assign-only consumer: offsets are asked, nothing is committed, no group is joined
        self.consumer = Consumer({**quiet, "group.id": "dtlive-soak-probe", "enable.auto.commit": False})

    def groups(self) -> dict:
        out: dict = {}
        try:
            listed = self.admin.list_consumer_groups(request_timeout=5).result(timeout=10)
            out["groups"] = sorted(g.group_id for g in listed.valid)
            out["n_groups"] = len(listed.valid)
        except Exception as exc:  # noqa: BLE001 - the broker may not implement it; record why
            out["groups_error"] = str(exc)[:200]
        try:
            fut = self.admin.describe_consumer_groups([self.cfg.alerts_group_id], request_timeout=5)
            d = fut[self.cfg.alerts_group_id].result(timeout=10)
            out["alerts_group_state"] = str(d.state).rsplit(".", 1)[-1]
            out["alerts_group_members"] = len(d.members)
        except Exception as exc:  # noqa: BLE001
            out["alerts_group_error"] = str(exc)[:200]
        return out

    def topic_ends(self) -> dict[str, int]:
        from confluent_kafka import TopicPartition

        ends = {}
        meta = self.consumer.list_topics(timeout=5)
        for name, t in sorted(meta.topics.items()):
            if name.startswith("__") or t.error is not None:
                continue
            ends[name] = sum(self.consumer.get_watermark_offsets(TopicPartition(name, p), timeout=5)[1]
                             for p in t.partitions)
        return ends

    def processor_committed(self) -> int | None:
        """Sum over partitions of the offsets the processor committed on the hits topic (None: none yet)."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        meta = self.consumer.list_topics(self.cfg.hits_topic, timeout=5).topics.get(self.cfg.hits_topic)
        if meta is None:
            return None
        req = ConsumerGroupTopicPartitions(self.cfg.group_id,
                                           [TopicPartition(self.cfg.hits_topic, p) for p in meta.partitions])
        res = self.admin.list_consumer_group_offsets([req], request_timeout=5)[self.cfg.group_id].result(timeout=10)
        offsets = [tp.offset for tp in res.topic_partitions if tp.offset >= 0]
        return sum(offsets) if offsets else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()


class Sampler(threading.Thread):
    def __init__(self, pids: dict[str, int], probe: Probe, interval: float, max_s: float):
        super().__init__(daemon=True, name="soak-sampler")
        self.pids, self.probe, self.interval = pids, probe, interval
        self.deadline = time.monotonic() + max_s
        self.stop_event = threading.Event()
        self.samples: list[dict] = []
        self.t0 = time.monotonic()

    def run(self) -> None:
        last_cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        last_t = time.monotonic()
        last_ends: dict[str, int] = {}
        while not self.stop_event.wait(self.interval) and time.monotonic() < self.deadline:
            now = time.monotonic()
            dt = now - last_t
            row: dict = {"t": round(now - self.t0, 1), "loadavg_1m": (loadavg() or [None])[0]}
            for name, pid in self.pids.items():
                cpu = cpu_seconds(pid)
                row[f"{name}_cpu_pct"] = round(100 * (cpu - last_cpu[name]) / dt, 1)
                row[f"{name}_rss_mb"] = round(rss_mb(pid)[0], 1)
                last_cpu[name] = cpu
            last_t = now
            try:
                ends = self.probe.topic_ends()
                row["topic_ends"] = ends
                row["topic_rates"] = {k: round((v - last_ends.get(k, 0)) / dt, 2) for k, v in ends.items()}
                last_ends = ends
                committed = self.probe.processor_committed()
                hits_end = ends.get(self.probe.cfg.hits_topic)
                row["processor_lag"] = None if committed is None or hits_end is None else hits_end - committed
                row.update(self.probe.groups())
            except Exception as exc:  # noqa: BLE001 - a slow broker is a finding, not a crash
                row["probe_error"] = str(exc)[:200]
            row["probe_s"] = round(time.monotonic() - now, 2)
            self.samples.append(row)
            b = row.get("broker_cpu_pct"), row.get("broker_rss_mb")
            log(f"t={row['t']:>6}s broker cpu {b[0]}% rss {b[1]} MB | processor cpu {row.get('processor_cpu_pct')}% "
                f"lag {row.get('processor_lag')} | groups {row.get('n_groups')} | alerts group "
                f"{row.get('alerts_group_state')}/{row.get('alerts_group_members')} | load {row['loadavg_1m']}")


class Visitors(threading.Thread):
    """Dashboards and notices coming and going, as on a shift."""

    def __init__(self, bootstrap: str, cfg, viewers_every_s: float, viewers: int, viewer_s: float,
                 notices_every_s: float, max_s: float):
        super().__init__(daemon=True, name="soak-visitors")
        self.bootstrap, self.cfg = bootstrap, cfg
        self.viewers_every_s, self.viewers, self.viewer_s = viewers_every_s, viewers, viewer_s
        self.notices_every_s = notices_every_s
        self.deadline = time.monotonic() + max_s
        self.stop_event = threading.Event()
        self.events: list[dict] = []
        self.t0 = time.monotonic()

    def _dashboards(self) -> dict:
        from dtlive.kafka.results import read_results
        from dtlive.ui.live import ResultsFeed

        got = []
        feeds = [ResultsFeed(self.bootstrap, on_messages=got.extend, topic=self.cfg.monitor_topic, backfill=30).start()
                 for _ in range(self.viewers)]
        t0 = time.monotonic()
        ds = read_results(self.bootstrap, self.cfg.monitor_topic, last=20, cfg=self.cfg)
        read_s = time.monotonic() - t0
        self.stop_event.wait(self.viewer_s)
        for f in feeds:
            f.stop()
        return {"what": "dashboards", "feeds": self.viewers, "feed_messages": len(got),
                "read_results_windows": 0 if ds is None else int(ds.sizes["time"]), "read_results_s": round(read_s, 2)}

    def _notice(self) -> dict:
        proc = subprocess.run([sys.executable, "-m", "dtlive", "alerts", "send", "superk-sn"],
                              capture_output=True, text=True, timeout=60)
        return {"what": "notice", "exit": proc.returncode, "stderr": proc.stderr.strip()[-300:]}

    def run(self) -> None:
        next_view = self.viewers_every_s or float("inf")
        next_notice = self.notices_every_s / 2 if self.notices_every_s else float("inf")
        while not self.stop_event.wait(1.0) and time.monotonic() < self.deadline:
            t = time.monotonic() - self.t0
            for due, action, every in ((next_view, self._dashboards, self.viewers_every_s),
                                       (next_notice, self._notice, self.notices_every_s)):
                if t < due:
                    continue
                try:
                    event = action()
                except Exception as exc:  # noqa: BLE001
                    event = {"what": action.__name__, "error": str(exc)[:300]}
                event["t"] = round(t, 1)
                self.events.append(event)
                log(f"visitor: {event}")
                if action == self._dashboards:
                    next_view += every
                else:
                    next_notice += every


def count_hits(bootstrap: str, cfg, expect_messages: int) -> dict:
    """Hits sent (decoded from the hits topic) against hits counted and rejected in the published windows."""
    from dtlive.core import detector as det
    from dtlive.core.decode import decode
    from dtlive.core.messages import FORMAT_HEADER
    from dtlive.kafka.results import read_messages

    windows = [m for m in read_messages(bootstrap, cfg.monitor_topic, cfg=cfg, timeout=120)
               if m["provenance"].get("processor") == cfg.group_id]
    # `dtlive process` starts at the end of its input: what was sent before it was assigned is not its to count
    starts = [x["first_offset"] for m in windows for x in m["provenance"].get("inputs", [])]
    start = min(starts) if starts else 0
    every = read_topic(bootstrap, cfg.hits_topic, expect=expect_messages, timeout=300)
    msgs = [m for m in every if m.offset() >= start]
    sent = 0
    bad = 0
    for i in range(0, len(msgs), 2000):
        part = msgs[i:i + 2000]
        fmt = dict(part[0].headers() or []).get(FORMAT_HEADER, cfg.default_format.encode()).decode()
        out = decode([m.value() for m in part], fmt, np.zeros(len(part), np.int64),
                     np.array([m.offset() for m in part], np.int64))
        sent += int((out.rows.head == det.HIT_HEAD).sum())
        bad += len(out.rejects)
    counted = sum(int(m["total_hits"]) for m in windows)
    rejected = sum(int(v) for m in windows for v in m["counts"].get("rejected", {}).values())
    ids = [m["window"]["id"] for m in windows]
    return {"messages_read": len(every), "processor_start_offset": start,
            "messages_before_start": len(every) - len(msgs), "hits_sent": sent, "undecodable_messages": bad,
            "hits_counted": counted,
            "hits_rejected": rejected, "windows": len(windows), "duplicate_windows": len(ids) - len(set(ids)),
            "all_hits_accounted": sent == counted + rejected}


def _wait_drained(probe: Probe, cfg, timeout: float) -> dict:
    """Until the processor has committed the hits topic's end and the monitor topic stopped growing."""
    deadline = time.monotonic() + timeout
    last, stable_since = None, time.monotonic()
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            ends = probe.topic_ends()
            lag = ends.get(cfg.hits_topic, 0) - (probe.processor_committed() or 0)
            key = (ends.get(cfg.monitor_topic), lag)
            if key != last:
                last, stable_since = key, time.monotonic()
            elif lag <= 0 and time.monotonic() - stable_since > cfg.idle_s + 3:  # see processor_lag in the docs
                return {"drained": True, "lag": lag}
        time.sleep(1.0)
    return {"drained": False, "lag": None if last is None else last[1]}


def _emulator_report(log_path: str) -> str:
    with contextlib.suppress(OSError):
        lines = [x for x in Path(log_path).read_text(errors="replace").splitlines() if x.startswith("sent ")]
        return lines[-1] if lines else ""
    return ""


def summarise(samples: list[dict], minutes_each: float = 5.0) -> dict:
    """Broker CPU and RSS at the start and the end, per-interval means, and their slopes."""
    if not samples:
        return {}
    t = np.array([s["t"] for s in samples])
    out: dict = {}
    for name in ("broker", *SERVICES):
        cpu = np.array([s.get(f"{name}_cpu_pct", np.nan) for s in samples], float)
        rss = np.array([s.get(f"{name}_rss_mb", np.nan) for s in samples], float)
        edges = np.arange(0, t[-1] + minutes_each * 60, minutes_each * 60)
        per = []
        for a, b in zip(edges[:-1], edges[1:]):
            sel = (t > a) & (t <= b)
            if sel.any():
                per.append({"minutes": f"{a / 60:g}-{b / 60:g}", "cpu_pct": round(float(np.nanmean(cpu[sel])), 1),
                            "rss_mb": round(float(np.nanmean(rss[sel])), 1)})
        out[name] = {
            "cpu_pct_first_5min": per[0]["cpu_pct"] if per else None,
            "cpu_pct_last_5min": per[-1]["cpu_pct"] if per else None,
            "rss_mb_start": float(rss[0]), "rss_mb_end": float(rss[-1]),
            "cpu_pct_slope_per_min": _round(slope_per_minute(t, cpu)),
            "rss_mb_slope_per_min": _round(slope_per_minute(t, rss)),
            "per_interval": per,
        }
    groups = [s.get("n_groups") for s in samples if s.get("n_groups") is not None]
    out["consumer_groups"] = {"first": groups[0] if groups else None, "last": groups[-1] if groups else None,
                              "max": max(groups) if groups else None}
    lags = [s.get("processor_lag") for s in samples if s.get("processor_lag") is not None]
    out["processor_lag_max"] = max(lags) if lags else None
    states = [f"{s.get('alerts_group_state')}/{s.get('alerts_group_members')}" for s in samples]
    out["alerts_group_states_seen"] = sorted(set(states))
    out["checkpoint_records_per_s"] = _mean_rate(samples, "checkpoints")
    out["monitor_records_per_s"] = _mean_rate(samples, Config.monitor_topic)
    out["hits_messages_per_s"] = _mean_rate(samples, Config.hits_topic)
    return out


def _round(x):
    return None if x is None else round(x, 3)


def _mean_rate(samples: list[dict], suffix: str) -> float | None:
    vals = [v for s in samples[1:] for k, v in s.get("topic_rates", {}).items() if k.endswith(suffix)]
    return round(float(np.mean(vals)), 2) if vals else None


def run(minutes: float, rate: float, fmt: str, interval: float, viewers_every_min: float, viewers: int,
        viewer_s: float, notices_every_min: float, keep: bool = False, kafka: dict[str, str] | None = None) -> dict:
    from dtlive.config import load_config
    from dtlive.deploy.stack import ensure_stack
    from dtlive.kafka.broker import EmbeddedBroker

    tmp = Path(tempfile.mkdtemp(prefix="dtlive-soak-"))
    _private_env(tmp, kafka or {})
    # the broker ensure_stack would start (same binary, same command line), on a free port so that a
    # soak never takes the default port from a user's stack; ensure_stack then finds and reuses it
    broker = EmbeddedBroker(port=free_port(), state_dir=tmp / "state", stop_at_exit=False).start()
    log(f"broker {broker.bootstrap} pid {broker.pid}; state in {tmp}")
    stack = None
    sampler = visitors = probe = None
    out: dict = {"minutes": minutes, "rate": rate, "format": fmt, "interval_s": interval,
                 "viewers_every_min": viewers_every_min, "viewers": viewers, "viewer_s": viewer_s,
                 "notices_every_min": notices_every_min, "kafka": kafka or {}}
    try:
        stack = ensure_stack(rate=rate, fmt=fmt, state_dir=str(tmp / "state"), wait_for_window_s=60)
        stack.started["broker"] = broker.pid
        missing = [s for s in SERVICES if s not in stack.started]
        if missing:
            raise RuntimeError(f"ensure_stack did not start {missing} (reused: {stack.reused})")
        cfg = load_config({})
        probe = Probe(broker.bootstrap, cfg)
        pids = {"broker": broker.pid, **{s: stack.started[s] for s in SERVICES}}
        sampler = Sampler(pids, probe, interval, minutes * 60 + 30)
        visitors = Visitors(broker.bootstrap, cfg, viewers_every_min * 60, viewers, viewer_s,
                            notices_every_min * 60, minutes * 60)
        sampler.start()
        visitors.start()
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            dead = [s for s in SERVICES if s not in out.setdefault("services_exited", {})
                    and not _alive(stack.started[s])]
            for name in dead:
                log(f"{name} exited at t={time.monotonic() - sampler.t0:.0f} s")
                out["services_exited"][name] = round(time.monotonic() - sampler.t0, 1)
            if {"processor", "emulator"} & set(out["services_exited"]):
                break  # without them there is nothing left to measure
            time.sleep(2.0)
        visitors.stop_event.set()
        visitors.join(viewer_s + 30)
        sampler.stop_event.set()
        sampler.join(60)
        # stop the feed, let the processor drain, then check every hit
        emu = stack.started.pop("emulator")
        with contextlib.suppress(ProcessLookupError):
            os.kill(emu, 2)
        _wait_pid(emu, 30)
        out["emulator_report"] = _emulator_report(stack.logs["emulator"])
        out["drain"] = _wait_drained(probe, cfg, timeout=120)
        expect = probe.topic_ends().get(cfg.hits_topic, 0)
        out["count"] = count_hits(broker.bootstrap, cfg, expect)
        out["samples"] = sampler.samples
        out["events"] = visitors.events
        out["summary"] = summarise(sampler.samples)
        out["logs_tail"] = {name: _tail(path) for name, path in stack.logs.items()}
        out["broker_log_tail"] = broker.log_tail(40)
    finally:
        if sampler is not None:
            sampler.stop_event.set()
        if visitors is not None:
            visitors.stop_event.set()
        if probe is not None:
            probe.close()
        if stack is not None:
            stack.started.pop("broker", None)
            stack.stop()
        broker.stop()
        if keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _alive(pid: int) -> bool:
    from dtlive.service.processes import pid_alive

    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return pid_alive(pid)


def _wait_pid(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _tail(path: str, n: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text(errors="replace")[-n:]
    return ""


def print_table(r: dict) -> None:
    s = r.get("summary", {})
    print(f"\n== broker soak ({r.get('kafka') or 'default client settings'}): {r['minutes']:g} min at "
          f"{r['rate']:g} rows/s {r['format']}, sampled every "
          f"{r['interval_s']:g} s; dashboards every {r['viewers_every_min']:g} min, notices every "
          f"{r['notices_every_min']:g} min")
    print(f"  {'process':10} {'cpu% 1st 5 min':>15} {'cpu% last 5 min':>16} {'cpu%/min':>9} "
          f"{'RSS start':>10} {'RSS end':>8} {'MB/min':>7}")
    for name in ("broker", *SERVICES):
        x = s.get(name)
        if x:
            print(f"  {name:10} {x['cpu_pct_first_5min']!s:>15} {x['cpu_pct_last_5min']!s:>16} "
                  f"{x['cpu_pct_slope_per_min']!s:>9} {x['rss_mb_start']:>10.1f} {x['rss_mb_end']:>8.1f} "
                  f"{x['rss_mb_slope_per_min']!s:>7}")
    if "broker" in s:
        print("  broker per 5 min (cpu %, RSS MB): " + ", ".join(
            f"{p['minutes']}: {p['cpu_pct']}/{p['rss_mb']}" for p in s["broker"]["per_interval"]))
    print(f"  consumer groups {s.get('consumer_groups')}; listener group {s.get('alerts_group_states_seen')}; "
          f"processor lag max {s.get('processor_lag_max')}")
    print(f"  records/s: hits {s.get('hits_messages_per_s')}, monitor {s.get('monitor_records_per_s')}, "
          f"checkpoints {s.get('checkpoint_records_per_s')}")
    c = r.get("count", {})
    print(f"  hits sent {c.get('hits_sent')} = counted {c.get('hits_counted')} + rejected {c.get('hits_rejected')}: "
          f"{'OK' if c.get('all_hits_accounted') else 'MISMATCH'} ({c.get('windows')} windows, "
          f"{c.get('duplicate_windows')} duplicated); drain {r.get('drain')}")


def fetch_cost(sizes=(2_000, 8_000, 16_000), cycles: int = 200) -> list[dict]:
    """Broker CPU per produce request and per fetch that returns data, against the batches stored in the partition.

    A private broker; one partition filled with single-message batches (one produce request each, from an
    idempotent producer as ``dtlive emulate`` uses) up to each of ``sizes``; then ``cycles`` times: produce one
    message and flush with no consumer assigned (the produce's cost), and produce, flush and read it back with an
    assigned consumer (the difference is the fetch's cost), in broker CPU ms.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    from benchmarks.common import private_broker
    from dtlive.kafka.broker import create_topics

    out = []
    with private_broker() as broker:
        bs, topic = broker.bootstrap, "fetch-cost"
        create_topics(bs, {topic: 1})
        prod = Producer({"bootstrap.servers": bs, "linger.ms": 0, "enable.idempotence": True})
        cons = Consumer({"bootstrap.servers": bs, "group.id": "fetch-cost", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10, "log_level": 3})

        def one() -> None:
            prod.produce(topic, b"x" * 100)
            prod.flush(10)

        stored = 0
        for size in sizes:
            cons.unassign()  # an assigned consumer fetches in the background, even between consume calls
            while stored < size:
                one()
                stored += 1
            cpu0 = cpu_seconds(broker.pid)
            for _ in range(cycles):
                one()
            cpu1 = cpu_seconds(broker.pid)
            cons.assign([TopicPartition(topic, 0, stored + cycles)])
            for _ in range(cycles):
                one()
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not [m for m in cons.consume(1, 0.5) if not m.error()]:
                    pass
            cpu2 = cpu_seconds(broker.pid)
            stored += 2 * cycles
            row = {"batches_stored": size, "produce_ms": round(1000 * (cpu1 - cpu0) / cycles, 3),
                   "fetch_with_data_ms": round(1000 * ((cpu2 - cpu1) - (cpu1 - cpu0)) / cycles, 3),
                   "broker_rss_mb": round(rss_mb(broker.pid)[0], 1)}
            log(f"fetch cost: {row}")
            out.append(row)
        cons.close()
    return out


def main(argv=None) -> int:
    from benchmarks.run import code_state, environment

    ap = argparse.ArgumentParser(prog="python -m benchmarks.broker_soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="how long the stack runs (default 30)")
    ap.add_argument("--rate", type=float, default=1000.0, help="simulated rows/s (default 1000)")
    ap.add_argument("--format", default="daq64", choices=("daq64", "csv"))
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--viewers-every", type=float, default=5.0, help="minutes between dashboard visits (0: none)")
    ap.add_argument("--viewers", type=int, default=2, help="dashboards per visit (default 2)")
    ap.add_argument("--viewer-s", type=float, default=60.0, help="seconds a visit lasts (default 60)")
    ap.add_argument("--notices-every", type=float, default=5.0, help="minutes between alert notices (0: none)")
    ap.add_argument("--name", default="broker_soak", help="results file name (default broker_soak)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, ledger)")
    ap.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka setting for every service, as KAFKA_* (e.g. linger.ms=5); repeatable")
    ap.add_argument("--fetch-cost", action="store_true",
                    help="instead: broker CPU per produce and per fetch against the batches stored (a few min)")
    args = ap.parse_args(argv)
    if args.fetch_cost:
        rows = fetch_cost()
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "broker_fetch_cost.json").write_text(json.dumps({"environment": environment(), "rows": rows},
                                                                       indent=1))
        for r in rows:
            print(f"  {r['batches_stored']:>7} batches stored: produce {r['produce_ms']} ms, fetch with data "
                  f"{r['fetch_with_data_ms']} ms of broker CPU, RSS {r['broker_rss_mb']} MB")
        return 0
    if args.minutes <= 0:
        ap.error("--minutes must be above 0")
    if any("=" not in kv for kv in args.kafka):
        ap.error("--kafka takes KEY=VALUE")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = {"command": " ".join(["python", "-m", "benchmarks.broker_soak", *(argv or sys.argv[1:])]),
           "environment": environment(), "code": code_state()}
    out["result"] = run(args.minutes, args.rate, args.format, args.interval, args.viewers_every, args.viewers,
                        args.viewer_s, args.notices_every, args.keep,
                        dict(kv.split("=", 1) for kv in args.kafka))
    path = RESULTS_DIR / f"{args.name}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print_table(out["result"])
    print(f"\n-> {path}")
    return 0 if out["result"].get("count", {}).get("all_hits_accounted") else 1


if __name__ == "__main__":
    sys.exit(main())
