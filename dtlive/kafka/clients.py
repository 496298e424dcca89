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

import logging
import re
import threading
import time

from dtlive.config import Config

log = logging.getLogger(__name__)

#: librdkafka's own log lines go to this logger (delivered by the client's poll(), consume() and flush()),
#: each distinct line at most once per :data:`LOG_EVERY_S` seconds: a dead broker gives one clear line.
LIBRDKAFKA_LOG = logging.getLogger("dtlive.librdkafka")
LOG_EVERY_S = 30.0


class RateLimit(logging.Filter):
    """Lets a given log line through at most once per ``every_s`` seconds and says how many were held back.

    Lines count as the same when they differ only in the client instance (``rdkafka#consumer-3``) and in
    durations (``after 12ms``), so the same failure seen by several clients of a process is one line.

    >>> f = RateLimit(every_s=30, clock=iter([0.0, 1.0, 2.0, 31.0]).__next__)
    >>> rec = lambda: logging.LogRecord("k", logging.ERROR, "", 0, "%s [%s] %s",
    ...                                 ("FAIL", "rdkafka#consumer-1", "Connect failed (after 0ms)"), None)
    >>> [f.filter(rec()) for _ in range(3)]
    [True, False, False]
    >>> r = rec(); f.filter(r), r.getMessage()
    (True, 'FAIL [rdkafka#consumer-1] Connect failed (after 0ms) (2 more like it in the last 31 s)')
    """

    _VARIABLE = re.compile(r"rdkafka#[a-z]+-\d+|\b\d+ ?ms\b|\b\d+ (?:messages?|bytes?)\b")

    def __init__(self, every_s: float = LOG_EVERY_S, clock=time.monotonic, keep: int = 1000):
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self.keep = keep
        self.suppressed = 0  # lines held back so far (all keys)
        self._seen: dict[tuple, list] = {}  # key -> [time let through, held back since]
        self._lock = threading.Lock()

    def key(self, record: logging.LogRecord) -> tuple:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001
            text = str(record.msg)
        return record.levelno, self._VARIABLE.sub("#", text)

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = self.key(record), self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.every_s:
                seen[1] += 1
                self.suppressed += 1
                return False
            held = seen[1] if seen is not None else 0
            if len(self._seen) >= self.keep:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.every_s}
            self._seen[key] = [now, 0]
        if held and seen is not None:
            record.msg = f"{record.getMessage()} ({held} more like it in the last {now - seen[0]:.0f} s)"
            record.args = ()
        return True


LIBRDKAFKA_LOG.addFilter(RateLimit())

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
    # A request a stalled broker never answers holds back every later one on its connection (a metadata or
    # offsets question too) until it times out: 10 s instead of librdkafka's 60 s (fetches wait 50 ms).
    "socket.timeout.ms": 10000,
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
    """Neither a bootstrap was given nor an embedded broker is running.

    >>> from dtlive.config import load_config
    >>> try:  # doctest: +SKIP
    ...     resolve_bootstrap(load_config({}, env={}))
    ... except NoBrokerError as e:
    ...     print(str(e).split(":")[0])
    no Kafka broker
    """


def resolve_bootstrap(cfg: Config, start_embedded: bool = False):
    """The bootstrap to use and, if one was started here, the :class:`EmbeddedBroker` owned by the caller.

    >>> from dtlive.config import load_config
    >>> resolve_bootstrap(load_config({"bootstrap": "kafka.example.org:9092"}, env={}))
    ('kafka.example.org:9092', None)
    >>> bootstrap, owned = resolve_bootstrap(load_config({}, env={}), start_embedded=True)  # doctest: +SKIP
    """
    if cfg.bootstrap:
        return cfg.bootstrap, None
    from dtlive.kafka.broker import ensure_broker, find_running

    if start_embedded:
        return ensure_broker()
    found = find_running()
    if found is None:
        raise NoBrokerError(
            "no Kafka broker: start the embedded one with `dtlive broker` (or `dtlive demo`), "
            "or point at a real Kafka with --bootstrap HOST:PORT / DTLIVE_BOOTSTRAP")
    return found, None


def client_config(cfg: Config, bootstrap: str, **extra) -> dict:
    """librdkafka settings: the bootstrap, the KAFKA_* pass-through, then ``extra``.

    librdkafka's log lines go through Python logging (:data:`LIBRDKAFKA_LOG`, rate-limited).

    >>> from dtlive.config import load_config
    >>> conf = client_config(load_config({}, env={"KAFKA_CLIENT_ID": "me"}), "127.0.0.1:9092", **{"group.id": "g"})
    >>> conf["bootstrap.servers"], conf["client.id"], conf["group.id"], conf["logger"] is LIBRDKAFKA_LOG
    ('127.0.0.1:9092', 'me', 'g', True)
    """
    return {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG, **cfg.kafka, **extra}


class ClusterWatch:
    """Tells when the broker behind a client was replaced by one that does not hold the old data.

    A restarted embedded broker starts empty, under a new cluster id: offsets a service remembers mean
    nothing there and its topics must be created again. ``client``: any confluent-kafka client (asked for
    metadata, at most once per ``every_s`` seconds; a broker that does not answer within a second is
    "unknown", not "replaced").

    >>> class Client:
    ...     cluster = "a"
    ...     def list_topics(self, topic=None, timeout=None):
    ...         return type("Metadata", (), {"cluster_id": self.cluster})()
    >>> client = Client()
    >>> watch = ClusterWatch(client, every_s=0)
    >>> watch.replaced()
    False
    >>> client.cluster = "b"
    >>> watch.replaced(), watch.replaced(), watch.cluster_id
    (True, False, 'b')
    """

    @classmethod
    def of(cls, cfg: Config, bootstrap: str, every_s: float = 2.0) -> ClusterWatch:
        """A watch with a client of its own: a consumer's questions wait behind its fetches on a stalled broker."""
        from confluent_kafka.admin import AdminClient

        # an admin client's metadata question about one topic makes some brokers (Tansu) create it: ask about none
        return cls(AdminClient(client_config(cfg, bootstrap)), None, every_s)

    def __init__(self, client, topic: str | None = None, every_s: float = 2.0, timeout: float = 10.0):
        self.client = client
        self.topic = topic
        self.every_s = every_s
        self.cluster_id = self._ask(timeout)
        self.answered = self.cluster_id is not None  # whether the broker answered the last question
        self._asked = time.monotonic()

    def _ask(self, timeout: float) -> str | None:
        from confluent_kafka import KafkaException

        try:
            return self.client.list_topics(self.topic, timeout=timeout).cluster_id
        except KafkaException:
            return None

    def replaced(self, now: float | None = None, force: bool = False) -> bool:
        """True (once) when the broker now answers under another cluster id than before."""
        now = time.monotonic() if now is None else now
        if not force and now - self._asked < self.every_s:
            return False
        self._asked = now
        found = self._ask(1.0)
        self.answered = found is not None
        if found is None:
            return False
        old, self.cluster_id = self.cluster_id, found
        if old is not None and found != old:
            log.warning("the broker was replaced (cluster id %s, was %s): it does not hold the old topics", found, old)
            return True
        return False


def producer_config(cfg: Config, bootstrap: str, **fixed) -> dict:
    """Settings of a dtlive producer: ``_PRODUCER_DEFAULTS``, then the user's KAFKA_* settings, then ``fixed``.

    A produce never creates a topic: a broker that auto-creates a missing one gives it its own default partition
    count; after a broker lost its topics (an embedded broker keeps them in memory) dtlive creates them again
    with :func:`ensure_topics`.

    >>> from dtlive.config import load_config
    >>> conf = producer_config(load_config({}, env={}), "127.0.0.1:9092")
    >>> conf["linger.ms"], conf["allow.auto.create.topics"]
    (50, False)
    >>> producer_config(load_config({}, env={"KAFKA_LINGER_MS": "5"}), "127.0.0.1:9092")["linger.ms"]
    '5'
    """
    return {**client_config(cfg, bootstrap), **_PRODUCER_DEFAULTS, **cfg.kafka, "allow.auto.create.topics": False,
            **fixed}


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
    return {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG, **_CONSUMER_DEFAULTS, **cfg.kafka,
            **_CONSUMER_FIXED, "group.id": group_id, "auto.offset.reset": "earliest" if from_beginning else "latest"}


def ensure_topics(cfg: Config, bootstrap: str, topics, partitions: int = 1) -> None:
    """Create missing topics (names or a name -> partitions mapping).

    >>> from dtlive.config import load_config
    >>> ensure_topics(load_config({}, env={}), "127.0.0.1:9092", {"dt.hits": 4, "dt.monitor": 1})  # doctest: +SKIP
    >>> topic_partitions(load_config({}, env={}), "127.0.0.1:9092", ["dt.hits"])  # doctest: +SKIP
    {'dt.hits': 4}
    """
    from dtlive.kafka.broker import create_topics

    spec = dict(topics) if isinstance(topics, dict) else {t: partitions for t in topics}
    create_topics(bootstrap, spec, config=cfg.kafka)


def topic_partitions(cfg: Config, bootstrap: str, topics, timeout: float = 10.0) -> dict[str, int]:
    """``{topic: partition count}`` of the existing ``topics``: what to create again after a broker lost them.

    >>> from dtlive.config import load_config
    >>> topic_partitions(load_config({}, env={}), "127.0.0.1:9092", ["dt.hits", "no.such.topic"])  # doctest: +SKIP
    {'dt.hits': 4}
    """
    from confluent_kafka.admin import AdminClient

    listed = AdminClient(client_config(cfg, bootstrap)).list_topics(timeout=timeout).topics
    return {t: len(listed[t].partitions) for t in topics if t in listed and listed[t].partitions}


def partition_ends(cfg: Config, bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` offsets of a topic ({} if it does not exist).

    Asked with read_uncommitted on purpose: a read_committed query returns the last
    stable offset, which some brokers (Tansu) hold back while any transaction is open.

    >>> from dtlive.config import load_config
    >>> partition_ends(load_config({}, env={}), "127.0.0.1:9092", "dt.monitor")  # doctest: +SKIP
    {0: (0, 1250)}
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

    >>> from confluent_kafka import Consumer
    >>> consumer = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": "offsets"})  # doctest: +SKIP
    >>> end_offsets(consumer, "dt.hits")  # doctest: +SKIP
    {0: (0, 52000), 1: (0, 51876)}
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
