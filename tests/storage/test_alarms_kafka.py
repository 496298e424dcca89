"""Alarms end to end on the real broker: simulated windows with a chamber gone dead (and flapping back) go through
the recorder's judging; exactly one alarm is raised on the alarm topic, it stays latched while the chamber
flaps, `dtlive alarms ack` acknowledges it (published and recorded), and after the chamber recovers it is
closed. With the ledger's PostgreSQL server stopped, the alarm still reaches the topic, and the ledger once the
server is back."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer
from sim_windows import sim_messages
from webhook import Hook

from dtlive.config import load_config
from dtlive.core.messages import iso_utc, to_dataset, utc_seconds
from dtlive.core.schemas import validate
from dtlive.kafka.alarms import read_alarm_events
from dtlive.kafka.clients import ensure_topics
from dtlive.storage.history import HistoryStore
from dtlive.storage.ledger import Ledger
from dtlive.storage.recorder import Recorder
from dtlive.storage.references import reference_dir, save

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BLOCK, DEAD = 5, 1
N_REF = 10


def settings(broker: str, processor: str) -> dict:
    tag = uuid.uuid4().hex[:8]
    return {"bootstrap": broker, "monitor_topic": f"mon-{tag}", "quality_topic": f"dq-{tag}",
            "alarm_topic": f"alarms-{tag}", "group_id": processor, "judge_windows": BLOCK, "judge_during_outage": True,
            "reference": "clean",
            "status_interval_s": 0}


def produce(broker: str, topic: str, msgs: list[dict]) -> None:
    p = Producer({"bootstrap.servers": broker})
    for m in msgs:
        p.produce(topic, json.dumps(m).encode())
    assert p.flush(10) == 0


def record(cfg, broker, ledger, history) -> Recorder:
    rec = Recorder(cfg, broker, ledger=ledger, history=history).run(until_end=True, max_seconds=60)
    rec.close()
    return rec


@pytest.fixture
def history(tmp_path):
    store = HistoryStore(tmp_path / "history")
    save("clean", to_dataset(sim_messages(N_REF), stack=True), reference_dir(store.path))
    return store


@pytest.fixture
def hook(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    h = Hook()
    yield h
    h.close()


def test_a_dead_chamber_raises_one_latched_alarm_that_closes_after_ack_and_recovery(broker, history, tmp_path,
                                                                                       monkeypatch, capsys, hook):
    from dtlive.deploy.cli import main

    processor = f"proc-{uuid.uuid4().hex[:6]}"
    cfg = load_config({**settings(broker, processor), "alarm_notify": [f"json://127.0.0.1:{hook.port}/dq"]},
                      env={})
    ensure_topics(cfg, broker, [cfg.monitor_topic])
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger = Ledger(db)
    # blocks of 5 windows: ok, dead, dead, ok (flap), dead, then ok again after the acknowledgement
    dead = {1, 2, 4}
    n = N_REF + 6 * BLOCK
    runs = {False: sim_messages(n, processor=processor), True: sim_messages(n, processor=processor,
                                                                            silent_chamber=DEAD)}
    sim = [m for b in range(6) for m in runs[b in dead][N_REF + b * BLOCK:N_REF + (b + 1) * BLOCK]]
    produce(broker, cfg.monitor_topic, sim[:5 * BLOCK])
    record(cfg, broker, ledger, history)

    events = read_alarm_events(cfg, broker)
    for e in events:
        validate(e)
    assert [e["event"] for e in events] == ["raised", "cleared", "repeated"]
    assert {e["alarm_id"] for e in events} == {events[0]["alarm_id"]}
    raised = events[0]
    assert (raised["chamber"], raised["severity"], raised["status"], raised["processor"]) == (DEAD, "error", 4,
                                                                                               processor)
    assert raised["time"] == iso_utc(utc_seconds(sim[BLOCK]["window"]["start"]))  # the dead block's first window
    (alarm,) = ledger.alarms()
    assert alarm["state"] == "active" and alarm["repeats"] == 1  # latched through the flap, one repeat
    told = [p["title"] for p in hook.wait(2)]  # people are told of the alarm and its first clear, not the repeat
    assert told == [f"dtlive ERROR: chamber {DEAD} alarm raised", f"dtlive ERROR: chamber {DEAD} alarm cleared"]
    assert [e["event_id"] for e in ledger.alarm_events()] == [e["event_id"] for e in events]

    monkeypatch.setenv("DTLIVE_DB", db)
    monkeypatch.setenv("DTLIVE_BOOTSTRAP", broker)
    monkeypatch.setenv("DTLIVE_ALARM_TOPIC", cfg.alarm_topic)
    assert main(["alarms", "list"]) == 0
    out = capsys.readouterr()
    assert alarm["id"] in out.out and "ACTIVE" in out.out and "1 of 1 alarms waiting" in out.err
    assert main(["alarms", "ack", alarm["id"][:5], "--by", "tester", "--reason", "HV channel tripped"]) == 0
    assert "acknowledged by tester: now acknowledged" in capsys.readouterr().err
    assert main(["alarms", "ack", alarm["id"], "--by", "tester"]) == 1  # nothing left to acknowledge
    ack = read_alarm_events(cfg, broker)[-1]
    assert (ack["event"], ack["by"], ack["note"], ack["alarm_id"]) == ("acknowledged", "tester",
                                                                       "HV channel tripped", alarm["id"])

    produce(broker, cfg.monitor_topic, sim[5 * BLOCK:])  # the chamber recovers
    rec = record(cfg, broker, ledger, history)
    assert rec.alarms.raised == 0
    events = read_alarm_events(cfg, broker)
    assert [e["event"] for e in events] == ["raised", "cleared", "repeated", "acknowledged", "cleared"]
    assert events[-1]["state"] == "closed" and events[-1]["notify"]
    (closed,) = ledger.alarms()
    assert (closed["state"], closed["acked_by"], closed["note"]) == ("closed", "tester", "HV channel tripped")
    assert [e["event"] for e in ledger.alarm_events(alarm["id"])] == [e["event"] for e in events]
    assert main(["alarms", "list"]) == 0
    assert "(none)" in capsys.readouterr().out
    assert [p["title"] for p in hook.wait(3)][2:] == [f"dtlive ERROR: chamber {DEAD} alarm cleared"]


def wait_events(cfg, broker, n: int, timeout: float = 60.0) -> list[dict]:
    deadline, events = time.monotonic() + timeout, []
    while len(events) < n and time.monotonic() < deadline:
        events = read_alarm_events(cfg, broker, timeout_s=2)
        time.sleep(0.5)
    return events


def test_alarms_reach_the_topic_while_the_database_is_away(broker, pg_db, history):
    from dtlive.storage.judging import STATUS_KIND

    url, server = pg_db
    processor = f"proc-{uuid.uuid4().hex[:6]}"
    cfg = load_config(settings(broker, processor), env={})
    ensure_topics(cfg, broker, [cfg.monitor_topic])
    n = N_REF + 2 * BLOCK
    dead, clean = sim_messages(n, processor=processor, silent_chamber=DEAD), sim_messages(n, processor=processor)
    rec = Recorder(cfg, broker, ledger=Ledger(url), history=history)
    thread = threading.Thread(target=rec.run, daemon=True)
    thread.start()
    try:
        server.stop()
        server.wait_down()
        produce(broker, cfg.monitor_topic, dead[N_REF:N_REF + BLOCK])  # the recorder then waits for the database
        events = wait_events(cfg, broker, 1)
        assert [(e["event"], e["chamber"]) for e in events] == [("raised", DEAD)]
        produce(broker, cfg.monitor_topic, clean[N_REF + BLOCK:])  # judged ahead while it still waits
        events = wait_events(cfg, broker, 2)
        assert [(e["event"], e["chamber"], e["state"]) for e in events] == [("raised", DEAD, "active"),
                                                                           ("cleared", DEAD, "cleared")]
        assert not server.running() and thread.is_alive()  # the database is still away
        server.start()
        ledger = Ledger(url)
        deadline, recorded = time.monotonic() + 90, []
        while len(recorded) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            recorded = ledger.alarm_events()
        assert [e["event_id"] for e in recorded] == [e["event_id"] for e in events]
        deadline = time.monotonic() + 60
        while len(ledger.windows()) < 2 * BLOCK and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(ledger.windows()) == 2 * BLOCK  # every result recorded once the database is back
        periods = [p for p in ledger.periods(kind=STATUS_KIND) if p["detail"]["chamber"] == DEAD]
        assert [p["detail"]["status"] for p in periods] == [4, 0] and periods[0]["end"] == periods[1]["start"]
        ledger.close()
    finally:
        if not server.running():
            server.start()
        rec.stop()
        thread.join(30)
        rec.close()
    assert not thread.is_alive()
    assert len(read_alarm_events(cfg, broker)) == 2  # nothing published twice
