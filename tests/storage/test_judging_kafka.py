"""The recorder judges live on the real broker: windows of a simulated detector are recorded, a reference is
saved from the history store (as ``dtlive reference save`` does), then a chamber goes silent; the recorder
publishes dtlive.quality/2 verdicts on the quality topic next to its dtlive.quality/1 periods, the silent
chamber's status is bad, and the change is kept in the ledger."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from sim_windows import sim_messages

from dtlive.config import load_config
from dtlive.core.messages import QUALITY_SCHEMA, QUALITY_TESTS_SCHEMA
from dtlive.kafka.clients import end_offsets, ensure_topics
from dtlive.storage.history import HistoryStore
from dtlive.storage.judging import STATUS_KIND
from dtlive.storage.ledger import Ledger
from dtlive.storage.recorder import Recorder
from dtlive.storage.references import save_from_history

pytestmark = [pytest.mark.kafka]

N_REF, N_CLEAN, N_SILENT, BLOCK, SILENT = 10, 5, 5, 5, 1


def produce(broker: str, topic: str, msgs: list[dict]) -> None:
    p = Producer({"bootstrap.servers": broker})
    for m in msgs:
        p.produce(topic, json.dumps(m).encode())
    assert p.flush(10) == 0


def quality_messages(broker: str, topic: str) -> list[dict]:
    c = Consumer({"bootstrap.servers": broker, "group.id": f"t-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    ends = end_offsets(c, topic)
    c.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
    want, out = sum(high - low for low, high in ends.values()), []
    for _ in range(20):
        out += [json.loads(m.value()) for m in c.consume(1000, 1.0) if not m.error()]
        if len(out) >= want:
            break
    c.close()
    return out


def test_the_recorder_publishes_a_bad_verdict_for_a_chamber_gone_silent(broker, topics, tmp_path):
    cfg = load_config({"bootstrap": broker, **topics, "quality_topic": f"dq-{topics['group_id']}",
                       "judge_windows": BLOCK, "reference": "clean"}, env={})
    ensure_topics(cfg, broker, [cfg.monitor_topic])
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    history = HistoryStore(tmp_path / "history")
    sim = sim_messages(N_REF + N_CLEAN + N_SILENT, silent_chamber=SILENT, silent_from=N_REF + N_CLEAN,
                       processor=cfg.group_id)

    produce(broker, cfg.monitor_topic, sim[:N_REF])
    rec = Recorder(cfg, broker, ledger=ledger, history=history).run(until_end=True, max_seconds=60)
    rec.close()
    first = [m for m in quality_messages(broker, cfg.quality_topic) if m["schema"] == QUALITY_TESTS_SCHEMA]
    assert len(first) == N_REF // BLOCK and all(v["reference"]["label"] is None for v in first)  # none saved yet

    _, n = save_from_history("clean", sim[0]["window"]["start"], sim[N_REF]["window"]["start"], history=history,
                             keep_bad=True)
    assert n == N_REF
    produce(broker, cfg.monitor_topic, sim[N_REF:])
    rec = Recorder(cfg, broker, ledger=ledger, history=history).run(until_end=True, max_seconds=60)
    rec.close()
    msgs = quality_messages(broker, cfg.quality_topic)
    verdicts = [m for m in msgs if m["schema"] == QUALITY_TESTS_SCHEMA]
    assert [v["windows"]["ids"] for v in verdicts] == [[0, 4], [5, 9], [10, 14], [15, 19]]
    clean, silent = verdicts[2:]
    assert clean["reference"]["label"] == "clean" and clean["processor"] == cfg.group_id
    assert {k: c["status"] for k, c in clean["chambers"].items()} == {f"chamber_{c}": 0 for c in range(4)}
    bad = silent["chambers"][f"chamber_{SILENT}"]
    assert bad["status"] == 4 and bad["label"] == "bad" and bad["working_fraction"] == 0.0
    assert silent["status"] == 4 and all(c["status"] == 0 for k, c in silent["chambers"].items()
                                         if k != f"chamber_{SILENT}")
    assert all(m["schema"] in (QUALITY_SCHEMA, QUALITY_TESTS_SCHEMA) for m in msgs)
    assert rec.judging.verdicts == 2 and rec.judging.lumi.waiting() == {}
    changes = [p for p in ledger.periods(kind=STATUS_KIND) if p["detail"]["chamber"] == SILENT]
    assert changes[-1]["detail"]["status"] == 4 and changes[-1]["end"] is None
    assert changes[-1]["detail"]["reference"] == "clean"
