"""The ledger and alert commands as a shift person runs them (real broker, private ledger)."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Consumer, TopicPartition
from datafiles import ALERTS, SAMPLE_CSV
from pipeline_runs import produce_file

from dtlive.config import load_config
from dtlive.deploy.cli import main
from dtlive.kafka.clients import ensure_topics

pytestmark = pytest.mark.kafka


def test_runs_periods_and_provenance_commands(broker, topics, tmp_path, monkeypatch, capsys):
    from dtlive.storage.ledger import Ledger

    monkeypatch.setenv("DTLIVE_DB", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    produce_file(broker, topics["hits_topic"], SAMPLE_CSV, "csv")
    cfg = load_config({"bootstrap": broker, **topics}, env={})
    from dtlive.streaming.processor import Processor

    proc = Processor(cfg, broker, from_beginning=True, ledger=Ledger())
    proc.run(until_end=True, max_seconds=60)
    proc.close()
    assert main(["--bootstrap", broker, "record", "--output", topics["monitor_topic"], "--until-end"]) == 0
    capsys.readouterr()

    assert main(["runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == [proc.run_id] and runs[0]["status"] == "finished"

    assert main(["periods", "--flag", "1700000000", "1700000060", "--reason", "HV trip", "--who", "shifter"]) == 0
    capsys.readouterr()
    assert main(["periods", "--json"]) == 0
    periods = json.loads(capsys.readouterr().out)
    assert [(p["reason"], p["who"], p["automatic"]) for p in periods] == [("HV trip", "shifter", False)]
    assert main(["periods", "--flag", "1700000000", "1700000060"]) == 2  # a reason is required

    window = Ledger().windows()[0]["window_id"]
    assert main(["provenance", str(window)]) == 0
    prov = json.loads(capsys.readouterr().out)
    assert prov["inputs"][0]["topic"] == topics["hits_topic"] and prov["code"]["dtlive_versions"]


def test_alerts_send_command_retimes_and_routes_by_schema(broker, capsys):
    topic = "gcn.notices.km3net.alert"  # a fixed name other tests may write to as well: read only what is sent here
    ensure_topics(load_config({}, env={}), broker, [topic])
    c = Consumer({"bootstrap.servers": broker, "group.id": "t", "enable.auto.commit": False})
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert main(["--bootstrap", broker, "alerts", "send", str(ALERTS / "km3net_alert.json"),
                 "--trigger-time", "2026-11-21T12:00:00Z"]) == 0
    c.assign([TopicPartition(topic, 0, high)])
    msgs = [m for m in c.consume(10, 5) if not m.error()]
    c.close()
    assert len(msgs) == 1, [m.value()[:80] for m in msgs]
    doc = json.loads(msgs[0].value())
    assert doc["trigger_time"] == "2026-11-21T12:00:00.000Z" and doc["$schema"].endswith("km3net/alert.schema.json")
    assert main(["--bootstrap", broker, "alerts", "send", "no-such-template"]) == 1
    assert "no notice file" in capsys.readouterr().err
