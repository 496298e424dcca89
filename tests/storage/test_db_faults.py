"""Database faults against a real PostgreSQL (a private server the tests stop and start) and the real broker.

The services wait out an outage (retry with backoff, one log line when it starts, one when it ends) and
go on from where they were; commands that need the database say in one line that it is unreachable;
runs whose process was killed are shown as ``died``; kill -9 of the recorder or the alert listener and a
restart resume exactly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from dtlive.service.watchdog import Watchdog
from dtlive.storage.ledger import Ledger, LedgerUnavailable, RetryingLedger, is_unreachable

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition, timeout: float, what: str, step: float = 0.1):
    """Poll ``condition()`` until it is truthy (returned) or ``timeout`` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def dtlive_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("DTLIVE_BOOTSTRAP", None)
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dtlive", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def outage(server, seconds: float) -> threading.Thread:
    """Stop the server now and start it again after ``seconds`` (in a thread, returned started)."""
    server.stop()
    server.wait_down()

    def back():
        time.sleep(seconds)
        server.start()

    t = threading.Thread(target=back, daemon=True)
    t.start()
    return t


# ------------------------------------------------------------------------------------------- the ledger


def test_a_ledger_call_waits_out_an_outage_with_one_line_at_each_end(pg_db, caplog):
    url, server = pg_db
    ledger = Ledger(url)
    ledger.append_state("task-1", "queued", task_kind="analysis")
    patient = RetryingLedger(ledger)
    back = outage(server, 4.0)
    with pytest.raises(Exception) as plain:  # the plain ledger fails at once, and the error says what it is
        ledger.current_state("task-1")
    assert is_unreachable(plain.value)
    caplog.set_level(logging.WARNING, logger="dtlive.storage.ledger")
    started = time.monotonic()
    patient.append_state("task-1", "running")  # written once the server is back
    waited = time.monotonic() - started
    back.join()
    assert 3.0 < waited < 4.0 + 10.0
    assert [s["state"] for s in ledger.task_history("task-1")] == ["queued", "running"]
    lines = [r.getMessage() for r in caplog.records if r.name == "dtlive.storage.ledger"]
    assert len(lines) == 2, lines  # not one per attempt
    assert "is unreachable" in lines[0] and f":{server.port}/" in lines[0]
    assert "reachable again" in lines[1]


def test_a_waiting_call_gives_up_when_its_service_stops(pg_db):
    url, server = pg_db
    ledger = Ledger(url)
    stopping = threading.Event()
    patient = RetryingLedger(ledger, stop=stopping.is_set)
    server.stop()
    threading.Timer(1.0, stopping.set).start()
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable, match="unreachable"):
        patient.append_state("task-2", "queued")
    assert time.monotonic() - started < 5.0


# ------------------------------------------------------------------------------------------ the commands


@pytest.mark.parametrize("command", [["runs"], ["periods"], ["provenance", "1"]])
def test_commands_say_in_one_line_that_the_database_is_down(pg_db, command):
    url, server = pg_db
    Ledger(url).close()
    server.stop()
    secret_url = sa.make_url(url).set(password="s3cret").render_as_string(hide_password=False)
    started = time.monotonic()
    out = run_cli(*command, env=dtlive_env(DTLIVE_DB=secret_url))
    seconds = time.monotonic() - started
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "unreachable" in lines[0] and f"127.0.0.1:{server.port}" in lines[0]
    assert "s3cret" not in out.stderr and "***" in lines[0]
    assert "Traceback" not in out.stderr
    assert seconds < 15


def test_a_database_that_does_not_answer_is_reported_within_seconds():
    """A server that accepts the TCP connection but never speaks: the connect timeout, not a hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        out = run_cli("runs", env=dtlive_env(DTLIVE_DB=f"postgresql://postgres@127.0.0.1:{port}/x"))
        seconds = time.monotonic() - started
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "unreachable" in out.stderr, out.stderr
    assert seconds < 20


# ---------------------------------------------------------------------------------------- runs that died


def test_a_killed_run_is_shown_as_died(pg_db):
    url, _ = pg_db
    Ledger(url).close()
    code = ("import sys, time; from dtlive.storage.ledger import Ledger; "
            "led = Ledger(sys.argv[1]); print(led.start_run(config={'window_s': 2.0}), flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, url], env=dtlive_env(), stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    try:
        run_id = child.stdout.readline().strip()
        ledger = Ledger(url)
        assert ledger.run(run_id)["status"] == "running" and ledger.run(run_id)["pid"] == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    Ledger(url).close()  # a service starting on this host marks it
    with ledger.session() as s:
        assert s.execute(sa.text("SELECT status FROM processing_runs WHERE run_id = :r"), {"r": run_id}).scalar() == \
            "died"
    listed = {r["run_id"]: r for r in ledger.runs()}
    assert listed[run_id]["status"] == "died"
    assert listed[run_id]["stopped_at"] is not None
    out = run_cli("runs", env=dtlive_env(DTLIVE_DB=url))
    assert out.returncode == 0
    assert next(line for line in out.stdout.splitlines() if run_id in line).split()[2] == "died"


@pytest.mark.kafka
def test_kill_9_of_dtlive_process_leaves_its_run_died_not_running(broker, pg_db, feed_topics):
    from dtlive.kafka.clients import ensure_topics

    url, _ = pg_db
    cfg = feed_topics
    ensure_topics(cfg, broker, [cfg.hits_topic])
    cmd = [sys.executable, "-m", "dtlive", "--bootstrap", broker, "process", "--input", cfg.hits_topic,
           "--output", cfg.monitor_topic, "--rejected", cfg.rejected_topic, "--group-id", cfg.group_id]
    proc = subprocess.Popen(cmd, env=dtlive_env(DTLIVE_DB=url), cwd=ROOT, stderr=subprocess.DEVNULL)
    ledger = Ledger(url)
    try:
        run = wait_for(lambda: next((r for r in ledger.runs() if r["processor"] == cfg.group_id), None), 90,
                       "the processor's run recorded")
        assert run["status"] == "running" and run["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    shown = ledger.run(run["run_id"])
    assert shown["status"] == "died" and shown["stopped_at"] is not None


def test_a_silent_run_on_another_host_is_unknown_and_a_live_one_running(pg_db):
    url, _ = pg_db
    ledger = Ledger(url)
    old = ledger.start_run(host="daq-elsewhere", pid=123, at=time.time() - 3600)
    fresh = ledger.start_run(host="daq-elsewhere", pid=124)
    mine = ledger.start_run()  # this process: alive
    shown = {r["run_id"]: r["status"] for r in ledger.runs()}
    assert shown == {old: "unknown", fresh: "running", mine: "running"}
    with ledger.session() as s:  # "unknown" is how it is shown, not what is stored
        assert s.execute(sa.text("SELECT status FROM processing_runs WHERE run_id = :r"), {"r": old}).scalar() == \
            "running"


def test_a_run_keeper_stamps_heartbeats_and_records_the_end(tmp_path):
    from dtlive.storage.ledger import RunKeeper

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    keeper = RunKeeper(ledger, "run-hb", heartbeat_s=0.2, config={"window_s": 2.0})
    first = ledger.run("run-hb")["heartbeat_at"]
    wait_for(lambda: ledger.run("run-hb")["heartbeat_at"] > first, 10, "a heartbeat")
    assert keeper.stop("failed", timeout_s=5) is True
    run = ledger.run("run-hb")
    assert run["status"] == "failed" and run["stopped_at"] >= run["heartbeat_at"] > first


# ------------------------------------------------------------------------------------- a feed of results


def result_message(wid: int, processor: str, run_id: str) -> bytes:
    """A real ``dtlive.monitor/1`` message (the processor's encoder) of window ``wid`` (2 s windows)."""
    from dtlive.core.detector import orbits_for_seconds
    from dtlive.core.messages import encode_message
    from dtlive.core.rows import Rows
    from dtlive.core.windows import Window
    from dtlive.streaming.nodes import window_dataset

    per = orbits_for_seconds(2.0)
    first = wid * per
    hits = Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 1], channel=[3, 4, 70], orbit=[first + 7] * 3, bx=[0] * 3,
                             tdc=[0] * 3)
    window = Window(wid, first, first + per - 1, hits, inputs={0: (10 * wid, 10 * wid + 9)},
                    meta={"counts": {"rows": 3}, "orbit_epoch": 1.7e9})
    prov = {"topic": "dt.hits", "config_hash": "c0ffee", "run_id": run_id, "processor": processor, "host": "daq"}
    return encode_message(window_dataset(window, provenance=prov))


class ResultsFeed:
    """Publishes ``n`` window results (ids ``first`` ...) on a topic at ``rate`` per second, in a thread (a throttled
    feed); ``run_id`` goes on with an earlier feed's processing run."""

    def __init__(self, bootstrap: str, topic: str, n: int, rate: float, processor: str, first: int = 0,
                 run_id: str | None = None):
        from confluent_kafka import Producer

        self.topic, self.n, self.rate = topic, n, rate
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.messages = [result_message(w, processor, self.run_id) for w in range(first, first + n)]
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ResultsFeed:
        self.thread.start()
        return self

    def _run(self):
        t0 = time.monotonic()
        for i, msg in enumerate(self.messages):
            time.sleep(max(0.0, t0 + i / self.rate - time.monotonic()))
            self.producer.produce(self.topic, msg, key=b"w")
            self.producer.poll(0)
            self.sent = i + 1
        self.producer.flush(30)

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the feed did not finish"


def recorded(url: str, processor: str) -> list[tuple[int, int]]:
    """(window id, result offset) of every recorded window of ``processor``, in window order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(sa.text(
                "SELECT window_id, result_offset FROM windows WHERE processor = :p ORDER BY window_id"),
                {"p": processor})]
    except sa.exc.OperationalError:
        return []
    finally:
        engine.dispose()


def assert_each_window_once(url: str, processor: str, n: int, history_dir: Path) -> None:
    from dtlive.storage.history import HistoryStore

    rows = recorded(url, processor)
    assert [w for w, _ in rows] == list(range(n)), "every window recorded, none twice"
    assert sorted(o for _, o in rows) == list(range(n)), "each at the offset it was published at"
    ids = HistoryStore(history_dir).load().window_id.values.tolist()
    assert sorted(ids) == list(range(n)), "the history store has each window once"


@pytest.fixture
def feed_topics(broker):
    from dtlive.config import load_config
    from dtlive.kafka.clients import ensure_topics

    tag = uuid.uuid4().hex[:8]
    cfg = load_config({"bootstrap": broker, "monitor_topic": f"mon-{tag}", "quality_topic": f"dq-{tag}",
                       "hits_topic": f"hits-{tag}", "rejected_topic": f"rej-{tag}", "group_id": f"proc-{tag}"},
                      env={})
    ensure_topics(cfg, broker, [cfg.monitor_topic, cfg.quality_topic])
    return cfg


# ------------------------------------------------------------------------------------------- the recorder


@pytest.mark.kafka
def test_the_recorder_survives_a_10_s_outage_and_catches_up(broker, pg_db, feed_topics, tmp_path):
    from dtlive.storage.history import HistoryStore
    from dtlive.storage.recorder import Recorder

    url, server = pg_db
    cfg, n = feed_topics, 300
    feed = ResultsFeed(broker, cfg.monitor_topic, n, rate=20.0, processor=cfg.group_id).start()
    rec = Recorder(cfg, broker, ledger=Ledger(url), history=HistoryStore(tmp_path / "history"))
    exits: list[int] = []  # waiting for the database is not a stuck loop: its watchdog must not end it
    rec.watchdog = Watchdog("recorder", stall_s=60, stuck_s=8, exit=exits.append)  # < the 10 s outage
    thread = threading.Thread(target=rec.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(recorded(url, cfg.group_id)) >= 40, 60, "the first windows recorded")
        back = outage(server, 10.0)
        sent_before = feed.sent
        wait_for(lambda: feed.sent > sent_before + 50, 30, "results published while the database is away")
        assert thread.is_alive() and not server.running()
        back.join()
        feed.join()
        wait_for(lambda: len(recorded(url, cfg.group_id)) >= n, 90, "every window recorded after the outage")
    finally:
        rec.stop()
        thread.join(30)
        rec.close()
    assert not thread.is_alive() and exits == []
    assert_each_window_once(url, cfg.group_id, n, tmp_path / "history")


@pytest.mark.kafka
def test_a_stop_during_a_backlog_ends_after_one_chunk_and_the_next_recorder_records_the_rest_once(
        broker, feed_topics, tmp_path):
    """A recorder that starts far behind reads a batch of many results; a stop asked meanwhile (SIGTERM) ends it
    after the chunk in hand, not after the whole backlog, and the next recorder goes on from there."""
    from dtlive.storage.history import HistoryStore
    from dtlive.storage.recorder import RECORD_CHUNK, Recorder

    cfg, n = feed_topics, 3 * RECORD_CHUNK
    ResultsFeed(broker, cfg.monitor_topic, n, rate=2000.0, processor=cfg.group_id).start().join()
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    rec = Recorder(cfg, broker, ledger=Ledger(url), history=HistoryStore(tmp_path / "history"))
    handled: list[int] = []
    handle = rec.handle

    def handle_then_stop(records):
        handle(records)
        handled.append(len(records))
        rec.stop()

    rec.handle = handle_then_stop  # type: ignore[method-assign]
    try:
        time.sleep(2)  # the consumer fetches the backlog meanwhile: the first batch holds more than a chunk
        got = rec.poll(timeout=5)
    finally:
        rec.close()
    assert handled == [RECORD_CHUNK] and got == RECORD_CHUNK
    assert [w for w, _ in recorded(url, cfg.group_id)] == list(range(RECORD_CHUNK))
    again = Recorder(cfg, broker, ledger=Ledger(url), history=HistoryStore(tmp_path / "history"))
    again.run(until_end=True, max_seconds=60)
    again.close()
    assert_each_window_once(url, cfg.group_id, n, tmp_path / "history")


@pytest.mark.kafka
def test_kill_9_of_the_recorder_and_a_restart_record_each_window_once(broker, pg_db, feed_topics, tmp_path):
    url, _ = pg_db
    cfg, n = feed_topics, 400
    Ledger(url).close()
    env = dtlive_env(DTLIVE_DB=url, DTLIVE_HISTORY=str(tmp_path / "history"))
    cmd = [sys.executable, "-m", "dtlive", "--bootstrap", broker, "record", "--output", cfg.monitor_topic,
           "--quality-topic", cfg.quality_topic]
    feed = ResultsFeed(broker, cfg.monitor_topic, n, rate=25.0, processor=cfg.group_id).start()
    first = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(recorded(url, cfg.group_id)) >= 60 or first.poll() is not None, 90,
                 "the first windows recorded")
    finally:
        first.send_signal(signal.SIGKILL)
        _, err = first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL, err
    at_kill = len(recorded(url, cfg.group_id))
    assert at_kill < n, "killed mid-stream"
    second = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        feed.join()
        wait_for(lambda: len(recorded(url, cfg.group_id)) >= n, 90, "every window recorded after the restart")
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert_each_window_once(url, cfg.group_id, n, tmp_path / "history")


@pytest.mark.kafka
def test_sigterm_stops_a_recorder_waiting_for_the_database_within_seconds(broker, pg_db, feed_topics, tmp_path):
    url, server = pg_db
    cfg = feed_topics
    Ledger(url).close()
    cmd = [sys.executable, "-m", "dtlive", "--bootstrap", broker, "record", "--output", cfg.monitor_topic,
           "--quality-topic", cfg.quality_topic]
    # judging ahead while the database is away: what it writes waits in outboxes
    rec = subprocess.Popen(cmd, env=dtlive_env(DTLIVE_DB=url, DTLIVE_HISTORY=str(tmp_path / "history"),
                                               DTLIVE_JUDGE_DURING_OUTAGE="true"), cwd=ROOT,
                           stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(rec.stderr), daemon=True)
    reader.start()
    try:
        # four results of a lumi block (five windows) recorded, then the database goes away and the fifth comes:
        # the block is judged while the database is away, never before it went
        first = ResultsFeed(broker, cfg.monitor_topic, 4, rate=50.0, processor=cfg.group_id).start()
        first.join()
        wait_for(lambda: len(recorded(url, cfg.group_id)) == 4, 60, "the first results recorded")
        server.stop()
        server.wait_down()
        ResultsFeed(broker, cfg.monitor_topic, 1, rate=50.0, processor=cfg.group_id, first=4,
                    run_id=first.run_id).start().join()
        wait_for(lambda: any("unreachable" in line for line in lines), 30, "the recorder waiting for the database")
        wait_for(lambda: any("alarm" in line and "raised" in line for line in lines), 30, "the block judged")
        time.sleep(2)  # the loop waits for the database itself
        assert rec.poll() is None
    finally:
        rec.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rec.wait(30)
        reader.join(10)
    assert time.monotonic() - started < 10
    err = "".join(lines)
    assert rec.returncode != 0 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("dtlive record: error:") and "unreachable" in last, err

    # what judging the first block wrote while the database was away (its block, the chambers' status periods,
    # their alarms) was kept in the history's outbox folder, and the next recorder writes it once the database is back
    spooled = sorted(p.name for p in (tmp_path / "history" / "outbox").glob("*.jsonl"))
    assert spooled == ["alarm-events.jsonl", "status-changes.jsonl"], err
    server.start()
    again = subprocess.Popen(cmd, env=dtlive_env(DTLIVE_DB=url, DTLIVE_HISTORY=str(tmp_path / "history")), cwd=ROOT,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(recorded(url, cfg.group_id)) == 5, 90, "the fifth result recorded after the restart")
    finally:
        again.send_signal(signal.SIGTERM)
        _, err2 = again.communicate(timeout=30)
    assert again.returncode == 0, err2
    with Ledger(url) as led:
        blocks = led.lumi_blocks(processor=cfg.group_id)
        status = [p for p in led.periods(kind="chamber_status") if (p["detail"] or {}).get("processor") == cfg.group_id]
        raised = [e for e in led.alarm_events() if e["event"] == "raised" and e["processor"] == cfg.group_id]
    assert [(b["first_window"], b["last_window"]) for b in blocks] == [(0, 4)], blocks
    assert sorted(p["detail"]["chamber"] for p in status) == [0, 1, 2, 3] and all(p["end"] is None for p in status)
    assert sorted(e["chamber"] for e in raised) == [0, 1, 2, 3]
    assert not list((tmp_path / "history" / "outbox").glob("*.jsonl"))


# ------------------------------------------------------------------------------------------ the processor


def published_windows(bootstrap: str, topic: str) -> int:
    from contracts import read_messages

    return len(read_messages(bootstrap, topic))


@pytest.mark.kafka
def test_the_processor_keeps_publishing_while_the_database_is_away_and_its_run_is_recorded_after(
        broker, pg_db, feed_topics):
    from dataclasses import replace

    from confluent_kafka import Producer

    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate, simulated_chunks
    from dtlive.streaming.processor import Processor

    url, server = pg_db
    cfg = replace(feed_topics, window_s=1.0, lateness_s=0.2)
    ensure_topics(cfg, broker, [cfg.hits_topic])
    ledger = Ledger(url)
    stop = threading.Event()
    daq = threading.Thread(target=emulate, daemon=True, args=(Producer({"bootstrap.servers": broker}), cfg.hits_topic,
                                                              simulated_chunks(rows_per_s=2000)),
                           kwargs={"rate": 2000, "fmt": "daq64", "progress": False, "stop": stop.is_set,
                                   "max_seconds": 120})
    daq.start()
    server.stop()  # the database is away when the processor starts, and for a while after
    server.wait_down()
    started = time.monotonic()
    proc = Processor(cfg, broker, from_beginning=True, ledger=ledger)
    assert time.monotonic() - started < 30  # it did not wait for the database
    thread = threading.Thread(target=proc.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: published_windows(broker, cfg.monitor_topic) >= 3, 60, "windows published, database down")
        during = published_windows(broker, cfg.monitor_topic)
        wait_for(lambda: published_windows(broker, cfg.monitor_topic) > during + 2, 30, "more windows, database down")
        assert not server.running()
        server.start()
        run = wait_for(lambda: {r["run_id"]: r for r in ledger.runs()}.get(proc.run_id), 60,
                       "the run recorded once the database is back")
        assert run["status"] == "running" and run["config_hash"] == cfg.config_hash and run["pid"] == os.getpid()
        server.stop()  # gone again when the run ends: the processor still stops at once
        server.wait_down()
        proc.stop()
        thread.join(30)
        stopping = time.monotonic()
        closed = threading.Thread(target=proc.close, daemon=True)
        closed.start()
        time.sleep(2.0)
        server.start()
        closed.join(30)
        assert not closed.is_alive() and time.monotonic() - stopping < 15
    finally:
        stop.set()
        proc.stop()
        daq.join(30)
    run = ledger.run(proc.run_id)
    assert run["status"] == "finished" and run["stopped_at"] is not None
    assert published_windows(broker, cfg.monitor_topic) >= during + 2


@pytest.mark.kafka
def test_dtlive_process_starts_while_the_database_is_away_and_records_its_run_when_it_is_back(
        broker, pg_db, feed_topics):
    from confluent_kafka import Producer

    from dtlive.kafka.clients import ensure_topics
    from dtlive.kafka.emulator import emulate, simulated_chunks

    url, server = pg_db
    cfg = feed_topics
    ensure_topics(cfg, broker, [cfg.hits_topic])
    server.stop()
    server.wait_down()
    stop = threading.Event()
    daq = threading.Thread(target=emulate, daemon=True, args=(Producer({"bootstrap.servers": broker}), cfg.hits_topic,
                                                              simulated_chunks(rows_per_s=2000)),
                           kwargs={"rate": 2000, "fmt": "daq64", "progress": False, "stop": stop.is_set,
                                   "max_seconds": 120})
    daq.start()
    cmd = [sys.executable, "-m", "dtlive", "--bootstrap", broker, "process", "--input", cfg.hits_topic,
           "--output", cfg.monitor_topic, "--rejected", cfg.rejected_topic, "--group-id", cfg.group_id,
           "--window", "1s", "--from-beginning"]
    proc = subprocess.Popen(cmd, env=dtlive_env(DTLIVE_DB=url), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []  # its log, read as it comes: the ledger is opened in the background, at its own pace
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: published_windows(broker, cfg.monitor_topic) >= 3 or proc.poll() is not None, 90,
                 "windows published while the database is down")
        wait_for(lambda: any("unreachable" in line for line in lines) or proc.poll() is not None, 60,
                 "the processor saying that the database is unreachable")
        assert proc.poll() is None and not server.running()
        server.start()
        ledger = Ledger(url)
        run = wait_for(lambda: next((r for r in ledger.runs() if r["processor"] == cfg.group_id), None), 60,
                       "the run recorded once the database is back")
        assert run["status"] == "running" and run["pid"] == proc.pid
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(10)
        daq.join(30)
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert ledger.run(run["run_id"])["status"] == "finished"
    outage_lines = [line for line in err.splitlines() if "dtlive.storage.ledger" in line]
    assert len(outage_lines) == 2 and "unreachable" in outage_lines[0] and "reachable again" in outage_lines[1], err


# ---------------------------------------------------------------------------------------- the alert listener


@pytest.fixture
def alert_settings(broker, pg_db, tmp_path):
    """Settings of a listener (see tests/slow_analysis.py) on a fresh database and unique topics."""
    from dtlive.kafka.clients import ensure_topics

    url, server = pg_db
    tag = uuid.uuid4().hex[:8]
    topic = f"faults.notices.{tag}"  # not gcn.notices.*: other tests listen to that pattern
    config = {"bootstrap": broker, "alert_topics": topic, "analyses_topic": f"analyses-{tag}",
              "alerts_rejected_topic": f"alerts-rej-{tag}", "alerts_group_id": f"alerts-{tag}"}
    from dtlive.config import load_config

    ensure_topics(load_config(config, env={}), broker, [topic])
    Ledger(url).close()
    return {"bootstrap": broker, "ledger_url": url, "config": config, "topic": topic, "seconds": 0.5,
            "artifacts": str(tmp_path / "artifacts"), "server": server}


def send_notices(bootstrap: str, topic: str, ids: list[str]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap})
    for i in ids:
        p.produce(topic, json.dumps({"mission": "IceCube", "id": i, "record_number": 1,
                                     "trigger_time": "2024-05-01T12:00:00Z"}).encode())
    p.flush(10)


def results_by_job(bootstrap: str, topic: str) -> dict[str, int]:
    """How many results the analyses topic holds per job id (its message key)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, low)])
        counts: dict[str, int] = {}
        deadline, seen = time.monotonic() + 20, low
        while seen < high and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                if not m.error():
                    counts[m.key().decode()] = counts.get(m.key().decode(), 0) + 1
                    seen = m.offset() + 1
        return counts
    finally:
        c.close()


def job_states(url: str, alert_id: str) -> dict[str, list[str]]:
    """State history of every analysis of one alert (by job id)."""
    ledger = Ledger(url, migrate=False)
    try:
        return {t["task_id"]: [h["state"] for h in ledger.task_history(t["task_id"])]
                for t in ledger.tasks(kind="analysis") if t["task_id"].startswith(f"IceCube:{alert_id}#")}
    except sa.exc.OperationalError:
        return {}
    finally:
        ledger.close()


def alert_states(url: str, alert_id: str) -> list[str]:
    ledger = Ledger(url, migrate=False)
    try:
        return [h["state"] for h in ledger.task_history(f"alert:IceCube:{alert_id}#1")]
    finally:
        ledger.close()


def run_listener_in_thread(settings: dict, watchdog: Watchdog | None = None):
    from slow_analysis import listener

    service = listener(settings)
    if watchdog is not None:
        service.watchdog = watchdog
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    return service, thread


def published(url: str, alert_ids: list[str]) -> bool:
    states = {a: job_states(url, a) for a in alert_ids}
    return all(s and all(h[-1] == "published" for h in s.values()) for s in states.values())


@pytest.mark.kafka
def test_the_listener_survives_a_10_s_outage_and_handles_every_notice_once(alert_settings):
    url, server, b = alert_settings["ledger_url"], alert_settings["server"], alert_settings["bootstrap"]
    exits: list[int] = []  # waiting for the database is not a stuck loop: its watchdog must not end it
    service, thread = run_listener_in_thread(alert_settings,
                                             watchdog=Watchdog("alerts", stall_s=60, stuck_s=4, exit=exits.append))
    try:
        send_notices(b, alert_settings["topic"], ["1", "2"])
        wait_for(lambda: published(url, ["1", "2"]), 60, "the first analyses published")
        back = outage(server, 10.0)
        send_notices(b, alert_settings["topic"], ["3", "4", "5"])  # arrive while the database is away
        wait_for(lambda: service.counts["notices"] >= 3, 30, "a notice read while the database is away")
        assert thread.is_alive() and not server.running()
        back.join()
        wait_for(lambda: published(url, ["1", "2", "3", "4", "5"]), 90, "every analysis published after the outage")
    finally:
        service.stop()
        thread.join(30)
        service.close()
    assert exits == []
    for a in "12345":
        assert alert_states(url, a) == ["received", "matched"]
        assert list(job_states(url, a).values()) == [["queued", "running", "succeeded", "published"]]
    counts = results_by_job(b, alert_settings["config"]["analyses_topic"])
    assert len(counts) == 5 and set(counts.values()) == {1}, counts


@pytest.mark.kafka
def test_a_notice_read_again_after_a_crash_is_not_run_twice(alert_settings):
    from slow_analysis import listener

    url, b = alert_settings["ledger_url"], alert_settings["bootstrap"]
    settings = dict(alert_settings, seconds=3.0)
    first = listener(settings)
    send_notices(b, settings["topic"], ["7"])
    msg = wait_for(lambda: next((m for m in first.consumer.consume(1, 0.5) if not m.error()), None), 60,
                   "the notice read")
    first.handle(msg.value(), msg.topic(), msg.partition(), msg.offset())  # handled; dies before committing
    first.pool.close()
    first.producer.flush(5)
    first.consumer.close()
    (job,) = job_states(url, "7")
    assert job_states(url, "7")[job][-1] in ("queued", "running")

    second = listener(settings)  # resumes the unfinished analysis; reads the notice again
    thread = threading.Thread(target=second.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: second.counts["redelivered"] == 1, 60, "the notice read again")
        wait_for(lambda: published(url, ["7"]), 60, "its analysis published")
    finally:
        second.stop()
        thread.join(30)
        second.close()
    assert second.counts["resumed"] == 1 and list(second.jobs) == [job]
    assert alert_states(url, "7") == ["received", "matched"]
    history = job_states(url, "7")
    assert list(history) == [job]
    assert history[job][0] == "queued" and history[job][-4:] == ["queued", "running", "succeeded", "published"]
    assert results_by_job(b, settings["config"]["analyses_topic"]) == {job: 1}


@pytest.mark.kafka
def test_kill_9_of_the_listener_mid_analysis_and_a_restart_publish_it_once(alert_settings, tmp_path):
    url, b = alert_settings["ledger_url"], alert_settings["bootstrap"]
    settings = {k: v for k, v in alert_settings.items() if k != "server"}
    settings["seconds"] = 4.0
    path = tmp_path / "listener.json"
    path.write_text(json.dumps(settings))
    env = dtlive_env(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    cmd = [sys.executable, str(ROOT / "tests" / "slow_analysis.py"), str(path)]

    def start():
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own process group: the workers die with it
        assert proc.stdout.readline().strip() == "listening", proc.stderr.read()
        return proc

    first = start()
    try:
        send_notices(b, settings["topic"], ["8"])
        wait_for(lambda: any(h[-1] == "running" for h in job_states(url, "8").values()), 60,
                 "the analysis running")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    (job,) = job_states(url, "8")
    assert job_states(url, "8")[job][-1] == "running"
    second = start()
    try:
        wait_for(lambda: published(url, ["8"]), 60, "the analysis published after the restart")
        send_notices(b, settings["topic"], ["9"])
        wait_for(lambda: published(url, ["8", "9"]), 60, "a new notice handled")
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert job_states(url, "8")[job] == ["queued", "running", "queued", "running", "succeeded", "published"]
    assert alert_states(url, "8") == ["received", "matched"]
    counts = results_by_job(b, settings["config"]["analyses_topic"])
    assert len(counts) == 2 and set(counts.values()) == {1}, counts
