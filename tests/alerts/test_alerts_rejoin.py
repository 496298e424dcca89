"""On the real broker: an alert listener that loses its group membership says so, rejoins and handles what
comes next (the notice it handled before is not handled again)."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Producer

from dtlive.alerts.listener import AlertListener
from dtlive.alerts.rules import load_rules
from dtlive.alerts.send import load_notice, send_notice
from dtlive.config import load_config
from dtlive.kafka.clients import ensure_topics
from dtlive.storage.ledger import Ledger

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# notices are parsed, decided on and recorded; no rule matches, so no analysis runs
NO_ANALYSES = load_rules('[[rule]]\nname = "elsewhere"\ntopics = ["elsewhere.*"]\nanalyses = ["snapshot"]')


def poll_until(listener: AlertListener, condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listener.poll(0.2)
        if condition():
            return True
    return False


def test_listener_rejoins_after_losing_its_membership(broker, tmp_path, caplog):
    tag = tmp_path.name[-8:].replace("_", "")
    topic = f"rejoin{tag}.notices.superk"
    # a listener that stops polling for longer than max.poll.interval.ms is put out of its group by its client,
    # as one that the broker stops hearing from is by the broker: both end in a lost assignment
    cfg = load_config({"bootstrap": broker, "alert_topics": f"rejoin{tag}.notices.*",
                       "alerts_group_id": f"alerts-rejoin-{tag}", "analyses_topic": f"analyses-rejoin-{tag}",
                       "alerts_rejected_topic": f"alerts-rej-rejoin-{tag}"},
                      env={"KAFKA_MAX_POLL_INTERVAL_MS": "7000"})
    ensure_topics(cfg, broker, [topic])
    listener = AlertListener(cfg, broker, ledger=Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}"), rules=NO_ANALYSES,
                             workers=1, artifacts_dir=tmp_path / "artifacts")
    producer = Producer({"bootstrap.servers": broker})
    try:
        assert poll_until(listener, lambda: bool(listener.consumer.assignment()), 30), "never assigned"
        send_notice(producer, load_notice("superk-sn"), topic)
        producer.flush(10)
        assert poll_until(listener, lambda: listener.counts["notices"] == 1, 30)

        time.sleep(9.0)  # the fault: no poll for longer than max.poll.interval.ms
        caplog.set_level(logging.WARNING, logger="dtlive.alerts.listener")
        send_notice(producer, load_notice("superk-sn"), topic)
        producer.flush(10)
        assert poll_until(listener, lambda: listener.counts["notices"] >= 2, 45), "not handled after rejoining"
        poll_until(listener, lambda: False, 2.0)  # a re-read of the first notice would show up here
    finally:
        listener.close()
    assert listener.counts["notices"] == 2  # the committed notice is not handled again
    assert listener.counts["assignment_lost"] >= 1
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "lost its" in said and "rejoining" in said
