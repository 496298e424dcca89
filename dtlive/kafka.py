"""Kafka client settings and topic set-up shared by every dtlive service.

The bootstrap comes from ``--bootstrap`` / ``DTLIVE_BOOTSTRAP`` (any real Kafka) or,
when neither is given, from the embedded broker that ``dtlive broker`` recorded.
Extra librdkafka settings pass through from ``KAFKA_*`` variables (see :mod:`dtlive.config`).

>>> from dtlive.config import load_config
>>> cfg = load_config({}, env={"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
>>> client_config(cfg, "127.0.0.1:9092", **{"group.id": "g"})["security.protocol"]
'SASL_SSL'
"""

from __future__ import annotations

import time

from dtlive.config import Config

# Tuning defaults of processing consumers; KAFKA_* settings override them.
_CONSUMER_DEFAULTS = {
    "session.timeout.ms": 6000,  # Tansu: a group join waits about half of it, so keep it short
    # The embedded Tansu broker holds every fetch for fetch.wait.max.ms, data or not, and each fetch that returns
    # data lists every batch stored in the partition (~1-3 us each): at 50 ms a live processor made 20 such fetches
    # a second. 200 ms makes 5 (results up to 0.2 s later on Tansu; a real Kafka answers as soon as data is there).
    "fetch.wait.max.ms": 200,
    # librdkafka postpones the next fetch by fetch.queue.backoff.ms (default 1000) whenever its local queue
    # holds queued.min.messages (default 100k). At 100k one-row messages/s one stall of a second makes a fetch
    # of >100k messages, the 1 s pause then makes the next one as big, and every result stays ~1 s late
    # (measured: lag 0.8-1.8 s instead of 0.02-0.1 s). A short backoff breaks that cycle.
    "fetch.queue.backoff.ms": 20,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
}
# Producers of the input (``dtlive emulate``): the broker pays per produce request and the embedded Tansu broker
# keeps every request's batch as one object that each later fetch of the partition lists, so a fetch costs time in
# proportion to the batches stored. Messages paced 10 ms apart with linger.ms=5 go one batch each; 50 ms makes
# ~5x fewer batches (and produce requests) for at most 50 ms more delay. KAFKA_LINGER_MS overrides it.
_PRODUCER_DEFAULTS = {"linger.ms": 50}
# What exactly-once processing relies on: not overridable.
_CONSUMER_FIXED = {"enable.auto.commit": False, "isolation.level": "read_committed"}


class NoBrokerError(RuntimeError):
    """Neither a bootstrap was given nor an embedded broker is running."""


def resolve_bootstrap(cfg: Config, start_embedded: bool = False):
    """The bootstrap to use and, if one was started here, the :class:`EmbeddedBroker` owned by the caller."""
    if cfg.bootstrap:
        return cfg.bootstrap, None
    from dtlive.broker import ensure_broker, find_running

    if start_embedded:
        return ensure_broker()
    found = find_running()
    if found is None:
        raise NoBrokerError(
            "no Kafka broker: start the embedded one with `dtlive broker` (or `dtlive demo`), "
            "or point at a real Kafka with --bootstrap HOST:PORT / DTLIVE_BOOTSTRAP")
    return found, None


def client_config(cfg: Config, bootstrap: str, **extra) -> dict:
    """librdkafka settings: the bootstrap, the KAFKA_* pass-through, then ``extra``."""
    return {"bootstrap.servers": bootstrap, **cfg.kafka, **extra}


def producer_config(cfg: Config, bootstrap: str, **fixed) -> dict:
    """Settings of an input producer: ``_PRODUCER_DEFAULTS``, then the user's KAFKA_* settings, then ``fixed``.

    >>> from dtlive.config import load_config
    >>> producer_config(load_config({}, env={}), "127.0.0.1:9092")["linger.ms"]
    50
    >>> producer_config(load_config({}, env={"KAFKA_LINGER_MS": "5"}), "127.0.0.1:9092")["linger.ms"]
    '5'
    """
    return {"bootstrap.servers": bootstrap, **_PRODUCER_DEFAULTS, **cfg.kafka, **fixed}


def consumer_config(cfg: Config, bootstrap: str, group_id: str, from_beginning: bool = False) -> dict:
    """Settings of a processing consumer (manual commits, read_committed, short session).

    Tuning defaults (``_CONSUMER_DEFAULTS``) give way to the user's KAFKA_* settings; the commit mode and
    isolation level that exactly-once processing relies on do not.

    >>> from dtlive.config import load_config
    >>> cfg = load_config({}, env={"KAFKA_FETCH_WAIT_MAX_MS": "100", "KAFKA_ISOLATION_LEVEL": "read_uncommitted"})
    >>> conf = consumer_config(cfg, "127.0.0.1:9092", group_id="g")
    >>> conf["fetch.wait.max.ms"], conf["isolation.level"], conf["fetch.queue.backoff.ms"]
    ('100', 'read_committed', 20)
    """
    return {"bootstrap.servers": bootstrap, **_CONSUMER_DEFAULTS, **cfg.kafka, **_CONSUMER_FIXED,
            "group.id": group_id, "auto.offset.reset": "earliest" if from_beginning else "latest"}


def ensure_topics(cfg: Config, bootstrap: str, topics, partitions: int = 1) -> None:
    """Create missing topics (names or a name -> partitions mapping)."""
    from dtlive.broker import create_topics

    spec = dict(topics) if isinstance(topics, dict) else {t: partitions for t in topics}
    create_topics(bootstrap, spec, config=cfg.kafka)


def partition_ends(cfg: Config, bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` offsets of a topic ({} if it does not exist).

    Asked with read_uncommitted on purpose: a read_committed query returns the last
    stable offset, which some brokers (Tansu) hold back while any transaction is open.
    """
    from confluent_kafka import Consumer

    c = Consumer(client_config(cfg, bootstrap, **{"group.id": "dtlive-offsets", "isolation.level": "read_uncommitted",
                                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10}))
    try:
        return end_offsets(c, topic, timeout)
    finally:
        c.close()


def end_offsets(consumer, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` of a topic as seen by ``consumer`` (which this re-assigns).

    The high offset is confirmed by one fetch at the listed end, because a broker's
    ListOffsets answer can lag its log (Tansu omits the last multi-record batch until
    the next write); the fetch response carries the true high watermark.
    """
    from confluent_kafka import TopicPartition

    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        return {}
    listed = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in sorted(meta.partitions)
    }
    consumer.assign([TopicPartition(topic, p, high) for p, (_, high) in listed.items()])
    fetched: dict[int, int] = {}
    deadline = time.monotonic() + min(timeout, 2.0)
    while len(fetched) < len(listed) and time.monotonic() < deadline:
        consumer.consume(1, 0.05)
        for p in listed:
            high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1]
            if high >= 0:
                fetched[p] = high
    return {p: (low, max(high, fetched.get(p, high))) for p, (low, high) in listed.items()}
