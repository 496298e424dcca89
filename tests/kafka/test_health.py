"""Service health: heartbeat messages, stale detection, rate-limited librdkafka logs (unit), and heartbeats of a
real processor on the real broker, read back by ``dtlive status`` (which marks a killed processor stale)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from contracts import all_valid, valid
from waiting import wait_for

from dtlive.config import load_config
from dtlive.kafka.clients import LIBRDKAFKA_LOG, RateLimit, client_config, consumer_config
from dtlive.kafka.health import (
    STATUS_SCHEMA,
    Heartbeat,
    ServiceHealth,
    StatusReader,
    parse_status,
    partition_lag,
    rates_between,
    status_message,
    status_table,
)

ROOT = Path(__file__).resolve().parents[2]
_NEVER_WAITS_S = 0.5  # the longest a heartbeat call may take: far below the broker timeouts it must not wait


def checked(reader: StatusReader) -> StatusReader:
    """``reader``, every heartbeat it reads checked against the dtlive.status/1 contract."""
    read = reader.read
    reader.read = lambda timeout=3.0: all_valid(read(timeout))
    return reader


def beat(seq, t, service="processor", pid=1, state="running", run_id="r", interval_s=2.0, **kw):
    return status_message(service, run_id=run_id, state=state, seq=seq, now=t, host="h", pid=pid,
                          interval_s=interval_s, **kw)


# ------------------------------------------------------------------------------------------------ pure


def test_status_message_carries_identity_state_lag_rates_errors():
    lag = partition_lag({0: 500, 1: 40}, {0: 400, 1: 40}, newest_orbit={0: 1000, 1: 2000}, orbit_epoch=1000.0,
                        now=1002.0, topic="dt.hits")
    msg = beat(7, 1001.5, lag=lag, rates={"messages_per_s": 1234.5678}, counts={"messages": 9},
               errors={"consume": 2, "windows": 1}, last_error={"text": "boom", "time": 1000.0},
               config_hash="abc", started_at=1000.0)
    assert msg["schema"] == STATUS_SCHEMA and msg["instance"] == "processor@h:1" and msg["seq"] == 7
    assert msg["uptime_s"] == 1.5 and msg["config_hash"] == "abc" and msg["version"]
    assert msg["lag"]["messages"] == 100 and msg["lag"]["partitions"]["1"]["messages"] == 0
    # event-time lag: wall clock minus the end of the newest orbit read on the partition
    orbit_s = 3564 * 25e-9
    assert msg["lag"]["partitions"]["0"]["seconds"] == pytest.approx(2.0 - 1001 * orbit_s, abs=1e-3)
    assert msg["lag"]["seconds"] == pytest.approx(2.0 - 1001 * orbit_s, abs=1e-3)  # the worst partition
    assert msg["rates"] == {"messages_per_s": 1234.568} and msg["errors_total"] == 3
    assert parse_status(json.dumps(msg).encode()) == json.loads(json.dumps(msg))
    with pytest.raises(ValueError, match="unknown state"):
        beat(0, 0.0, state="sleeping")
    for bad in (b"not json", b'{"schema": "dtlive.monitor/1", "time": 1}', b'{"schema": "dtlive.status/1"}', b"[]"):
        with pytest.raises(ValueError):
            parse_status(bad)
    assert partition_lag({0: 5}, {})["seconds"] is None  # no epoch known: messages only
    assert rates_between({"rows": 100}, {"rows": 300}, 4.0) == {"rows_per_s": 50.0}
    assert rates_between({"rows": 100}, {"rows": 300}, 0.0) == {}


def test_stale_after_three_intervals_unless_stopped():
    health = ServiceHealth()
    health.add([beat(i, 100.0 + 2 * i) for i in range(5)] + [beat(0, 100.0, service="recorder", pid=2)])
    rows = {r["service"]: r for r in health.rows(now=109.0)}  # processor: last beat 108; recorder: 100
    assert not rows["processor"]["stale"] and rows["processor"]["alarm"] is None
    assert rows["recorder"]["stale"] and rows["recorder"]["state"] == "stale"
    assert "no heartbeat for 9 s" in rows["recorder"]["alarm"]
    assert not ServiceHealth().rows(now=0.0)
    assert health.rows(now=114.1)[0]["stale"] and not ServiceHealth().alarms(now=0.0)
    assert not [r for r in health.rows(now=113.9) if r["service"] == "processor"][0]["stale"]  # 5.9 s < 3 x 2 s
    health.add([beat(1, 101.0, service="recorder", pid=2, state="stopped")])
    stopped = [r for r in health.rows(now=200.0) if r["service"] == "recorder"][0]
    assert stopped["state"] == "stopped" and not stopped["stale"] and stopped["alarm"] is None
    assert health.add([beat(1, 101.0, service="recorder", pid=2, state="stopped")]) == 0  # a repeat
    assert ServiceHealth(forget_after_s=60).add([beat(0, 0.0)]) == 1
    forgetful = ServiceHealth(forget_after_s=60)
    forgetful.add([beat(0, 0.0)])
    assert forgetful.rows(now=61.0) == []


def test_irregular_and_error_states_raise_alarms():
    gaps = ServiceHealth()
    gaps.add([beat(0, 100.0), beat(1, 102.0), beat(2, 107.0), beat(3, 109.0)])  # a 5 s gap at 2 s intervals
    row = gaps.rows(now=110.0)[0]
    assert row["irregular"] and not row["stale"] and "gap 5.0 s" in row["alarm"]
    lost = ServiceHealth()
    lost.add([beat(0, 100.0), beat(1, 102.0), beat(3, 103.9)])  # seq 2 never arrived
    assert "1 missing" in lost.rows(now=104.0)[0]["alarm"]
    steady = ServiceHealth()
    steady.add([beat(i, 100.0 + 2.1 * i) for i in range(8)])
    assert steady.alarms(now=115.0) == []
    restarted = ServiceHealth()  # a new run of the same pid starts its sequence again: not a gap
    restarted.add([beat(5, 100.0, run_id="a"), beat(0, 101.0, run_id="b"), beat(1, 103.0, run_id="b")])
    assert restarted.alarms(now=104.0) == []
    bad = ServiceHealth()
    bad.add([beat(0, 100.0, state="degraded", last_error={"text": "consume error: broker down", "time": 99.0})])
    assert bad.alarms(now=100.5) == ["processor on h (pid 1): degraded: consume error: broker down"]
    table = status_table(bad.rows(now=100.5) + gaps.rows(now=120.0))
    assert "DEGRADED" in table and "STALE" in table and "<- no heartbeat for 11 s" in table


class FakeProducer:
    """Records what a Heartbeat produces; can refuse like a full local queue."""

    def __init__(self, full=False):
        self.sent, self.full, self.flushed = [], full, 0

    def produce(self, topic, value, key=None, headers=None, on_delivery=None):
        if self.full:
            raise BufferError("queue full")
        self.sent.append((topic, valid(value)))

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=0):
        self.flushed += 1
        return 0


def test_heartbeat_publishes_at_most_every_interval_with_rates_then_stopped():
    cfg = load_config({"status_topic": "st"}, env={})
    clock = iter(float(t) for t in range(1000, 2000)).__next__
    logger = logging.getLogger(f"dtlive.test-{uuid.uuid4().hex[:6]}")
    hb = Heartbeat("recorder", cfg, "127.0.0.1:9", producer=FakeProducer(), clock=clock, watch=(logger.name,),
                   create_topic=False)
    assert [m["state"] for _, m in hb.producer.sent] == ["starting"]
    calls = []

    def fields():
        calls.append(1)
        return {"counts": {"windows": 10 * len(calls)}, "state": "running"}

    sent = [hb.maybe(now, fields) for now in (0.0, 0.5, 1.9, 2.0, 3.0, 4.1)]
    assert sent == [True, False, False, True, False, True] and len(calls) == 3  # fields only when due
    logger.warning("lost the broker")
    hb.maybe(6.2, fields)
    msgs = [m for _, m in hb.producer.sent]
    assert [m["seq"] for m in msgs] == [0, 1, 2, 3, 4] and {t for t, _ in hb.producer.sent} == {"st"}
    assert msgs[2]["rates"]["windows_per_s"] == pytest.approx(10.0)  # +10 windows in 1 s of the fake clock
    assert msgs[4]["errors"]["log_warnings"] == 1 and "lost the broker" in msgs[4]["last_error"]["text"]
    hb.close(fields=fields)
    assert msgs[-1]["state"] != "stopped" and hb.producer.sent[-1][1]["state"] == "stopped"
    assert hb.producer.flushed == 1 and not hb.maybe(100.0, fields)
    logger.warning("after close: not counted")
    full = Heartbeat("emulator", cfg, "127.0.0.1:9", producer=FakeProducer(full=True), create_topic=False)
    full.maybe(0.0)
    full.producer.full = False
    full.maybe(5.0)
    assert full.producer.sent[-1][1]["errors"]["status_publish"] == 2  # "starting" and one beat were dropped


# ------------------------------------------------------------------------------------- against the real world


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once the socket is closed


def test_dead_broker_gives_a_handful_of_log_lines_not_hundreds():
    from confluent_kafka import Consumer, Producer

    cfg = load_config({}, env={})
    dead = f"127.0.0.1:{closed_port()}"
    limiter = RateLimit(every_s=30)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    old_filters = LIBRDKAFKA_LOG.filters[:]
    for f in old_filters:
        LIBRDKAFKA_LOG.removeFilter(f)
    LIBRDKAFKA_LOG.addFilter(limiter)
    LIBRDKAFKA_LOG.addHandler(handler)
    try:
        consumer = Consumer(consumer_config(cfg, dead, group_id="g-dead"))
        consumer.subscribe(["nowhere"])
        producer = Producer(client_config(cfg, dead))
        producer.produce("nowhere", b"x")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            consumer.consume(10, 0.1)
            producer.poll(0.05)
        consumer.close()
        producer.purge()
        producer.flush(1)
    finally:
        LIBRDKAFKA_LOG.removeHandler(handler)
        LIBRDKAFKA_LOG.removeFilter(limiter)
        for f in old_filters:
            LIBRDKAFKA_LOG.addFilter(f)
    texts = [r.getMessage() for r in records]
    assert 1 <= len(records) <= 5, texts  # librdkafka logs ~20 connect failures a second here
    assert any("Connection refused" in t for t in texts), texts
    assert limiter.suppressed >= 20, texts  # the limiter did the work, librdkafka did not go quiet by itself


def test_heartbeat_never_blocks_or_raises_while_the_broker_is_away():
    cfg = load_config({"status_topic": "st", "status_interval_s": 0.2}, env={})
    hb = Heartbeat("processor", cfg, f"127.0.0.1:{closed_port()}")  # creating the topic fails: counted
    slowest, beats = 0.0, 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        beats += hb.maybe(t0, counts={"messages": beats})
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(0.01)
    t0 = time.monotonic()
    hb.close()
    # a call that waited on the broker would wait its timeouts (2-5 s); 0.5 s leaves room for a busy machine's
    # scheduling, which made single calls take up to 0.15 s while the whole suite ran
    assert beats >= 10 and slowest < _NEVER_WAITS_S and time.monotonic() - t0 < 3.0
    assert hb.publish_errors >= 1
    assert any(w in hb.last_publish_error["text"] for w in ("status topic", "not delivered")), hb.last_publish_error


@pytest.fixture
def health_topics(topics):
    return {**topics, "status_topic": f"status-{uuid.uuid4().hex[:8]}"}


def test_processor_heartbeats_every_2s_with_lag_and_rates(broker, health_topics):
    from confluent_kafka import Producer

    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate, simulated_chunks
    from dtlive.streaming.processor import Processor

    cfg = load_config({"bootstrap": broker, **health_topics}, env={})
    ensure_topics(cfg, broker, [cfg.hits_topic])
    stop = threading.Event()
    feed = threading.Thread(target=emulate, args=(Producer({"bootstrap.servers": broker, "linger.ms": 5}),
                                                  cfg.hits_topic, simulated_chunks(seed=1, rows_per_s=2000)),
                            kwargs={"rate": 2000, "progress": False, "stop": stop.is_set}, daemon=True)
    feed.start()
    proc = Processor(cfg, broker, from_beginning=True)
    runner = threading.Thread(target=proc.run, daemon=True)
    runner.start()
    reader = checked(StatusReader(cfg, broker, since_s=120))
    seen: list[dict] = []
    try:
        def enough():
            seen.extend(m for m in reader.read(timeout=1.0) if m["run_id"] == proc.run_id)
            running = [m for m in seen if m["state"] in ("running", "idle")]
            return len(running) >= 5 and running[-1]["rates"].get("messages_per_s", 0) > 0
        wait_for(enough, 60, interval=0.5, what="5 processor heartbeats with an input rate")
    finally:
        proc.stop()
        runner.join(30)
        stop.set()
        feed.join(10)
        proc.close()
    seen.extend(m for m in reader.read(timeout=3.0) if m["run_id"] == proc.run_id)
    reader.close()
    assert seen[0]["state"] == "starting" and seen[-1]["state"] == "stopped"
    assert [m["seq"] for m in seen] == list(range(len(seen)))  # none lost
    beats = [m for m in seen if m["state"] in ("running", "idle", "degraded")]
    gaps = [b["time"] - a["time"] for a, b in zip(beats[:-1], beats[1:])]
    assert all(1.9 <= g <= 4.0 for g in gaps), gaps  # every ~2 s (a loaded machine may add a poll's worth)
    last = beats[-1]
    assert last["service"] == "processor" and last["pid"] == os.getpid() and last["config_hash"] == cfg.config_hash
    assert last["lag"]["topic"] == cfg.hits_topic and set(last["lag"]["partitions"]) == {"0"}
    assert last["lag"]["partitions"]["0"]["seconds"] is not None and last["lag"]["seconds"] < 30
    assert last["lag"]["messages"] < 2000 * 10  # keeping up: less than 10 s of input waiting
    assert 500 < last["rates"]["messages_per_s"] < 5000 and last["counts"]["messages"] > 0
    assert seen[-1]["counts"]["messages"] == proc.source.messages


def run_cli(args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "dtlive", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_dtlive_status_shows_the_processor_then_marks_it_stale_after_kill(broker, health_topics):
    from dtlive.kafka.clients import ensure_topics

    cfg = load_config({"bootstrap": broker, **health_topics}, env={})
    ensure_topics(cfg, broker, [cfg.hits_topic])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DTLIVE_BOOTSTRAP": broker,
           "DTLIVE_STATUS_TOPIC": cfg.status_topic, "DTLIVE_HITS_TOPIC": cfg.hits_topic,
           "DTLIVE_MONITOR_TOPIC": cfg.monitor_topic, "DTLIVE_REJECTED_TOPIC": cfg.rejected_topic,
           "DTLIVE_GROUP_ID": cfg.group_id}
    proc = subprocess.Popen([sys.executable, "-m", "dtlive", "process", "--no-ledger"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def alive():
            out = run_cli(["status", "--json"], env)
            rows = json.loads(out.stdout) if out.stdout.strip() else []
            mine = [r for r in rows if r["pid"] == proc.pid and r["state"] in ("running", "idle")]
            return (out, mine) if out.returncode == 0 and mine else None
        out, rows = wait_for(alive, 60, interval=0.5, what="dtlive status showing the processor alive")
        assert rows[0]["service"] == "processor" and rows[0]["lag_messages"] == 0 and not rows[0]["stale"]
        table = run_cli(["status"], env)
        assert table.returncode == 0 and "processor" in table.stdout and str(proc.pid) in table.stdout
        assert "STALE" not in table.stdout
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

        def stale():
            out = run_cli(["status"], env)
            return out if out.returncode == 1 and "STALE" in out.stdout else None
        out = wait_for(stale, 30, interval=0.5, what="dtlive status marking the killed processor stale")
        line = [ln for ln in out.stdout.splitlines() if str(proc.pid) in ln][0]
        assert "processor" in line and "STALE" in line and "no heartbeat for" in line
        rows = json.loads(run_cli(["status", "--json"], env).stdout)
        mine = [r for r in rows if r["pid"] == proc.pid]
        assert [r["state"] for r in mine] == ["stale"]
        assert mine[0]["age_s"] >= 6.0  # stale only after 3 intervals of 2 s without a heartbeat
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_dtlive_status_without_heartbeats_says_so_and_fails(broker):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DTLIVE_BOOTSTRAP": broker,
           "DTLIVE_STATUS_TOPIC": f"status-none-{uuid.uuid4().hex[:8]}"}
    out = run_cli(["status"], env)
    assert out.returncode == 1 and "no service heartbeats" in out.stderr and "Traceback" not in out.stderr
    away = run_cli(["--bootstrap", f"127.0.0.1:{closed_port()}", "status"], env)
    assert away.returncode == 1 and "unreachable" in away.stderr and "Traceback" not in away.stderr
    assert len(away.stderr.strip().splitlines()) <= 3, away.stderr  # the error, and at most a librdkafka line or two
    help_text = run_cli(["status", "--help"], env).stdout
    assert "STALE" in help_text and "--watch" in help_text and "Exit status" in help_text


# ------------------------------------------------------------------------------------------------ dashboard


def test_dashboard_health_panel_updates_in_process_and_alarms_on_a_missing_heartbeat():
    from dtlive.ui.widgets import Dashboard

    dash = Dashboard(bootstrap="127.0.0.1:9", start=False)
    assert "NO SERVICE HEARTBEATS" in dash.services.widget.value
    t = time.time()
    dash.add_heartbeats([beat(0, t - 1.0, service="processor", pid=11, lag=partition_lag({0: 7}, {0: 5})),
                         beat(0, t - 0.5, service="recorder", pid=12, rates={"windows_per_s": 0.5})])
    html_ok = dash.services.widget.value
    assert "SERVICES OK (2)" in html_ok and "data-state='running'" in html_ok and "2 msgs" in html_ok
    assert "windows 0.5/s" in html_ok and dash.services.alarms == []
    dash.services.refresh(now=t + 6.5)  # the processor's last heartbeat is 7.5 s old: > 3 intervals of 2 s
    assert dash.services.alarms == ["processor on h (pid 11): no heartbeat for 8 s",
                                    "recorder on h (pid 12): no heartbeat for 7 s"]
    assert "ALARM" in dash.services.widget.value and "data-state='stale'" in dash.services.widget.value
    dash.add_heartbeats([beat(1, t + 6.0, service="recorder", pid=12, state="stopped")])
    dash.services.refresh(now=t + 6.5)
    assert dash.services.alarms == ["processor on h (pid 11): no heartbeat for 8 s"]
    assert "data-state='stopped'" in dash.services.widget.value


def test_dashboard_shows_a_live_service_then_alarms_when_its_heartbeat_stops(broker, monkeypatch):
    from dtlive.ui.widgets import Dashboard

    topic = f"status-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DTLIVE_STATUS_TOPIC", topic)
    cfg = load_config({"bootstrap": broker, "status_topic": topic, "status_interval_s": 0.5}, env={})
    hb = Heartbeat("recorder", cfg, broker)
    dash = Dashboard(bootstrap=broker, status_every_s=0.25)
    try:
        def shown_alive():
            hb.maybe(None, state="running", counts={"windows": 1})
            return "SERVICES OK (1)" in dash.services.widget.value and "data-state='running'" in \
                dash.services.widget.value
        wait_for(shown_alive, 30, interval=0.1, what="the dashboard showing the recorder alive")
        stopped = time.monotonic()  # the service's loop "hangs": no more heartbeats
        wait_for(lambda: dash.services.alarms, 15, interval=0.1, what="an alarm for the missing heartbeat")
        assert time.monotonic() - stopped >= 1.0  # not before 3 intervals of 0.5 s (give or take one interval)
        assert "no heartbeat for" in dash.services.alarms[0] and "ALARM" in dash.services.widget.value
        assert "data-state='stale'" in dash.services.widget.value and dash.status_feed.broker_ok
    finally:
        dash.stop()
        hb.close()


# ------------------------------------------------------------------------------------ the other services


def test_recorder_listener_and_emulator_publish_heartbeats(broker, health_topics, tmp_path):
    from confluent_kafka import Producer

    from dtlive.alerts.listener import AlertListener
    from dtlive.alerts.workers import WorkerPool
    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate, simulated_chunks
    from dtlive.storage.history import HistoryStore
    from dtlive.storage.ledger import Ledger
    from dtlive.storage.recorder import Recorder

    tag = uuid.uuid4().hex[:8]
    cfg = load_config({"bootstrap": broker, **health_topics, "quality_topic": f"dq-{tag}",
                       "analyses_topic": f"an-{tag}", "alerts_rejected_topic": f"arej-{tag}",
                       "alerts_group_id": f"al-{tag}", "alert_topics": f"gcn.notices.h{tag}.*",
                       "status_interval_s": 0.5}, env={})
    ensure_topics(cfg, broker, [cfg.hits_topic])
    hb = Heartbeat("emulator", cfg, broker)
    stats = emulate(Producer({"bootstrap.servers": broker, "linger.ms": 5}), cfg.hits_topic,
                    simulated_chunks(seed=2, rows_per_s=2000), rate=2000, limit=5000, progress=False, heartbeat=hb)
    hb.close(counts={"rows": stats.rows, "messages": stats.messages})
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    rec = Recorder(cfg, broker, ledger=ledger, history=HistoryStore(tmp_path / "history"))
    rec.run(max_seconds=2.5)
    rec.close()
    listener = AlertListener(cfg, broker, ledger=ledger, pool=WorkerPool(1, preload=()),
                             artifacts_dir=tmp_path / "artifacts")
    try:
        listener.run(max_seconds=2.5)
    finally:
        listener.close()
    reader = checked(StatusReader(cfg, broker, since_s=300))
    msgs = reader.read(timeout=5)
    reader.close()
    for service in ("emulator", "recorder", "alerts"):
        mine = [m for m in msgs if m["service"] == service]
        assert mine[0]["state"] == "starting" and mine[-1]["state"] == "stopped", [m["state"] for m in mine]
        assert [m["seq"] for m in mine] == list(range(len(mine))) and len(mine) >= 5, service  # 2.5 s at 0.5 s
        assert {m["pid"] for m in mine} == {os.getpid()} and len({m["run_id"] for m in mine}) == 1
    emu = [m for m in msgs if m["service"] == "emulator"]
    assert emu[-1]["counts"] == {"rows": 5000, "messages": 5000}
    assert all(1000 < m["rates"]["rows_per_s"] < 3000 for m in emu[2:-1]), [m["rates"] for m in emu]
    recorder = [m for m in msgs if m["service"] == "recorder"]
    assert recorder[-1]["lag"]["topic"] == cfg.monitor_topic and recorder[-1]["lag"]["messages"] == 0


def test_heartbeats_survive_a_broker_restart(tmp_path):
    """The broker goes away (heartbeats fail, counted; the loop never waits), then a new one on the same port
    (the embedded broker keeps topics in memory: the status topic is gone): heartbeats resume on a re-created
    status topic, and say how many were lost."""
    from conftest import free_port

    from dtlive.kafka.broker import EmbeddedBroker
    from dtlive.kafka.clients import partition_ends

    port = free_port()
    first = EmbeddedBroker(port=port, state_dir=tmp_path / "a").start()
    cfg = load_config({"bootstrap": first.bootstrap, "status_topic": "st-restart", "status_interval_s": 0.2},
                      env={})
    hb = Heartbeat("processor", cfg, first.bootstrap)
    second = None
    try:
        wait_for(lambda: hb.maybe(None) and hb.sent >= 3, 20, interval=0.05, what="heartbeats delivered")
        first.stop()
        slowest, deadline = 0.0, time.monotonic() + 4
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            hb.maybe(t0)
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.02)
        assert slowest < _NEVER_WAITS_S
        sent_before = hb.sent
        second = EmbeddedBroker(port=port, state_dir=tmp_path / "b").start()
        assert partition_ends(cfg, second.bootstrap, "st-restart", timeout=5) == {}  # the topic died with the broker

        def resumed():
            hb.maybe(None)
            return hb.sent > sent_before + 3
        wait_for(resumed, 60, interval=0.05, what="heartbeats delivered again after the restart")
        assert hb.publish_errors >= 1
        reader = checked(StatusReader(cfg, second.bootstrap, since_s=60))
        got = reader.read(timeout=5)
        reader.close()
        assert got and got[-1]["errors"]["status_publish"] >= 1 and got[-1]["last_error"]["text"]
        assert partition_ends(cfg, second.bootstrap, "st-restart", timeout=5).keys() == {0}  # created, 1 partition
    finally:
        hb.close(timeout=1)
        first.stop()
        if second is not None:
            second.stop()


def test_dask_processor_publishes_heartbeats_with_lag(broker, health_topics):
    from confluent_kafka import Producer

    from dtlive.kafka.clients import ensure_topics, partition_ends
    from dtlive.kafka.emulator import emulate, simulated_chunks
    from dtlive.streaming.dask_driver import DaskProcessor, dask_client

    cfg = load_config({"bootstrap": broker, **health_topics, "status_interval_s": 0.5}, env={})
    ensure_topics(cfg, broker, {cfg.hits_topic: 2})
    emulate(Producer({"bootstrap.servers": broker, "linger.ms": 5}), cfg.hits_topic, simulated_chunks(seed=4),
            rate=None, fmt="csv-batch", rows_per_message=100, limit=20_000, progress=False, partitions=2)
    with dask_client("local:1") as client:
        proc = DaskProcessor(cfg, broker, client, from_beginning=True)
        try:
            proc.run(until_end=True, max_seconds=120)
        finally:
            proc.close()
    reader = checked(StatusReader(cfg, broker, since_s=300))
    msgs = [m for m in reader.read(timeout=5) if m["run_id"] == proc.run_id]
    reader.close()
    assert msgs[0]["state"] == "starting" and msgs[-1]["state"] == "stopped" and len(msgs) >= 3
    assert {m["service"] for m in msgs} == {"dask-processor"}
    last = msgs[-1]
    assert set(last["lag"]["partitions"]) == {"0", "1"} and last["lag"]["messages"] == 0  # all read at the end
    sent = sum(high - low for low, high in partition_ends(cfg, broker, cfg.hits_topic).values())
    assert last["counts"]["messages"] == proc.messages == sent > 0 and last["detail"]["actors"] == 1


def test_a_processor_that_stops_consuming_with_input_waiting_says_degraded(broker, health_topics):
    """The loop keeps running (so the heartbeat does) but nothing is consumed while input waits, as when a consumer
    loses its fetches: the heartbeat says degraded, how much waits and for how long; consuming again clears it."""
    from confluent_kafka import Producer

    from dtlive.kafka.clients import ensure_topics
    from dtlive.streaming.processor import Processor

    cfg = load_config({"bootstrap": broker, **health_topics, "status_interval_s": 0.5}, env={})
    ensure_topics(cfg, broker, [cfg.hits_topic])
    proc = Processor(cfg, broker)
    runner = threading.Thread(target=proc.run, daemon=True)
    runner.start()
    reader = checked(StatusReader(cfg, broker, since_s=120))
    seen: list[dict] = []

    def beat_where(check, timeout):
        def found():
            seen.extend(reader.read(timeout=0.5))
            return next((m for m in reversed(seen) if m["run_id"] == proc.run_id and check(m)), None)
        return wait_for(found, timeout, interval=0.1, what="a heartbeat")

    try:
        beat_where(lambda m: m["state"] == "idle", 30)
        assignment = proc.source.consumer.assignment()
        proc.source.consumer.pause(assignment)
        producer = Producer({"bootstrap.servers": broker})
        for i in range(300):
            producer.produce(cfg.hits_topic, f"2,0,5,{1000 + i},0,0".encode())
        producer.flush(10)
        stuck = beat_where(lambda m: m["state"] == "degraded", 30)
        # at least one waits (a Tansu broker's offsets answer can leave out the newest batch until the next write)
        waiting = stuck["lag"]["messages"]
        assert 1 <= waiting <= 300 and stuck["detail"]["stalled_s"] >= 1.0  # degraded past 2 intervals (rounded)
        assert f"{waiting} input messages waiting, none consumed for" in stuck["last_error"]["text"]
        health = ServiceHealth()
        health.add([stuck])
        assert f"degraded: {waiting} input messages waiting" in health.alarms(now=stuck["time"])[0]
        proc.source.consumer.resume(assignment)
        caught_up = beat_where(lambda m: m["state"] != "degraded" and m["seq"] > stuck["seq"], 30)
        assert caught_up["lag"]["messages"] == 0 and caught_up["counts"]["messages"] == 300
    finally:
        proc.stop()
        runner.join(30)
        proc.close()
        reader.close()
