"""The newest raw hits of the hits topic, for the dashboard's muon event display (a look, not a consumer).

>>> hits = read_latest_hits("127.0.0.1:9092", "dt.hits")  # doctest: +SKIP
"""

from __future__ import annotations

import time

from dtlive.config import Config


def read_latest_hits(bootstrap: str, topic: str, rows: int = 20_000, kafka: dict | None = None,
                     default_format: str = Config.default_format, timeout: float = 5.0):
    """About the newest ``rows`` rows of ``topic`` (every partition), decoded, as cleaned hits (HEAD 2).

    For the dashboard's event panel: a look at the newest raw data, not a consumer of the stream (no group
    offsets are committed). The newest message of each partition says how many rows a message holds, then
    enough of the newest messages are read for ``rows`` (one-row csv or 10,000-word daq64 messages alike).
    Messages are decoded by their format header (``default_format`` without one); rows that do not decode are
    left out.

    >>> hits = read_latest_hits("127.0.0.1:9092", "dt.hits")  # doctest: +SKIP
    """
    from confluent_kafka import Consumer, TopicPartition

    from dtlive.core.rows import Rows, clean
    from dtlive.kafka.clients import LIBRDKAFKA_LOG

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "dtlive-dashboard-events", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "fetch.wait.max.ms": 100, "logger": LIBRDKAFKA_LOG,
                  **(kafka or {})})
    try:
        meta = c.list_topics(topic, timeout=timeout).topics.get(topic)
        marks = {}
        for p in (meta.partitions if meta is not None else {}):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                marks[p] = (low, high)
        if not marks:
            return Rows.empty()
        newest = _decoded(_read(c, topic, {p: (high - 1, high) for p, (_, high) in marks.items()}, timeout),
                          topic, default_format)
        per_message = max(len(newest) / len(marks), 1.0)
        count = max(1, int(rows / per_message / len(marks)) + 1)
        got = _read(c, topic, {p: (max(low, high - count), high) for p, (low, high) in marks.items()}, timeout)
    finally:
        c.close()
    return clean(_decoded(got, topic, default_format))[0]


def _read(consumer, topic: str, ranges: dict[int, tuple[int, int]], timeout: float) -> list:
    """The messages of ``[start, end)`` per partition (bounded by ``timeout``)."""
    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in ranges.items()])
    ends = {p: end for p, (_, end) in ranges.items()}
    got, deadline = [], time.monotonic() + timeout
    while ends and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.2):
            if m.error() is None and m.partition() in ends:
                got.append(m)
                if m.offset() + 1 >= ends[m.partition()]:
                    ends.pop(m.partition())
    return got


def _decoded(messages: list, topic: str, default_format: str):
    """The rows of Kafka messages, decoded by their format header."""
    from dtlive.core.decode import decode
    from dtlive.core.rows import Rows
    from dtlive.streaming.nodes import Batch

    if not messages:
        return Rows.empty()
    batch = Batch.from_messages(messages, topic)
    formats = [f or default_format for f in batch.formats]
    return Rows.concat([decode([batch.payloads[i] for i, f in enumerate(formats) if f == fmt], fmt).rows
                        for fmt in dict.fromkeys(formats)])
