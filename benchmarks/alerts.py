"""Benchmark: notice -> published ``rate_excess`` result with a 10-minute look-back (target <= 2 s).

Set-up (all in temporary directories, nothing of the user's dtlive state is touched):

* a private embedded broker on a free loopback port (``benchmarks.common.private_broker``);
* a :class:`~dtlive.storage.history.HistoryStore` and a SQLite :class:`~dtlive.storage.ledger.Ledger` holding the last
  ~12 minutes of 2 s windows ending now (360 windows, appended 30 at a time like ``dtlive record``, each
  also recorded in the ledger with its input offsets, so the analysis' provenance queries are real). The
  windows are real ``dtlive.monitor/1`` messages of simulated data (``dtlive.core.simulate``, ~5 kHz of hits over
  the 4 chambers: ~10k hits per window) made with the pipeline's functions (``clean`` -> ``compute_arrays``
  -> ``message_from_arrays``). A *feeder* thread keeps appending the window that just closed (0.5 s after
  its end, one window per 2 s, to history and ledger, as the recorder would), so the history keeps ending
  "now" while the benchmark runs;
* an :class:`~dtlive.alerts.listener.AlertListener` (in a thread of this process) with one rule: every
  ``gcn.notices.*`` notice runs ``rate_excess`` only, ``background_s = 600`` (defaults otherwise: on-window
  trigger +-10 s, gap 30 s, so the analysis loads ~11 minutes of windows), 2 worker processes;
* an observer thread: a consumer assigned to the analyses topic (``fetch.wait.max.ms=10``) that stamps
  ``time.time()`` on every result as soon as it can read it, by alert id.

One warm-up notice is sent first (it pays the consumer-group join, the pattern subscription's metadata
and the first use of each worker) and left out. Then ``n`` notices (the ``superk-sn`` template with its
``id`` changed per notice, so none is a duplicate; trigger time = now - 10 s), one at a time: latency =
arrival of the matching result on the analyses topic - ``time.time()`` just before ``produce()``. Between
notices a random pause of 0.3-1.3 s, so notices land at any phase of the listener's poll loop.

Breakdown, from the ledger's append-only task states (``at`` is stamped when each state is written) and the
result message's ``published_at``: produce -> ``received`` (notice fetched by the listener, parsed),
-> ``queued`` (rules decided, ``matched`` written), -> ``running`` (handed to a worker), -> ``succeeded``
(the worker's own run time, reported by the worker, and the rest: dispatch and result pick-up),
-> ``published`` (produced + flushed), and published -> seen by the observer.

With ``--profile`` (or when the target is missed) the listener thread is profiled with cProfile during
``profile_n`` more notices, and one ``run_job`` (what a worker runs) is profiled in this process.

    .venv/bin/python -m benchmarks.alerts [--quick] [--n 20] [--profile missed|always|never]
    # writes benchmarks/results/alerts.json
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.checks import count_check, verdict
from benchmarks.common import (
    ROOT,
    _hotspots,
    bench_config,
    loadavg,
    log,
    observer_consumer,
    percentiles,
    private_broker,
)

RESULTS = Path(__file__).resolve().parent / "results" / "alerts.json"
TARGET_S = 2.0
WINDOW_S = 2.0
HISTORY_S = 12 * 60  # windows in the store before the first notice (background_s=600 + on/gap + margin)
RECORD_DELAY_S = 0.5  # a window reaches the history this long after its end (lateness, closing delay, recorder)
RULES = """
[[rule]]
name = "bench-rate-excess"
topics = ["gcn.notices.*"]
analyses = ["rate_excess"]
[rule.params.rate_excess]
background_s = 600
"""
SEGMENTS = ("produce_to_received", "received_to_queued", "queued_to_running", "worker_run",
            "dispatch_and_pickup", "succeeded_to_published", "published_to_observed")


def pct(values, ps=(50, 95, 99)) -> dict:
    return percentiles(values, ps)


# ---------------------------------------------------------------- windows like the recorder stores them


class Windows:
    """Real ``dtlive.monitor/1`` messages of simulated 2 s windows on a wall-clock grid.

    ``distinct`` windows are simulated once (~5 kHz of hits: the simulator's default) and reused in turn;
    every message gets its own window id, orbits, times and input offsets.
    """

    def __init__(self, cfg, run_id: str, end: float, distinct: int = 20):
        from dtlive.core import detector as det
        from dtlive.core.products import compute_arrays
        from dtlive.core.rows import clean
        from dtlive.core.simulate import DEFAULT_START_ORBIT, simulate

        self.cfg, self.run_id = cfg, run_id
        self.orbits = int(round(WINDOW_S / det.ORBIT_S))
        self.first_orbit = DEFAULT_START_ORBIT
        self.end0 = end  # window k ends at end0 + k * WINDOW_S
        self.epoch = end - WINDOW_S - self.first_orbit * det.ORBIT_S  # orbit epoch: window 0 starts at end - 2 s
        self.samples = []
        for i in range(distinct):
            rows = simulate(WINDOW_S, seed=i, start_orbit=self.first_orbit + i * self.orbits)
            hits, ancillary = clean(rows)
            arrays = compute_arrays(hits)
            arrays["special_channel_hits"] = np.int64(int(arrays["total_hits"]) - int(arrays["hits_per_chamber"].sum()))
            arrays["rows"], arrays["ancillary"] = np.int64(len(rows)), np.int64(ancillary)
            self.samples.append(arrays)
        self.hits_per_window = float(np.mean([int(a["total_hits"]) for a in self.samples]))

    def end(self, k: int) -> float:
        return self.end0 + k * WINDOW_S

    def message(self, k: int) -> dict:
        """Window ``k`` (negative: before ``end``): its message as the processor publishes it."""
        from dtlive import __version__
        from dtlive.core.messages import decode_message, iso_utc, message_from_arrays
        from dtlive.core.products import DRIFT_EDGES_NS

        arrays = self.samples[k % len(self.samples)]
        wid = 1_000_000 + k
        first = self.first_orbit + k * self.orbits
        rows = int(arrays["rows"])
        prov = {"dtlive_version": __version__, "config_hash": self.cfg.config_hash, "run_id": self.run_id,
                "processor": self.cfg.group_id, "host": "bench", "orbit_epoch": self.epoch,
                "inputs": [{"topic": self.cfg.hits_topic, "partition": 0, "first_offset": wid * rows,
                            "last_offset": wid * rows + rows - 1}]}
        attrs = {"window_id": wid, "first_orbit": first, "last_orbit": first + self.orbits - 1,
                 "window_start": iso_utc(self.end(k) - WINDOW_S), "window_end": iso_utc(self.end(k)),
                 "provenance": json.dumps(prov), "rejected_by_reason": "{}"}
        return decode_message(message_from_arrays(arrays, DRIFT_EDGES_NS, attrs))


def expected_background(windows: Windows, trigger: float, on_before_s: float = 10.0, gap_s: float = 30.0,
                        background_s: float = 600.0) -> dict:
    """The background of ``rate_excess`` as the input holds it: the windows lying inside
    [T - on_before - gap - background, T - on_before - gap) and their hits per chamber (window times as stored:
    ISO strings with milliseconds)."""
    from dtlive.core.messages import iso_utc, utc_seconds

    bg1 = trigger - on_before_s - gap_s
    bg0 = bg1 - background_s
    k0 = int((bg0 - windows.end0) // WINDOW_S)
    ks = [k for k in range(k0 - 2, k0 + int(background_s / WINDOW_S) + 3)
          if utc_seconds(iso_utc(windows.end(k) - WINDOW_S)) >= bg0 and utc_seconds(iso_utc(windows.end(k))) <= bg1]
    per_chamber = np.sum([windows.samples[k % len(windows.samples)]["hits_per_chamber"] for k in ks], axis=0)
    return {"windows": len(ks), "hits_per_chamber": [int(x) for x in per_chamber]}


def background_checks(recs: list[dict], windows: Windows) -> list[dict]:
    """Per notice: a result arrived, and its background holds exactly the windows and hits of the input."""
    checks = []
    for r in recs:
        if r.get("latency_s") is None or r.get("status") != "ok":
            why = r.get("error") or r.get("status")
            checks.append({"ok": False, "problem": f"{r['alert_id']}: no ok result ({why})"})
            continue
        want = expected_background(windows, r["trigger_time"])
        checks.append(count_check(want["windows"], r["background_windows"] or 0,
                                  f"background windows ({r['alert_id']})"))
        got = r.get("background_counts") or []
        if got != want["hits_per_chamber"]:
            checks.append({"ok": False, "problem": f"{r['alert_id']}: background hits per chamber {got} "
                                                   f"!= {want['hits_per_chamber']} in the input"})
    return checks


def record(history, ledger, cfg, msgs: list[dict], offset: int) -> None:
    """What ``dtlive record`` does with a batch: ledger (with where the result landed), then history."""
    ledger.record_windows([(m, cfg.monitor_topic, 0, offset + i) for i, m in enumerate(msgs)])
    history.append(msgs)


class Feeder(threading.Thread):
    """Appends each window RECORD_DELAY_S after it closes (history + ledger), like the recorder, until stopped."""

    def __init__(self, windows: Windows, history, ledger, cfg, next_k: int, offset: int, max_s: float):
        super().__init__(daemon=True, name="bench-feeder")
        self.windows, self.history, self.ledger, self.cfg = windows, history, ledger, cfg
        self.k, self.offset, self.max_s = next_k, offset, max_s
        self.stop_event = threading.Event()
        self.append_s: list[float] = []

    def run(self):
        deadline = time.monotonic() + self.max_s
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            due = self.windows.end(self.k) + RECORD_DELAY_S
            if self.stop_event.wait(max(0.0, due - time.time())):
                break
            t0 = time.perf_counter()
            record(self.history, self.ledger, self.cfg, [self.windows.message(self.k)], self.offset)
            self.append_s.append(time.perf_counter() - t0)
            self.k += 1
            self.offset += 1


# ---------------------------------------------------------------- observer of the analyses topic


class Observer(threading.Thread):
    """Stamps the wall-clock arrival of every ``dtlive.analysis/1`` result, by alert id (first one wins)."""

    def __init__(self, bootstrap: str, topic: str, max_s: float):
        super().__init__(daemon=True, name="bench-analyses-observer")
        from confluent_kafka import TopicPartition

        self.consumer = observer_consumer(bootstrap, **{"isolation.level": "read_uncommitted"})
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.max_s = max_s
        self.arrivals: dict[str, tuple[float, dict]] = {}
        self.cond = threading.Condition()
        self.stop_event = threading.Event()

    def run(self):
        deadline = time.monotonic() + self.max_s
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                # wake on the first message (a batch wait would stamp late), then take what is there
                msgs = self.consumer.consume(1, 0.1)
                seen = time.time()
                if msgs:
                    msgs += self.consumer.consume(100, 0)
                for m in msgs:
                    if m.error():
                        continue
                    with contextlib.suppress(ValueError):
                        doc = json.loads(m.value())
                        with self.cond:
                            self.arrivals.setdefault(str(doc.get("alert_id")), (seen, doc))
                            self.cond.notify_all()
        finally:
            self.consumer.close()

    def wait_for(self, alert_id: str, timeout: float) -> tuple[float, dict] | None:
        with self.cond:
            self.cond.wait_for(lambda: alert_id in self.arrivals, timeout)
            return self.arrivals.get(alert_id)


# ---------------------------------------------------------------- the listener, with a switchable profiler


class ListenerThread(threading.Thread):
    """``listener.run`` in a thread; ``profile_on``/``profile_off`` switch cProfile on in *that* thread.

    The switch is made from the ``until`` callback, which the listener calls in its own thread after each poll.
    """

    def __init__(self, listener, max_s: float):
        super().__init__(daemon=True, name="bench-alert-listener")
        self.listener, self.max_s = listener, max_s
        self.stop_event = threading.Event()
        self.profile = cProfile.Profile()
        self._want = False
        self._on = False
        self.profiled_s = 0.0
        self._t_on = 0.0
        self.error: BaseException | None = None

    def _until(self, _listener) -> bool:
        if self._want and not self._on:
            self._t_on = time.perf_counter()
            self.profile.enable()
            self._on = True
        elif not self._want and self._on:
            self.profile.disable()
            self.profiled_s += time.perf_counter() - self._t_on
            self._on = False
        return self.stop_event.is_set()

    def profile_on(self):
        self._want = True

    def profile_off(self, timeout: float = 5.0):
        self._want = False
        deadline = time.monotonic() + timeout
        while self._on and time.monotonic() < deadline:
            time.sleep(0.05)

    def run(self):
        try:
            self.listener.run(max_seconds=self.max_s, until=self._until)
        except BaseException as exc:  # noqa: BLE001 - reported by the benchmark
            self.error = exc
        finally:
            if self._on:
                self.profile.disable()


# ---------------------------------------------------------------- one notice


def notice(template: dict, alert_key: str, trigger_time: float) -> tuple[str, bytes]:
    """The template with its ``id`` replaced, retimed; its topic and bytes."""
    from dtlive.alerts.send import retimed, topic_for

    value = retimed(json.dumps({**template, "id": [alert_key]}).encode(), trigger_time)
    return topic_for(value), value


def send_and_wait(producer, observer: Observer, template: dict, alert_key: str, timeout: float) -> dict:
    """Produce one notice (trigger = now - 10 s) and wait for its result; the timings of this notice."""
    from dtlive.alerts.notices import parse_notice

    topic, value = notice(template, alert_key, time.time() - 10.0)
    parsed = parse_notice(value, topic)
    alert_id = parsed.id
    t0 = time.time()
    producer.produce(topic, value)
    producer.flush(10)
    flushed = time.time()
    got = observer.wait_for(alert_id, timeout)
    if got is None:
        return {"alert_id": alert_id, "t_produce": t0, "latency_s": None, "error": f"no result in {timeout:g} s",
                "trigger_time": parsed.trigger_time}
    seen, doc = got
    summary = doc.get("summary") or {}
    return {"alert_id": alert_id, "record_number": doc.get("record_number"), "t_produce": t0,
            "produce_flush_s": flushed - t0, "latency_s": seen - t0, "t_seen": seen,
            "published_at": doc.get("published_at"), "status": summary.get("status"),
            "reason": summary.get("reason"), "complete": summary.get("complete"),
            "background_windows": (summary.get("background") or {}).get("windows"),
            "background_counts": [int(c["background_counts"]) for c in summary.get("chambers") or []],
            "trigger_time": parsed.trigger_time,
            "on_windows": (summary.get("on") or {}).get("windows")}


def all_published(listener, ledger) -> bool:
    """Every job the listener started has its ``published`` state in the ledger."""
    return all(ledger.current_state(j) in ("published", "failed", "timed_out") for j in list(listener.jobs))


def breakdown(rec: dict, ledger, listener) -> dict:
    """Segments of one notice's latency from the ledger's task states (wall clock, same host)."""
    alert_id = rec["alert_id"]
    job = next((j for j, info in listener.jobs.items() if info["alert"]["id"] == alert_id), None)
    alert_task = f"alert:{alert_id}#{rec.get('record_number') or 0}"
    states: dict[str, float] = {}
    for s in ledger.task_history(alert_task):
        states.setdefault(s["state"], s["at"].timestamp())
    worker_s = None
    if job is not None:
        for s in ledger.task_history(job):
            states.setdefault(s["state"], s["at"].timestamp())
            if s["state"] == "succeeded":
                worker_s = (s["detail"] or {}).get("seconds")
    rec["job_id"] = job
    rec["states"] = {k: round(v - rec["t_produce"], 4) for k, v in states.items()}
    need = ("received", "queued", "running", "succeeded", "published")
    if not all(k in states for k in need) or rec.get("latency_s") is None:
        return {}
    seg = {
        "produce_to_received": states["received"] - rec["t_produce"],
        "received_to_queued": states["queued"] - states["received"],
        "queued_to_running": states["running"] - states["queued"],
        "worker_run": worker_s,
        "dispatch_and_pickup": states["succeeded"] - states["running"] - (worker_s or 0.0),
        "succeeded_to_published": states["published"] - states["succeeded"],
        "published_to_observed": rec["t_seen"] - states["published"],
    }
    if rec.get("published_at") is not None:
        seg["produce_stamp_to_observed"] = rec["t_seen"] - rec["published_at"]
    return {k: (None if v is None else round(v, 4)) for k, v in seg.items()}


# ---------------------------------------------------------------- profile of one worker job


def profile_job(listener, alert_key: str, top: int = 25) -> dict:
    """cProfile of ``run_job`` (what a worker process runs) for one rate_excess job, in this process.

    One unprofiled call first (imports, entry-point discovery), as a worker has done them after warm-up.
    """
    from dtlive.alerts.jobs import run_job
    from dtlive.alerts.notices import alert_to_dict, parse_notice
    from dtlive.alerts.send import TEMPLATES

    topic, value = notice(TEMPLATES["superk-sn"], alert_key, time.time() - 10.0)
    alert = alert_to_dict(parse_notice(value, topic))
    args = ("rate_excess", alert, {"background_s": 600}, listener.history_path, listener.ledger_url,
            str(listener.artifacts_dir / "profile"))
    run_job(*args)
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        run_job(*args)
        walls.append(time.perf_counter() - t0)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(run_job, *args)
    wall = time.perf_counter() - t0
    return {"unprofiled_wall_s": [round(w, 4) for w in walls], "profiled_wall_s": round(wall, 4),
            "hotspots": _hotspots(prof, wall, top)}


# ---------------------------------------------------------------- the benchmark


def run(quick: bool = False, n: int | None = None, profile: str = "missed", profile_n: int = 5,
        timeout_s: float = 60.0) -> dict:
    from confluent_kafka import Producer

    from dtlive.alerts.listener import AlertListener
    from dtlive.alerts.rules import load_rules
    from dtlive.alerts.send import TEMPLATES
    from dtlive.kafka.clients import client_config, ensure_topics
    from dtlive.storage.history import HistoryStore
    from dtlive.storage.ledger import Ledger

    n = n or (10 if quick else 20)
    template = dict(TEMPLATES["superk-sn"])
    tmp = Path(tempfile.mkdtemp(prefix="dtlive-bench-alerts-"))
    out: dict = {"n": n, "target_s": TARGET_S, "history_s": HISTORY_S, "rules": RULES.strip(), "workers": 2}
    budget = 240.0 + n * 8.0 + profile_n * 8.0  # every loop below is bounded by this
    try:
        with private_broker() as broker:
            bootstrap = broker.bootstrap
            tag = os.urandom(4).hex()
            cfg = bench_config(bootstrap, tag, analyses_topic=f"bench.analyses.{tag}",
                               alerts_rejected_topic=f"bench.alerts.rejected.{tag}",
                               alerts_group_id=f"bench-alerts-{tag}", alert_topics="gcn.notices.*")
            url = f"sqlite:///{tmp / 'ledger.sqlite'}"
            ledger, history = Ledger(url), HistoryStore(tmp / "history")

            # --- 12 minutes of windows ending now, recorded 30 at a time
            t0 = time.perf_counter()
            run_id = ledger.start_run(config=cfg, run_id=f"bench-{tag}")
            count = int(HISTORY_S / WINDOW_S)
            now = time.time()
            windows = Windows(cfg, run_id, end=now - RECORD_DELAY_S - (count - 1) * WINDOW_S)
            for k0 in range(0, count, 30):
                record(history, ledger, cfg, [windows.message(k) for k in range(k0, min(count, k0 + 30))], k0)
            out["setup"] = {"windows": history.windows(), "hits_per_window": round(windows.hits_per_window),
                            "hit_rate_hz": round(windows.hits_per_window / WINDOW_S),
                            "seconds": round(time.perf_counter() - t0, 2)}
            log(f"alerts: {out['setup']['windows']} windows in the history store "
                f"(~{out['setup']['hit_rate_hz']} Hz of hits), {out['setup']['seconds']} s")
            feeder = Feeder(windows, history, Ledger(url, migrate=False), cfg, next_k=count, offset=count,
                            max_s=budget)
            feeder.start()

            # --- topics, listener, observer
            notice_topic = notice(template, "SN.BENCH.WARMUP", time.time())[0]
            ensure_topics(cfg, bootstrap, [notice_topic, cfg.analyses_topic])
            t0 = time.perf_counter()
            listener = AlertListener(cfg, bootstrap, ledger=ledger, rules=load_rules(RULES), workers=2,
                                     timeout_s=timeout_s, artifacts_dir=tmp / "artifacts",
                                     history_path=str(tmp / "history"), ledger_url=url)
            out["listener_start_s"] = round(time.perf_counter() - t0, 3)
            observer = Observer(bootstrap, cfg.analyses_topic, max_s=budget)
            observer.start()
            lt = ListenerThread(listener, max_s=budget)
            lt.start()
            producer = Producer(client_config(cfg, bootstrap))  # as `dtlive alerts send`
            try:
                # --- warm-up (group join, pattern subscription's metadata, first job of a worker): excluded
                warm = [send_and_wait(producer, observer, template, "SN.BENCH.WARMUP", timeout=120.0)]
                log(f"alerts: warm-up notice -> result in {warm[0]['latency_s']} s")
                out["warmup"] = warm
                if warm[0]["latency_s"] is None:
                    raise RuntimeError(f"the warm-up notice got no result: {dict(listener.counts)}")

                # --- the measured notices, one at a time
                rng = random.Random(5)
                recs = []
                for i in range(n):
                    time.sleep(rng.uniform(0.3, 1.3))
                    rec = send_and_wait(producer, observer, template, f"SN.BENCH.{i:03d}", timeout=timeout_s)
                    recs.append(rec)
                    shown = None if rec["latency_s"] is None else round(rec["latency_s"], 3)
                    log(f"alerts: notice {i + 1}/{n}: {shown} s ({rec.get('status')})")
                # the listener writes `published` after the flush: wait for it (bounded)
                deadline = time.monotonic() + 10.0
                while time.monotonic() < deadline and not all_published(listener, ledger):
                    time.sleep(0.1)
                for rec in recs:
                    rec["segments"] = breakdown(rec, ledger, listener)
                for rec in out["warmup"]:
                    rec["segments"] = breakdown(rec, ledger, listener)
                lat = [r["latency_s"] for r in recs if r["latency_s"] is not None]
                out["latency_s"] = pct(lat)
                out["failed"] = sum(r["latency_s"] is None for r in recs)
                out["statuses"] = {s: sum(r.get("status") == s for r in recs) for s in {r.get("status") for r in recs}}
                out["segments_s"] = {k: pct([r["segments"][k] for r in recs if r["segments"].get(k) is not None])
                                     for k in (*SEGMENTS, "produce_stamp_to_observed")}
                # every notice must have its result, with the background the input holds: else not met
                out["counts"] = background_checks(recs, windows)
                out["target_met_p99"], out["verdict"] = verdict(bool(lat) and out["latency_s"]["p99"] <= TARGET_S,
                                                                out["counts"])
                out["target_met_max"] = verdict(bool(lat) and out["latency_s"]["max"] <= TARGET_S, out["counts"])[0]
                out["notices"] = recs

                # --- where the time goes
                if profile == "always" or (profile == "missed" and not out["target_met_p99"]):
                    log(f"alerts: profiling the listener thread over {profile_n} notices and one worker job")
                    lt.profile_on()
                    time.sleep(0.5)
                    prof_recs = []
                    t_prof = time.perf_counter()
                    for i in range(profile_n):
                        time.sleep(rng.uniform(0.3, 1.3))
                        prof_recs.append(send_and_wait(producer, observer, template, f"SN.BENCH.PROF{i:02d}",
                                                       timeout=timeout_s))
                    lt.profile_off()
                    wall = time.perf_counter() - t_prof
                    out["profile"] = {
                        "notices": profile_n,
                        "latency_s_under_profiler": [None if r["latency_s"] is None else round(r["latency_s"], 3)
                                                     for r in prof_recs],
                        "listener_thread": _hotspots(lt.profile, max(lt.profiled_s, wall), 25),
                        "listener_thread_profiled_s": round(lt.profiled_s, 3),
                        "worker_job": profile_job(listener, "SN.BENCH.JOBPROF"),
                    }
            finally:
                lt.stop_event.set()
                lt.join(15)
                observer.stop_event.set()
                feeder.stop_event.set()
                observer.join(10)
                feeder.join(10)
                listener.close()
                out["listener_counts"] = dict(listener.counts)
                out["feeder_append_ms"] = pct([s * 1000 for s in feeder.append_s])
                if lt.error is not None:
                    out["listener_error"] = repr(lt.error)
                producer.flush(5)
                del producer, listener, lt  # Kafka clients gone before the broker stops (no reconnect noise)
                gc.collect()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------- output


def print_table(res: dict) -> None:
    lat = res.get("latency_s", {})
    print(f"\n== alerts: notice -> published rate_excess result (background_s=600, {res.get('workers')} workers, "
          f"history {res.get('setup', {}).get('windows')} windows of 2 s, ~{res.get('setup', {}).get('hit_rate_hz')} "
          f"Hz of hits), n={lat.get('n')}")
    warm = res.get("warmup") or []
    if warm:
        print("  warm-up (excluded): " + ", ".join(f"{w['latency_s']:.3f} s" if w.get("latency_s") is not None
                                                   else "none" for w in warm))
    print(f"  {'':<26} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    print(f"  {'latency s':<26} {lat.get('p50')!s:>8} {lat.get('p95')!s:>8} {lat.get('p99')!s:>8} "
          f"{lat.get('max')!s:>8}   target <= {res.get('target_s')} s: "
          f"{res.get('verdict') or ('MET' if res.get('target_met_p99') else 'MISSED')} (p99), "
          f"{'MET' if res.get('target_met_max') else 'MISSED'} (max)")
    print("  breakdown (ledger task states):")
    for k, s in res.get("segments_s", {}).items():
        if s.get("n"):
            print(f"    {k:<24} {s['p50']:>8} {s['p95']:>8} {s['p99']:>8} {s['max']:>8}")
    print(f"  results: {res.get('statuses')}, failed: {res.get('failed')}; listener {res.get('listener_counts')}")
    prof = res.get("profile")
    if prof:
        print(f"  cProfile, listener thread ({prof['listener_thread_profiled_s']} s over {prof['notices']} notices), "
              "top by own time:")
        for r in prof["listener_thread"]["by_own_time"][:10]:
            print(f"    {r['own_pct']:5.1f}% own {r['cum_pct']:5.1f}% cum {r['calls']:>7}  {r['function']}")
        job = prof["worker_job"]
        print(f"  cProfile, one worker job (run_job; unprofiled {job['unprofiled_wall_s']} s), by cumulative time:")
        for r in job["hotspots"]["by_cumulative_time"][:14]:
            print(f"    {r['cum_pct']:5.1f}% cum {r['cum_s']:>7} s {r['calls']:>6}  {r['function']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.alerts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 notices instead of 20")
    ap.add_argument("--n", type=int, help="measured notices (default 20, --quick 10)")
    ap.add_argument("--profile", choices=("missed", "always", "never"), default="missed",
                    help="cProfile the listener and one worker job (default: if the target is missed)")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, n=args.n, profile=args.profile)
    env = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
           "python": sys.version.split()[0], "quick": args.quick, "loadavg_at_end": loadavg()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                           timeout=10).stdout.strip()
        env["dtlive_dirty_files"] = subprocess.run(["git", "status", "--porcelain", "--", "dtlive"], cwd=ROOT,
                                                   capture_output=True, text=True, timeout=10).stdout.splitlines()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"environment": env, "results": res}, indent=1, default=str) + "\n")
    print_table(res)
    print(f"\nresults: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
