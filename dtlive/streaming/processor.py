"""``dtlive process``: thin wiring of :mod:`dtlive.streaming.nodes` into an exactly-once service.

Graph: Kafka source -> :func:`dtlive.streaming.graph.window_graph` (dt_decode_hits -> dt_clean_hits -> dt_event_windows)
-> :class:`TransactionalPublisher`.
With a ledger, the run (configuration, code version, start offsets) is recorded there.

Exactly once. Every publication is one Kafka transaction holding the window result(s),
the dead letters seen so far, a checkpoint record on ``<output>.checkpoints`` and the
consumer offsets from which a restart must re-read. After a crash the processor reads its
last checkpoint: messages before the checkpointed position were already counted, so from
them only hits of windows not yet published are taken; nothing is lost and nothing is
counted twice.

>>> cfg = load_config({"bootstrap": "127.0.0.1:9"})
>>> checkpoint_topic(cfg)
'dt.monitor.checkpoints'

Long on purpose: the exactly-once publisher and its restart logic (transactions, checkpoints, broker
replacement, fencing) belong together; the graph and the products live elsewhere.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from confluent_kafka import KafkaError, KafkaException

from dtlive import __version__
from dtlive.config import Config, load_config  # noqa: F401  (load_config: doctest)
from dtlive.core.checkpoint import Checkpoint
from dtlive.core.decode import Reject
from dtlive.core.messages import MONITOR_SCHEMA, SCHEMA_HEADER, message_bytes
from dtlive.core.products import REGISTRY, Settings
from dtlive.core.windows import Window
from dtlive.kafka.clients import ClusterWatch, client_config, ensure_topics, partition_ends, producer_config
from dtlive.kafka.deadletter import dead_letter
from dtlive.kafka.health import Heartbeat, Progress, partition_lag
from dtlive.service.heap import HeapTrimmer, ImportFreezer
from dtlive.service.processes import pid_alive
from dtlive.service.watchdog import Watchdog
from dtlive.storage.run_record import IN_CHILD, ChildRun
from dtlive.streaming import nodes as _nodes  # noqa: F401  (registers the node methods on Stream)
from dtlive.streaming.graph import read_input_again, window_graph
from dtlive.streaming.nodes import dt_event_windows, dt_from_kafka_batched_consumer, window_message

if TYPE_CHECKING:
    from confluent_kafka import Producer


log = logging.getLogger(__name__)
# Every 30 s the processor hands freed heap pages back to the OS (glibc malloc_trim, ~1 ms), see dtlive.service.heap:
# glibc keeps what a burst of input used (measured over 600 s at 10k rows/s csv: main heap ~45 MB instead of ~49).
TRIM_INTERVAL_S = 30.0
# Messages per consume call. Every message of a call is a Python object until the call's last piece is processed,
# so a backlog taken in one call sets Python's arena high-water for good (measured, 600 s at 10k rows/s csv on a
# loaded machine: 20000 -> arenas 71 -> 84 MiB; 5000 -> flat at 73 MiB). Throughput is the same (csv replay:
# ~160-180k msgs per CPU-second either way); a daq64 call is bounded by librdkafka's queue long before.
BATCH_SIZE = 5_000
# Loggers whose warnings count as the processor's errors in its heartbeats (the newest is its "last error").
HEALTH_LOGGERS = ("dtlive.streaming.processor", "dtlive.streaming.nodes", "dtlive.streaming.dask_driver",
                  "dtlive.librdkafka")


def _fresh_high(source, timeout: float = 0.2) -> dict[int, int]:
    """End offsets of the source's partitions asked of the broker (not librdkafka's cache); {} if it is away."""
    from confluent_kafka import TopicPartition

    out = {}
    for p in source.partitions:
        try:
            out[p] = source.consumer.get_watermark_offsets(TopicPartition(source.topic, p), timeout=timeout)[1]
        except Exception:  # noqa: BLE001 - the broker is away: the heartbeat says so by its errors
            break
    return out


def checkpoint_topic(cfg: Config) -> str:
    """The topic of the processors' checkpoints: the results topic's name and ``.checkpoints``.

    >>> from dtlive.config import load_config
    >>> checkpoint_topic(load_config({"monitor_topic": "lab.monitor"}, env={}))
    'lab.monitor.checkpoints'
    """
    return f"{cfg.monitor_topic}.checkpoints"


def _read_checkpoint(cfg: Config, bootstrap: str, timeout: float = 10.0) -> Checkpoint | None:
    """The newest committed checkpoint of this processor (``cfg.group_id``), or None.

    Reads the checkpoint topic backwards in growing chunks, so a long history costs little. The fence
    record (key ``<group_id>.fence``) is not a checkpoint and is skipped.
    """
    from confluent_kafka import Consumer, TopicPartition

    topic = checkpoint_topic(cfg)
    key = cfg.group_id.encode()
    c = Consumer(
        client_config(
            cfg,
            bootstrap,
            **{
                "group.id": f"{cfg.group_id}-ckpt-reader",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            },
        )
    )
    try:
        newest: Checkpoint | None = None
        for p, (low, high) in partition_ends(cfg, bootstrap, topic, timeout).items():
            end, step = high, 256
            while end > low:
                start = max(low, end - step)
                c.assign([TopicPartition(topic, p, start)])
                found, quiet_since = None, time.monotonic()
                while time.monotonic() - quiet_since < 1.0:
                    msgs = [m for m in c.consume(1000, 0.05) if not m.error()]
                    if msgs:
                        quiet_since = time.monotonic()
                    for m in msgs:
                        if (m.offset() or 0) < end and m.key() == key:  # the offset is set on messages consumed
                            found = Checkpoint.from_json(json.loads(m.value() or b""))
                    if c.position([TopicPartition(topic, p)])[0].offset >= end:
                        break
                if found is not None:
                    if newest is None or found.time > newest.time:
                        newest = found
                    break
                end, step = start, step * 4
        return newest
    finally:
        c.close()


def _resume_state(cfg: Config, bootstrap: str) -> Checkpoint | None:
    """Where a restarted processor resumes: the newer of its checkpoint and its last published window."""
    from concurrent.futures import ThreadPoolExecutor

    from dtlive.kafka.results import read_messages

    with ThreadPoolExecutor(2, thread_name_prefix="resume") as pool:  # two independent reads, each a round trip
        newest = pool.submit(read_messages, bootstrap, cfg.monitor_topic, last=50, cfg=cfg, timeout=5)
        ckpt = _read_checkpoint(cfg, bootstrap)
        mine = [m for m in newest.result() if m["provenance"].get("processor") == cfg.group_id]
    if not mine or (ckpt and ckpt.last_window >= mine[-1]["window"]["id"]):
        return ckpt
    return Checkpoint.from_provenance(mine[-1]["window"]["id"], mine[-1]["provenance"])


# librdkafka errors that say a client lost its broker: the broker may have restarted, perhaps empty
_CONNECTION_ERRORS = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})


class ProcessorFenced(SystemExit):
    """Another processor with the same identity (``--group-id``) took over the transactional id.

    >>> try:
    ...     raise ProcessorFenced("processor 'dtlive-processor' was fenced: another took over its transactional id")
    ... except SystemExit as e:  # the process ends with the message, and exit status 1
    ...     print(e.code)
    processor 'dtlive-processor' was fenced: another took over its transactional id
    """


class BrokerLost(SystemExit):
    """The broker did not let a transaction commit for ``recover_s`` seconds.

    >>> try:
    ...     raise BrokerLost("the broker at 127.0.0.1:9092 let no transaction commit for 120 s")
    ... except SystemExit as e:  # the process ends with the message, and exit status 1
    ...     print(e.code)
    the broker at 127.0.0.1:9092 let no transaction commit for 120 s
    """


def _fenced(err) -> bool:
    from confluent_kafka import KafkaError

    return err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


def _processor_topics(cfg: Config) -> list[str]:
    """The topics a processor reads and writes: input, results, dead letters, checkpoints.

    >>> _processor_topics(load_config({}, env={}))
    ['dt.hits', 'dt.monitor', 'dt.hits.rejected', 'dt.monitor.checkpoints']
    """
    return [cfg.hits_topic, cfg.monitor_topic, cfg.rejected_topic, checkpoint_topic(cfg)]


def _transactional_producer(cfg: Config, bootstrap: str, timeout: float = 30.0,
                           on_error: Callable | None = None) -> Producer:
    """A producer with processor ``cfg.group_id``'s transactional id, its transactions initialised (which
    fences an earlier producer with that id). ``on_error``: librdkafka's error callback."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(cfg, bootstrap, **{
        "transactional.id": f"{cfg.group_id}:{cfg.hits_topic}",
        "linger.ms": 5,
        "transaction.timeout.ms": 60000,
        "error_cb": on_error or (lambda err: None),
    }))
    producer.init_transactions(timeout)
    return producer


def fence(producer: Producer, cfg: Config) -> None:
    """Settle a crashed predecessor's open transaction before reading state.

    Real Kafka aborts it in ``init_transactions``; Tansu instead makes its records visible
    at our first commit. Committing an empty marker first makes both brokers settle now,
    so the state read afterwards is final. The marker (key ``<group_id>.fence``) is no checkpoint.

    >>> producer, _ = open_producer(load_config({}), "127.0.0.1:9092")  # doctest: +SKIP
    >>> fence(producer, load_config({}))  # settles what a crashed predecessor left open  # doctest: +SKIP
    """
    producer.begin_transaction()
    producer.produce(checkpoint_topic(cfg), b'{"fence": true}', key=f"{cfg.group_id}.fence".encode())
    producer.commit_transaction(30)


class StreamState(Protocol):
    """What a :class:`TransactionalPublisher` commits with each transaction, asked of the processing it serves.

    >>> from streamz import Stream
    >>> windows = Stream().dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2)
    >>> ckpt, dead_letters = windows.checkpoint()  # the window node answers the first two questions
    >>> ckpt.last_window, dead_letters, windows.commit_offsets()
    (-1, [], {})
    """

    def checkpoint(self) -> tuple[Checkpoint, list[Reject]]:
        """The state to commit and the dead letters not yet handed on (drained)."""

    def commit_offsets(self) -> dict[int, int]:
        """Per input partition, the offset from which a restart must re-read to lose nothing."""

    def consumer_group_metadata(self) -> object:
        """The input consumer's group metadata (``send_offsets_to_transaction`` commits offsets in its group)."""


@dataclass
class _GraphState:
    """The single processor's :class:`StreamState`: its window node's state and its source's consumer group."""

    source: dt_from_kafka_batched_consumer
    windows: dt_event_windows

    def checkpoint(self) -> tuple[Checkpoint, list[Reject]]:
        return self.windows.checkpoint()

    def commit_offsets(self) -> dict[int, int]:
        return self.windows.commit_offsets()

    def consumer_group_metadata(self) -> object:
        assert self.source.consumer is not None, "connected"
        return self.source.consumer.consumer_group_metadata()


@dataclass
class TransactionalPublisher:
    """Publishes closed windows, dead letters and checkpoints in Kafka transactions.

    ``producer``: the fenced transactional producer (:func:`open_producer`); ``state``: what each
    transaction commits with its results (the checkpoint, the input offsets, the consumer group).
    Everything produced in the open transaction is also kept until the commit succeeds, so a transaction the
    broker lost (it restarted, or aborted it) is produced again in a new one, with a new producer when the old
    one cannot go on. Only a fence by another processor with the same identity ends it (:class:`ProcessorFenced`),
    and a broker that lets nothing commit for ``recover_s`` seconds (:class:`BrokerLost`). Each published window
    is handed to the callables in ``on_publish`` (``{"window": ..., "message": ...}``; a message this publisher
    made keeps the reconstruction's ``variables`` as numpy arrays, encoded as the same JSON lists).

    >>> cfg = load_config({})
    >>> producer, resume = open_producer(cfg, "127.0.0.1:9092")  # doctest: +SKIP
    >>> publisher = TransactionalPublisher(cfg, "127.0.0.1:9092", run_provenance(cfg, "run-1"), producer,
    ...                                    state)  # doctest: +SKIP
    >>> publisher.publish(window); publisher.commit()  # doctest: +SKIP
    """

    cfg: Config
    bootstrap: str
    provenance: dict
    producer: Producer
    state: StreamState
    commit_interval_s: float = 0.25
    window_delay_s: float = 0.05  # while a backlog is read, windows wait this long to share one commit
    recover_s: float = 120.0  # how long a transaction may fail to commit before the processor gives up
    on_recover: Callable[[], object] | None = None  # called once a new producer is in place (the broker restarted?)
    on_client_error: Callable | None = None  # librdkafka's error callback of the producers made after the first
    on_publish: list[Callable[[dict], None]] = field(default_factory=list)
    published: int = 0
    dead_lettered: int = 0
    recoveries: int = 0
    _in_txn: bool = False
    _txn_started: float = 0.0
    _windows_in_txn: int = 0
    _pending: list[tuple] = field(default_factory=list)  # (topic, value, key, headers) of the open transaction
    _broken: Exception | None = None  # why the producer cannot go on (a new one is made at commit)

    def __post_init__(self):
        self.settings = Settings.from_config(self.cfg)
        listed = self.producer.list_topics(timeout=10).topics
        # what to create again when the broker lost its topics
        self.topics = {t: len(listed[t].partitions) for t in _processor_topics(self.cfg)
                       if t in listed and listed[t].partitions}

    def _new_producer(self, timeout: float) -> Producer:
        return _transactional_producer(self.cfg, self.bootstrap, timeout,
                                      lambda err: self.on_client_error and self.on_client_error(err))

    def _begin(self):
        if not self._in_txn:
            self._in_txn = True
            self._txn_started = time.monotonic()
            self._pending.clear()
            if self._broken is None:
                try:
                    self.producer.begin_transaction()
                except KafkaException as exc:
                    self._broken = exc

    def _produce(self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None) -> None:
        self._pending.append((topic, value, key, headers))
        if self._broken is not None:
            return
        try:
            try:
                self.producer.produce(topic, value, key=key, headers=headers)
            except BufferError:  # the local queue is full: let it drain once
                self.producer.poll(0.5)
                self.producer.produce(topic, value, key=key, headers=headers)
        except (KafkaException, BufferError) as exc:
            self._broken = exc

    def publish(self, window: Window, msg: dict | None = None) -> None:
        """Produce one window's result (and the dead letters it carries) in the open transaction.

        ``msg``: the window's result message if it was computed elsewhere (on Dask workers: the Dask driver).
        """
        self._begin()
        self._dead_letter(window.meta.get("rejects", []))
        if msg is None:
            msg = window_message(window, self.settings.drift_edges, self.provenance,
                                 arrays=REGISTRY.compute(window.hits, self.settings), variables_as_arrays=True)
        msg["provenance"]["result_seq"] = self.published + 1  # the recorder finds lost results by gaps in these
        self._produce(self.cfg.monitor_topic, message_bytes(msg), str(window.id).encode(),
                      [(SCHEMA_HEADER, MONITOR_SCHEMA.encode())])
        self.published += 1
        self._windows_in_txn += 1
        self.producer.poll(0)
        for callback in self.on_publish:
            callback({"window": window, "message": msg})

    def _dead_letter(self, rejects: list[Reject]) -> None:
        for r in rejects:  # cut to the configured size: one huge payload must not fail the transaction
            letter = dead_letter(r.payload, r.reason, r.detail, self.cfg.hits_topic, r.partition, r.offset,
                                 self.cfg.dead_letter_max_bytes)
            self._produce(self.cfg.rejected_topic, letter.value, None, letter.headers)
            self.dead_lettered += 1
            if self.dead_lettered % 10000 == 0:
                self.producer.poll(0)

    def due(self, backlog: bool = False) -> bool:
        """Time to commit: a window waits (at once; within ``window_delay_s`` while a ``backlog`` is read,
        so a replay does not pay one commit, ~4 ms on Tansu, per window), or ``commit_interval_s`` passed."""
        if not self._in_txn:
            return False
        age = time.monotonic() - self._txn_started
        if self._windows_in_txn:
            return not backlog or age >= self.window_delay_s
        return age >= self.commit_interval_s

    def replace_producer(self, why: str) -> None:
        """Make a new producer before the next commit (the broker was replaced: the old one is stuck with it)."""
        self._broken = self._broken or KafkaException(KafkaError(KafkaError._TRANSPORT, why))

    def broker_replaced(self) -> None:
        """The broker was replaced (restarted empty): create the topics again, and a new producer before the
        next commit."""
        try:
            ensure_topics(self.cfg, self.bootstrap, self.topics)
        except Exception as exc:  # noqa: BLE001 - they are created again with the new producer too
            log.warning("could not create the topics yet: %s", exc)
        self.replace_producer("the broker was replaced")

    @property
    def in_transaction(self) -> bool:
        """A transaction is open (something waits to be committed)."""
        return self._in_txn

    @property
    def windows_in_transaction(self) -> int:
        """Windows published in the open transaction."""
        return self._windows_in_txn

    def commit(self) -> None:
        """Write the checkpoint and the safe input offsets, then commit the transaction."""
        state, rejects = self.state.checkpoint()
        offsets = self.state.commit_offsets()
        if not (self._in_txn or rejects or offsets):
            return
        self._begin()
        self._dead_letter(rejects)
        state = replace(state, processor=self.cfg.group_id, config_hash=self.cfg.config_hash,
                        input_topic=self.cfg.hits_topic, run_id=self.provenance.get("run_id"), time=time.time())
        self._produce(checkpoint_topic(self.cfg), state.to_bytes(), self.cfg.group_id.encode())
        self._commit(offsets)
        self._in_txn = False
        self._windows_in_txn = 0
        self._pending.clear()

    def _commit(self, offsets: dict[int, int]) -> None:
        """Commit the open transaction; when the broker lost or refused it, produce it again and retry."""
        from confluent_kafka import TopicPartition

        deadline = time.monotonic() + self.recover_s
        pause = 0.2
        while True:
            try:
                if self._broken is not None:
                    raise self._broken
                if offsets:
                    self.producer.send_offsets_to_transaction(
                        [TopicPartition(self.cfg.hits_topic, p, o) for p, o in offsets.items()],
                        self.state.consumer_group_metadata(),
                        30,
                    )
                self.producer.commit_transaction(60)
                if pause > 0.2:
                    log.warning("transactions commit again (%d windows, %d messages re-sent)",
                                self._windows_in_txn, len(self._pending))
                return
            except (KafkaException, BufferError) as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is not None and _fenced(err):
                    raise ProcessorFenced(
                        f"processor {self.cfg.group_id!r}: another processor with the same identity took over "
                        "(fenced); stopping this one. Give each processor its own --group-id.") from None
                if time.monotonic() > deadline:
                    raise BrokerLost(f"processor {self.cfg.group_id!r}: the broker at {self.bootstrap} let no "
                                     f"transaction commit for {self.recover_s:.0f} s (last error: {exc}); exiting "
                                     "so that a supervisor restarts it") from None
                if pause == 0.2:
                    log.warning("a transaction did not commit (%s); producing it again", exc)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
                self._reproduce(err)
                offsets = self.state.commit_offsets()  # the source may have read its topic anew meanwhile

    def _reproduce(self, err) -> None:
        """A new transaction with everything the failed one held: after an abort if the producer can go on,
        else with a new producer (topics created again first, for a broker that lost them)."""
        broken, self._broken = self._broken, None
        try:
            if broken is None and err is not None and err.txn_requires_abort() and not err.fatal():
                self.producer.abort_transaction(10)
            else:
                raise KafkaException(err) if err is not None else RuntimeError("producer cannot go on")
        except (KafkaException, RuntimeError):
            try:
                self.producer = self._new_producer(10)
            except KafkaException as exc:
                self._broken = exc  # the broker is still away: try again on the next round
                return
            self.recoveries += 1
            if self.topics:
                try:
                    ensure_topics(self.cfg, self.bootstrap, self.topics)
                except Exception as exc:  # noqa: BLE001 - the next round tries again
                    self._broken = KafkaException(KafkaError(KafkaError._TRANSPORT, str(exc)))
                    return
            if self.on_recover is not None:
                self.on_recover()
                self._broken = None  # a replacement found now is the broker the new producer already talks to
        try:
            self.producer.begin_transaction()
            for topic, value, key, headers in self._pending:
                self.producer.produce(topic, value, key=key, headers=headers)
                self.producer.poll(0)
        except (KafkaException, BufferError) as exc:
            self._broken = exc


class AlreadyRunning(SystemExit):
    """Another live processor has the same identity: starting would fence it.

    >>> try:
    ...     open_producer(load_config({}), "127.0.0.1:9092")  # doctest: +SKIP
    ... except AlreadyRunning as e:
    ...     print(str(e.code).split(";")[0])
    processor 'dtlive-processor' is already running on daq1 (pid 4242, last heartbeat 1 s ago)
    """


def running_twin(cfg: Config, bootstrap: str, beats: list[dict] | None = None) -> dict | None:
    """The newest heartbeat of another live processor with this one's identity (``cfg.group_id``), or None.

    Live: it beat within three heartbeat intervals and did not say it stopped; one on this host whose process is
    gone (killed) does not count. ``beats``: heartbeats already read (default: read the status topic now).

    >>> import os, socket, time
    >>> cfg = load_config({"bootstrap": "127.0.0.1:9"}, env={})
    >>> beat = {"service": "processor", "state": "running", "time": time.time(), "host": socket.gethostname(),
    ...         "pid": os.getppid(), "detail": {"group_id": cfg.group_id}}
    >>> running_twin(cfg, "127.0.0.1:9", [beat])["pid"] == os.getppid()
    True
    >>> running_twin(cfg, "127.0.0.1:9", [{**beat, "state": "stopped"}]) is None
    True
    """
    import os

    if cfg.status_interval_s <= 0:
        return None
    recent = 3 * cfg.status_interval_s
    if beats is None:
        from dtlive.kafka.health import StatusReader

        reader = StatusReader(cfg, bootstrap, since_s=recent)
        try:
            beats = reader.read(timeout=2.0)
        except Exception:  # noqa: BLE001 - no status topic yet, or the broker is slow: nothing known
            beats = []
        finally:
            reader.close()
    newest: dict[tuple, dict] = {}
    for m in beats:
        if m.get("service") in ("processor", "dask-processor") and \
                (m.get("detail") or {}).get("group_id") == cfg.group_id:
            newest[(m.get("host"), m.get("pid"))] = m
    here = socket.gethostname()
    for (host, pid), m in sorted(newest.items(), key=lambda kv: -kv[1].get("time", 0)):
        if (host, pid) == (here, os.getpid()) or m.get("state") in ("stopped", "stopping"):
            continue
        if time.time() - m.get("time", 0) > recent:
            continue
        if host == here and not pid_alive(pid):
            continue
        return m
    return None


def run_provenance(cfg: Config, run_id: str) -> dict:
    """What every result of processor ``cfg.group_id``'s run ``run_id`` says of its making.

    >>> sorted(run_provenance(load_config({"bootstrap": "127.0.0.1:9"}, env={}), "r1"))
    ['config_hash', 'dtlive_version', 'host', 'processor', 'run_id', 'topic']
    """
    return {
        "topic": cfg.hits_topic,
        "dtlive_version": __version__,
        "config_hash": cfg.config_hash,
        "run_id": run_id,
        "processor": cfg.group_id,
        "host": socket.gethostname(),
    }


def open_producer(cfg: Config, bootstrap: str, on_error: Callable | None = None) -> tuple[Producer, Checkpoint | None]:
    """The topics, the fenced transactional producer of processor ``cfg.group_id`` and where it resumes.

    Returns the producer (for :class:`TransactionalPublisher`) and the state its previous run left (the newer
    of its last checkpoint and its last published window; None on a first run), read after the fence so that
    it is final. Refuses (SystemExit) to continue a result series that was made with other processing
    settings, and to start while another processor with the same identity is alive (:func:`running_twin`,
    :class:`AlreadyRunning`): taking over its transactional id would fence it. ``on_error``: librdkafka's
    error callback of the producer.

    >>> producer, resume = open_producer(load_config({}), "127.0.0.1:9092")  # doctest: +SKIP
    >>> resume.last_window if resume else None  # doctest: +SKIP
    1041
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="topics") as pool:  # independent round trips, side by side
        topics = pool.submit(ensure_topics, cfg, bootstrap, _processor_topics(cfg))
        twin = running_twin(cfg, bootstrap)
        topics.result()
    if twin is not None:
        raise AlreadyRunning(
            f"processor {cfg.group_id!r} is already running on {twin.get('host')} (pid {twin.get('pid')}, last "
            f"heartbeat {time.time() - twin.get('time', 0):.0f} s ago); stop it first, or give this one its own "
            "--group-id")
    producer = _transactional_producer(cfg, bootstrap, 30, on_error)
    fence(producer, cfg)
    ckpt = _resume_state(cfg, bootstrap)
    if ckpt and ckpt.config_hash != cfg.config_hash:
        raise SystemExit(
            f"processor {cfg.group_id!r} last ran with other processing settings (config hash "
            f"{ckpt.config_hash} != {cfg.config_hash}); give a new --group-id to start a new series"
        )
    return producer, ckpt


def processing_run(ledger, run_id: str, cfg: Config, start_offsets: dict[int, int]):
    """Keep processing run ``run_id`` in ``ledger`` in the background (a ``dtlive.storage.ledger.RunKeeper``, so that a
    database outage never stalls processing): its configuration and where it starts reading each input partition
    (librdkafka's logical offsets by name). None without a ledger.

    ``ledger`` may also be :data:`dtlive.storage.run_record.IN_CHILD`: then a child process opens the default
    ledger and records the run there (:class:`dtlive.storage.run_record.ChildRun`), so that the processor spends
    neither CPU nor the interpreter lock on it and starts without waiting for any of it (what ``dtlive process``
    does).

    >>> from dtlive.config import load_config
    >>> processing_run(None, "run-1", load_config({}, env={}), {0: 0}) is None
    True
    """
    if ledger is None:
        return None
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    named = {OFFSET_BEGINNING: "beginning", OFFSET_END: "end"}
    inputs = [{"topic": cfg.hits_topic, "partition": p, "start_offset": named.get(o, o)}
              for p, o in sorted(start_offsets.items())]
    if isinstance(ledger, str) and ledger == IN_CHILD:
        return ChildRun(run_id, kind="processing", config=cfg, inputs=inputs)
    from dtlive.storage.ledger import RunKeeper

    return RunKeeper(ledger, run_id, kind="processing", config=cfg, inputs=inputs)


class Processor:
    """The running service: source, nodes and publisher, driven by :meth:`run`.

    >>> from dtlive.config import load_config
    >>> proc = Processor(load_config({}), "127.0.0.1:9092")   # doctest: +SKIP
    >>> proc.run(until_end=True).close()                      # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: Config,
        bootstrap: str,
        from_beginning: bool = False,
        batch_size: int = BATCH_SIZE,
        run_id: str | None = None,
        ledger=None,
        trim_interval_s: float | None = None,
    ):
        """``trim_interval_s``: seconds between heap trims (default :data:`TRIM_INTERVAL_S`; 0: never)."""
        from dtlive.kafka.clients import consumer_config

        self.cfg = cfg
        self.bootstrap = bootstrap
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.broker_suspect = False  # a client lost its connection: ask the broker who it is before committing
        self.input_done_at: float | None = None  # see timing()
        producer, ckpt = open_producer(cfg, bootstrap, on_error=self._on_client_error)
        self.resumed = ckpt is not None
        self.source = dt_from_kafka_batched_consumer(
            cfg.hits_topic,
            {**consumer_config(cfg, bootstrap, group_id=cfg.group_id, from_beginning=from_beginning),
             "error_cb": self._on_client_error},
            batch_size=batch_size,
            # Our own committed state says where to re-read from; a broker may have applied a crashed
            # transaction's offset commit without its records (Tansu does), so group offsets are not trusted.
            start_offsets=dict(ckpt.restart_offsets) if ckpt else None,
        )
        self.windows = window_graph(self.source, cfg, ckpt)
        self.publisher = TransactionalPublisher(
            cfg, bootstrap, run_provenance(cfg, self.run_id), producer, _GraphState(self.source, self.windows),
            on_recover=lambda: self.follow_broker(force=True), on_client_error=self._on_client_error)
        self.windows.sink(self.publisher.publish)
        self.source.connect()  # where reading starts is recorded below, and a missing topic fails the start
        self.cluster = ClusterWatch.of(cfg, bootstrap, every_s=cfg.idle_s)
        self._stop = False
        self.input_restarts = 0
        self.trimmer = HeapTrimmer(TRIM_INTERVAL_S if trim_interval_s is None else trim_interval_s)
        self.late_imports = ImportFreezer()  # the kernels and parsers a first window imports
        self.heartbeat = Heartbeat("processor", cfg, bootstrap, run_id=self.run_id, watch=HEALTH_LOGGERS)
        self._progress = Progress()
        self.watchdog = Watchdog("processor", cfg.watchdog_s)
        self.ledger = ledger  # a dtlive.storage.ledger.Ledger: the run, its configuration and inputs are recorded
        self.run_keeper = processing_run(ledger, self.run_id, cfg, self.source.start_offsets)

    def stop(self, *_):
        self._stop = True

    def _on_client_error(self, err) -> None:
        if err.code() in _CONNECTION_ERRORS or err.fatal():
            self.broker_suspect = True

    def broker_ready(self, now: float) -> bool:
        """Whether committing now makes sense: after a client lost its connection, only once the broker answers
        again (a commit to a broker that is away blocks for up to a minute); a replaced broker is followed."""
        if not self.broker_suspect:
            return True
        self.follow_broker(now, force=True)
        if self.cluster.answered:
            self.broker_suspect = False
            return True
        return False

    def follow_broker(self, now: float | None = None, force: bool = False) -> bool:
        """When the broker was replaced (it restarted empty), read the input topic again from its beginning.

        The topic there holds only what was produced since; open windows keep their hits, and hits for windows
        already published count as late. Asked when the input is quiet (at most once per ``idle_s``) and
        whenever the publisher needed a new producer. True if the input was restarted.
        """
        if not self.cluster.replaced(now, force=force):
            return False
        log.warning("processor %r: the broker at %s lost its topics (restarted?); creating them again and reading "
                    "%s from its beginning", self.cfg.group_id, self.bootstrap, self.cfg.hits_topic)
        self.publisher.broker_replaced()
        read_input_again(self.windows)
        self.input_restarts += 1
        return True

    def settle(self) -> None:
        """Finish work handed off elsewhere (windows on Dask workers) before state is committed."""

    def run(
        self,
        until_end: bool = False,
        max_seconds: float | None = None,
        on_tick: Callable[[Processor], None] | None = None,
    ) -> Processor:
        """Process until stopped (or, with ``until_end``, until the input's end at start is reached)."""
        from concurrent.futures import ThreadPoolExecutor

        ends = None
        if until_end:  # the input's end, asked while the first fetch is under way
            pool = ThreadPoolExecutor(1, thread_name_prefix="input-end")
            ends = pool.submit(partition_ends, self.cfg, self.bootstrap, self.cfg.hits_topic)
            pool.shutdown(wait=False)  # its one task still runs
        targets: dict[int, int] | None = None
        started = time.monotonic()
        last_tick = 0.0
        self.watchdog.start()
        while not self._stop:
            n = self.source.poll()
            now = time.monotonic()
            self.watchdog.beat()
            if ends is not None and targets is None:
                targets = {p: high for p, (_, high) in ends.result().items()}
            if targets is not None and all(self.source.positions.get(p, 0) >= t for p, t in targets.items()):
                self.windows.flush()
                break
            if n == 0:
                self.follow_broker(now)
                self.windows.flush_if_idle(now, self.source.input_waiting)
            self.settle()
            # a new window is committed at once (its latency matters), or soon when more input is already queued
            # (a full consume call); checkpoint-only work every commit interval
            if (self.publisher.due(backlog=n >= self.source.batch_size) or (n == 0 and self.publisher.in_transaction)) \
                    and self.broker_ready(now):
                self.publisher.commit()
            self.trimmer.maybe(now)
            self.late_imports.maybe()
            self.heartbeat.maybe(now, self.health)
            if on_tick and now - last_tick >= 1.0:
                on_tick(self)
                last_tick = now
            if max_seconds is not None and now - started > max_seconds:
                break
        self.settle()
        self.publisher.commit()
        self.input_done_at = time.monotonic()
        return self

    def timing(self) -> dict:
        """Start-up, input and bookkeeping time of the last :meth:`run`: ``first_input_s`` (seconds from the
        process' start to its first input messages: interpreter, imports, set-up, first fetch), ``input_s`` (from
        the first input to the end of the run, its last commit included) and ``bookkeeping_cpu_s`` (CPU seconds of
        the child process that kept the run in the ledger, once it stopped); None where not known."""
        done = self.input_done_at if self.input_done_at is not None else time.monotonic()
        first = self.source.first_input_at
        return {"first_input_s": self.source.first_input_age_s, "input_s": None if first is None else done - first,
                "bookkeeping_cpu_s": getattr(self.run_keeper, "cpu_s", None)}

    def health(self) -> dict:
        """Heartbeat fields (:mod:`dtlive.kafka.health`): state, input lag per partition, running totals, errors.

        ``degraded`` when errors grew since the last heartbeat, or input waits while nothing is consumed.
        """
        src, win = self.source, self.windows
        high = src.high_watermarks()
        if sum(high.values()) <= sum(src.positions.get(p, 0) for p in high) and \
                src.messages == self._progress.consumed:  # looks idle: ask the broker, the cache may be old
            high = {**high, **_fresh_high(src)}
        lag = partition_lag(high, src.positions, win.state.peaks, win.orbit_epoch,
                            topic=self.cfg.hits_topic)
        errors = {"consume": src.errors, "windows": win.errors}
        failing, self._errors_seen = sum(errors.values()) > getattr(self, "_errors_seen", 0), sum(errors.values())
        stalled = self._progress.stalled_s(src.messages, lag["messages"], time.monotonic())
        idle = time.monotonic() - win.last_input > self.heartbeat.interval_s and not lag["messages"]
        fields = {
            "state": "degraded" if failing or stalled > 2 * self.heartbeat.interval_s else
            "idle" if idle else "running",
            "lag": lag,
            "counts": {"messages": src.messages, "windows": self.publisher.published,
                       "dead_letters": self.publisher.dead_lettered},
            "errors": errors,
            "detail": {"input": self.cfg.hits_topic, "output": self.cfg.monitor_topic, "group_id": self.cfg.group_id,
                       "last_window": win.state.last_closed, "stalled_s": round(stalled, 1)},
        }
        if stalled > 2 * self.heartbeat.interval_s:
            fields["last_error"] = {"text": f"{lag['messages']} input messages waiting, none consumed for "
                                            f"{stalled:.0f} s", "time": time.time()}
        self.watchdog.check(stalled, f"{lag['messages']} input messages waiting on {self.cfg.hits_topic}")
        return fields

    def close(self, status: str = "finished"):
        self.watchdog.close()
        self.heartbeat.close(fields=self.health)
        self.source.close()
        self.publisher.producer.flush(10)
        if self.run_keeper is not None:
            self.run_keeper.stop(status)
