"""Alarm events on the alarm topic: publishing them (key = alarm id, so an alarm's events stay in order) and
reading them back, checked against the ``dtlive.alarm/1`` contract.

>>> parse_alarm(b'{"schema": "dtlive.quality/2"}')
Traceback (most recent call last):
...
ValueError: not a dtlive.alarm/1 message
"""

from __future__ import annotations

import json
import logging

from dtlive.config import Config
from dtlive.core.messages import ALARM_SCHEMA

log = logging.getLogger(__name__)


def parse_alarm(value: bytes) -> dict:
    """A ``dtlive.alarm/1`` event as a dict, checked against its schema (ValueError for anything else).

    >>> from dtlive.core.alarms import on_status
    >>> _, (raised,) = on_status({}, {"processor": "p", "chamber": 0, "status": 4, "start": "2026-12-05T10:00:00Z"})
    >>> parse_alarm(json.dumps(raised).encode())["event"]
    'raised'
    """
    from dtlive.core.schemas import validate

    msg = json.loads(value)
    if not isinstance(msg, dict) or msg.get("schema") != ALARM_SCHEMA:
        raise ValueError(f"not a {ALARM_SCHEMA} message")
    validate(msg)  # returns it unchanged
    return msg


class AlarmPublisher:
    """Publish alarm events on ``cfg.alarm_topic`` (created when missing) and wait for the broker's answer.

    >>> from dtlive.config import load_config
    >>> pub = AlarmPublisher(load_config({}, env={}), "127.0.0.1:9092")  # doctest: +SKIP
    >>> pub.publish([ack_message])                                        # doctest: +SKIP
    1
    """

    def __init__(self, cfg: Config, bootstrap: str, producer=None):
        from confluent_kafka import Producer

        from dtlive.kafka.clients import ensure_topics, producer_config

        self.topic = cfg.alarm_topic
        ensure_topics(cfg, bootstrap, [self.topic])
        self.producer = producer if producer is not None else Producer(producer_config(cfg, bootstrap, **{
            "linger.ms": 5}))
        self.published = 0
        self.failed = 0

    def publish(self, events: list[dict], timeout_s: float = 10.0) -> int:
        """Send ``events`` in order; return how many the broker confirmed within ``timeout_s``."""
        from dtlive.core.schemas import validate

        done: list[bool] = []

        def report(err, _msg):
            done.append(err is None)
            if err is not None:
                log.warning("alarm event not delivered to %s: %s", self.topic, err)

        for e in events:
            self.producer.produce(self.topic, json.dumps(validate(e)).encode(), key=str(e["alarm_id"]).encode(),
                                  on_delivery=report)
        if events:
            self.producer.flush(timeout_s)
        ok = sum(done)
        self.published += ok
        self.failed += len(events) - ok
        return ok


def read_alarm_events(cfg: Config, bootstrap: str, timeout_s: float = 10.0) -> list[dict]:
    """Every ``dtlive.alarm/1`` event on ``cfg.alarm_topic`` in offset order per partition (others skipped).

    >>> from dtlive.config import load_config
    >>> read_alarm_events(load_config({}, env={}), "127.0.0.1:9092")  # doctest: +SKIP
    [{'schema': 'dtlive.alarm/1', 'event': 'raised', ...}]
    """
    import time

    from confluent_kafka import Consumer, TopicPartition

    from dtlive.kafka.clients import client_config, end_offsets

    c = Consumer(client_config(cfg, bootstrap, **{"group.id": "dtlive-alarms-read", "enable.auto.commit": False}))
    out: list[dict] = []
    try:
        ends = end_offsets(c, cfg.alarm_topic, timeout=timeout_s)
        c.assign([TopicPartition(cfg.alarm_topic, p, low) for p, (low, _) in ends.items()])
        left = {p: high for p, (low, high) in ends.items() if high > low}
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                part, offset = m.partition() or 0, m.offset() or 0  # both set on every message consumed
                if offset + 1 >= left.get(part, 0):
                    left.pop(part, None)
                try:
                    out.append(parse_alarm(m.value() or b""))
                except ValueError as exc:
                    log.warning("skipping a record of %s that is no alarm event: %s", cfg.alarm_topic, exc)
    finally:
        c.close()
    return out
