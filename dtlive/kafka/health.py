"""Service health: ``dtlive.status/1`` heartbeats, who is alive, who is stale.

Every dtlive service (processor, recorder, alert listener, emulator, Dask processor) publishes
a heartbeat every ``status_interval_s`` seconds (default 2) on ``status_topic`` (``dt.status``)
from its own run loop: a loop that is stuck stops its heartbeat, which is how a stall shows.
A heartbeat says who (service, host, pid, run id, version, configuration hash), how it is
(state, input lag per partition in messages and seconds of event time, rates, error counts,
the last error) and when (time, sequence number, interval).

Pure parts: :func:`status_message` builds a heartbeat, :func:`partition_lag` the lag,
:class:`ServiceHealth` keeps the newest heartbeats per service instance and says which are
stale (no heartbeat for more than ``stale_intervals`` intervals) or irregular (gaps, lost
heartbeats). The I/O shell: :class:`Heartbeat`, with its own non-blocking producer.

>>> msg = status_message("processor", run_id="r1", state="running", seq=0, now=100.0, host="h", pid=7,
...                      lag=partition_lag({0: 120}, {0: 100}), rates={"input_msgs_per_s": 500.0})
>>> msg["schema"], msg["lag"]["messages"], msg["lag"]["partitions"]["0"]["messages"]
('dtlive.status/1', 20, 20)
>>> health = ServiceHealth()
>>> health.add([msg], received=100.0)
1
>>> [(r["service"], r["state"], r["stale"]) for r in health.rows(now=101.0)]
[('processor', 'running', False)]
>>> [(r["service"], r["stale"]) for r in health.rows(now=107.0)], health.alarms(now=107.0)
([('processor', True)], ['processor on h (pid 7): no heartbeat for 7 s'])

Long on purpose: the heartbeat message, the pure staleness bookkeeping, the services' heartbeat thread
and the ``dtlive status`` table all read one message format and change together.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from dtlive import __version__
from dtlive.core import detector as det
from dtlive.core.messages import SCHEMA_HEADER, STATUS_SCHEMA

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer

log = logging.getLogger(__name__)

SERVICES = ("processor", "dask-processor", "recorder", "alerts", "emulator")
#: What a service can say about itself. ``degraded``: running, but errors in the last interval.
STATES = ("starting", "running", "idle", "degraded", "stopping", "stopped", "failed")
ERROR_STATES = ("degraded", "failed")
STALE_INTERVALS = 3.0  # no heartbeat for more than this many intervals: stale
IRREGULAR_FACTOR = 2.0  # a gap between heartbeats longer than this many intervals: irregular


_Partition = TypeVar("_Partition", int, str)  # a partition number, or "topic/partition" across topics


def partition_lag(
    high: Mapping[_Partition, int],
    positions: Mapping[_Partition, int],
    newest_orbit: Mapping[_Partition, int] | None = None,
    orbit_epoch: float | None = None,
    now: float | None = None,
    topic: str | None = None,
) -> dict:
    """Input lag per partition: messages waiting (``high`` - ``positions``) and, where the newest orbit read
    and the orbit epoch are known, seconds of event time behind the wall clock ``now``.

    >>> lag = partition_lag({0: 10, 1: 5}, {0: 4}, newest_orbit={0: 0}, orbit_epoch=100.0, now=101.0, topic="t")
    >>> lag["messages"], lag["partitions"]["1"]["messages"], round(lag["partitions"]["0"]["seconds"], 3)
    (11, 5, 1.0)
    """
    now = time.time() if now is None else now
    parts: dict[str, dict] = {}
    for p in sorted(high):
        seconds = None
        if newest_orbit and p in newest_orbit and orbit_epoch is not None:
            seconds = round(now - (orbit_epoch + (int(newest_orbit[p]) + 1) * det.ORBIT_S), 3)
        parts[str(p)] = {"messages": max(int(high[p]) - int(positions.get(p, 0)), 0), "seconds": seconds}
    known = [v["seconds"] for v in parts.values() if v["seconds"] is not None]
    return {
        "topic": topic,
        "messages": sum(v["messages"] for v in parts.values()),
        "seconds": max(known) if known else None,
        "partitions": parts,
    }


def status_message(
    service: str,
    *,
    run_id: str,
    state: str,
    seq: int,
    now: float,
    host: str | None = None,
    pid: int | None = None,
    interval_s: float = 2.0,
    started_at: float | None = None,
    lag: dict | None = None,
    rates: Mapping[str, float] | None = None,
    counts: Mapping[str, int] | None = None,
    errors: Mapping[str, int] | None = None,
    last_error: dict | None = None,
    config_hash: str | None = None,
    version: str = __version__,
    detail: Mapping | None = None,
) -> dict:
    """One ``dtlive.status/1`` heartbeat as a JSON-ready dict (pure: everything comes in as arguments).

    ``now`` and ``started_at``: UNIX seconds; ``rates``: per second; ``counts``: running totals;
    ``errors``: error counts by kind; ``last_error``: ``{"text", "time"}``.

    >>> msg = status_message("recorder", run_id="r7", state="degraded", seq=3, now=1000.0, host="daq1", pid=42,
    ...                      started_at=940.0, errors={"ledger": 2}, counts={"windows": 11})
    >>> msg["instance"], msg["uptime_s"], msg["errors_total"], msg["counts"]
    ('recorder@daq1:42', 60.0, 2, {'windows': 11})
    >>> status_message("recorder", run_id="r7", state="asleep", seq=0, now=0.0)
    Traceback (most recent call last):
    ...
    ValueError: unknown state 'asleep'; choose one of starting, running, idle, degraded, stopping, stopped, failed
    """
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}; choose one of {', '.join(STATES)}")
    host = socket.gethostname() if host is None else host
    pid = os.getpid() if pid is None else pid
    errors = {k: int(v) for k, v in (errors or {}).items()}
    return {
        "schema": STATUS_SCHEMA,
        "service": service,
        "instance": f"{service}@{host}:{pid}",
        "host": host,
        "pid": int(pid),
        "run_id": run_id,
        "state": state,
        "seq": int(seq),
        "time": float(now),
        "interval_s": float(interval_s),
        "started_at": started_at,
        "uptime_s": round(now - started_at, 3) if started_at is not None else None,
        "version": version,
        "config_hash": config_hash,
        "lag": lag,
        "rates": {k: round(float(v), 3) for k, v in (rates or {}).items()},
        "counts": {k: int(v) for k, v in (counts or {}).items()},
        "errors": errors,
        "errors_total": sum(errors.values()),
        "last_error": last_error,
        "detail": dict(detail or {}),
    }


def parse_status(value: bytes) -> dict:
    """A ``dtlive.status/1`` message as a dict (ValueError for anything else).

    >>> parse_status(b'{"schema": "dtlive.status/1", "service": "recorder", "time": 1.0}')["service"]
    'recorder'
    """
    try:
        msg = json.loads(value)
    except (TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or msg.get("schema") != STATUS_SCHEMA or not isinstance(msg.get("time"), int | float):
        raise ValueError("not a dtlive.status/1 message")
    return msg


def rates_between(before: Mapping[str, float], after: Mapping[str, float], seconds: float) -> dict[str, float]:
    """``{name}_per_s`` of every counter in ``after``, from its change since ``before`` over ``seconds``.

    >>> rates_between({"messages": 10}, {"messages": 30, "windows": 1}, 2.0)
    {'messages_per_s': 10.0, 'windows_per_s': 0.5}
    """
    if seconds <= 0:
        return {}
    return {f"{k}_per_s": max(float(v) - float(before.get(k, 0)), 0.0) / seconds for k, v in after.items()}


@dataclass
class Progress:
    """How long input has been waiting while nothing was consumed (pure; fed at every heartbeat).

    >>> p = Progress()
    >>> p.stalled_s(consumed=10, waiting=5, now=0.0), p.stalled_s(10, 5, 4.0), p.stalled_s(11, 5, 6.0)
    (0.0, 4.0, 0.0)
    >>> p.stalled_s(11, 0, 9.0), p.stalled_s(11, 3, 10.0)
    (0.0, 1.0)
    """

    consumed: int | None = None
    since: float = 0.0

    def stalled_s(self, consumed: int, waiting: int, now: float) -> float:
        """Seconds since the last progress, if ``waiting`` messages wait and ``consumed`` has not moved; else 0."""
        if consumed != self.consumed or not waiting:
            self.consumed, self.since = consumed, now
            return 0.0
        return now - self.since


# ----------------------------------------------------------------------------------------------- who is alive


@dataclass
class ServiceHealth:
    """The newest heartbeats of every service instance, and which are stale or irregular. Pure.

    ``stale_intervals``: an instance with no heartbeat for more than this many of its intervals is stale
    (unless its last heartbeat said ``stopped``); ``forget_after_s``: instances silent this long are dropped.
    ``irregular``: a gap between its recent heartbeats longer than ``irregular_factor`` intervals, or
    sequence numbers missing (heartbeats lost).

    >>> beats = [status_message("alerts", run_id="r", state="running", seq=s, now=t, host="h", pid=1)
    ...          for s, t in ((0, 0.0), (1, 2.0), (3, 6.0))]  # heartbeat 2 was lost
    >>> health = ServiceHealth()
    >>> health.add(beats), health.add(beats[:1])  # repeats are ignored
    (3, 0)
    >>> [(r["state"], r["irregular"], r["alarm"]) for r in health.rows(now=7.0)]
    [('running', True, 'irregular heartbeat (gap 4.0 s, 1 missing)')]
    """

    stale_intervals: float = STALE_INTERVALS
    irregular_factor: float = IRREGULAR_FACTOR
    forget_after_s: float = 600.0
    keep: int = 16  # heartbeats kept per instance
    instances: dict = field(default_factory=dict)  # instance -> deque of (received, message)

    def add(self, messages: list[dict], received: float | None = None) -> int:
        """Take parsed heartbeats (any order; repeats ignored); return how many were new."""
        new = 0
        for msg in sorted(messages, key=lambda m: (m.get("time", 0), m.get("seq", 0))):
            key = msg.get("instance") or f"{msg.get('service')}@{msg.get('host')}:{msg.get('pid')}"
            beats = self.instances.setdefault(key, deque(maxlen=self.keep))
            if beats and (msg.get("run_id"), msg.get("seq")) in {(b.get("run_id"), b.get("seq")) for _, b in beats}:
                continue
            beats.append((msg["time"] if received is None else received, msg))
            new += 1
        return new

    def _row(self, beats: deque, now: float) -> dict:
        _, last = beats[-1]
        interval = float(last.get("interval_s") or 2.0)
        age = now - float(last["time"])
        stopped = last.get("state") == "stopped"
        stale = not stopped and age > self.stale_intervals * interval
        run = [b for _, b in beats if b.get("run_id") == last.get("run_id")]
        gaps = [b["time"] - a["time"] for a, b in zip(run[:-1], run[1:])]
        lost = sum(max(int(b.get("seq", 0)) - int(a.get("seq", 0)) - 1, 0) for a, b in zip(run[:-1], run[1:]))
        long_gap = max(gaps, default=0.0) > self.irregular_factor * interval
        irregular = not (stale or stopped) and (long_gap or lost > 0)
        lag = last.get("lag") or {}
        alarm = None
        if stale:
            alarm = f"no heartbeat for {age:.0f} s"
        elif last.get("state") in ERROR_STATES:
            alarm = f"{last['state']}" + (f": {last['last_error']['text']}" if last.get("last_error") else "")
        elif irregular:
            alarm = (f"irregular heartbeat (gap {max(gaps, default=0):.1f} s" +
                     (f", {lost} missing" if lost else "") + ")")
        return {
            "service": last.get("service"),
            "host": last.get("host"),
            "pid": last.get("pid"),
            "run_id": last.get("run_id"),
            "state": "stale" if stale else last.get("state"),
            "reported_state": last.get("state"),
            "age_s": round(age, 1),
            "interval_s": interval,
            "stale": stale,
            "irregular": irregular,
            "alarm": alarm,
            "lag_messages": lag.get("messages"),
            "lag_s": lag.get("seconds"),
            "rates": last.get("rates") or {},
            "errors_total": int(last.get("errors_total") or 0),
            "errors": last.get("errors") or {},
            "last_error": last.get("last_error"),
            "version": last.get("version"),
            "config_hash": last.get("config_hash"),
            "seq": last.get("seq"),
            "time": last.get("time"),
        }

    def rows(self, now: float | None = None) -> list[dict]:
        """One row per instance heard from in the last ``forget_after_s``: newest state, age, stale, alarm."""
        now = time.time() if now is None else now
        for key in [k for k, b in self.instances.items() if now - float(b[-1][1]["time"]) > self.forget_after_s]:
            del self.instances[key]
        rows = [self._row(b, now) for b in self.instances.values()]
        return sorted(rows, key=lambda r: (str(r["service"]), str(r["host"]), int(r["pid"] or 0)))

    def alarms(self, now: float | None = None) -> list[str]:
        """One line per instance that is stale, in an error state or irregular."""
        return [f"{r['service']} on {r['host']} (pid {r['pid']}): {r['alarm']}" for r in self.rows(now) if r["alarm"]]


# ------------------------------------------------------------------------------------------------ I/O shell


class _LastError(logging.Handler):
    """Keeps the newest WARNING-or-worse log line of the watched loggers, and counts them."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.last: dict | None = None
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken log call must not break the service
            text = str(record.msg)
        self.count += 1
        self.last = {"text": f"{record.levelname} {record.name}: {text}"[:500], "time": record.created}


class Heartbeat:
    """Publishes a service's ``dtlive.status/1`` heartbeats; called from the service's own run loop.

    :meth:`maybe` publishes at most every ``interval_s`` (``cfg.status_interval_s``; 0 switches heartbeats
    off) with a producer of its own that never blocks: while the broker is away heartbeats are dropped
    after a few intervals and counted (``errors["status_publish"]``), never raised. ``fields`` given to
    :meth:`maybe` may be a callable returning them, called only when a heartbeat is due. ``counts``
    (running totals) become ``rates`` (``{name}_per_s`` over the last interval). WARNING-or-worse log
    lines of the ``watch`` loggers count as errors and the newest is the heartbeat's ``last_error``.
    :meth:`close` sends a final ``stopped`` heartbeat. ``create_topic``: create the status topic (1 partition)
    at start if it is missing (again in the background if a restarted broker lost it).

    >>> from dtlive.config import load_config
    >>> hb = Heartbeat("processor", load_config({"status_interval_s": 0}, env={}), "127.0.0.1:9")
    >>> hb.enabled, hb.maybe(0.0, counts={"messages": 1})
    (False, False)
    """

    def __init__(self, service: str, cfg, bootstrap: str, run_id: str | None = None,
                 watch: tuple[str, ...] = (), interval_s: float | None = None, producer=None,
                 clock: Callable[[], float] = time.time, create_topic: bool = True):
        self.service = service
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.topic = cfg.status_topic
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.interval_s = float(cfg.status_interval_s if interval_s is None else interval_s)
        self.enabled = self.interval_s > 0 and bool(self.topic)
        self.clock = clock
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.started_at = clock()
        self.seq = 0
        self.sent = 0
        self.publish_errors = 0
        self.last_publish_error: dict | None = None
        self._next = float("-inf")  # monotonic time the next heartbeat is due
        self._last_counts: tuple[float, dict] | None = None
        self._creating: threading.Thread | None = None
        self._topic_checked = 0.0
        self._closed = False
        self._errors = _LastError()
        self._watched = [logging.getLogger(name) for name in watch]
        for logger in self._watched:
            logger.addHandler(self._errors)
        self.producer: Producer | None = None  # made when heartbeats are enabled
        if self.enabled:
            self.producer = producer if producer is not None else self._producer()
            if create_topic:
                self._ensure_topic(wait=True)
            self.beat(state="starting")

    def _producer(self):
        from confluent_kafka import Producer

        from dtlive.kafka.clients import client_config

        timeout_ms = int(max(5.0, 3 * self.interval_s) * 1000)
        return Producer(client_config(self.cfg, self.bootstrap, **{
            "linger.ms": 20,
            "queue.buffering.max.messages": 1000,  # a few minutes of heartbeats; beyond that they are dropped
            "message.timeout.ms": timeout_ms,  # a heartbeat older than a few intervals is worthless
            "request.timeout.ms": min(timeout_ms, 5000),
            "socket.connection.setup.timeout.ms": 2000,
            "reconnect.backoff.max.ms": 2000,
            "enable.idempotence": False,
            "allow.auto.create.topics": False,  # never the broker's default partition count: created here
        }))

    def _ensure_topic(self, wait: bool = False) -> None:
        """Create the status topic (1 partition) if it is missing; in the background unless ``wait``."""
        from dtlive.kafka.broker import create_topics

        def create():
            try:
                create_topics(self.bootstrap, {self.topic: 1}, config=self.cfg.kafka, timeout=3)
            except Exception as exc:  # noqa: BLE001 - the broker may be away: heartbeats are counted as lost
                self._failed(f"cannot create status topic {self.topic!r}: {exc}")

        if wait:
            create()
        elif self._creating is None or not self._creating.is_alive():
            self._creating = threading.Thread(target=create, name="dtlive-status-topic", daemon=True)
            self._creating.start()

    def _failed(self, text: str) -> None:
        self.publish_errors += 1
        self.last_publish_error = {"text": text[:500], "time": self.clock()}

    def _delivered(self, err, _msg) -> None:
        if err is None:
            self.sent += 1
            return
        self._failed(f"status heartbeat not delivered: {err}")
        now = time.monotonic()
        if now - self._topic_checked > 10.0:  # a restarted broker may have lost its topics: create it again
            self._topic_checked = now
            self._ensure_topic()

    def message(self, state: str = "running", counts: Mapping[str, int] | None = None,
                errors: Mapping[str, int] | None = None, **fields) -> dict:
        """The heartbeat that would be sent now (advances the sequence number)."""
        now = self.clock()
        counts = dict(counts or {})
        rates = dict(fields.pop("rates", None) or {})
        if self._last_counts is not None and counts:
            rates = {**rates_between(self._last_counts[1], counts, now - self._last_counts[0]), **rates}
        if counts:
            self._last_counts = (now, counts)
        errors = dict(errors or {})
        if self._errors.count:
            errors["log_warnings"] = self._errors.count
        if self.publish_errors:
            errors["status_publish"] = self.publish_errors
        last_error = fields.pop("last_error", None)
        candidates = [e for e in (last_error, self._errors.last, self.last_publish_error) if e]
        last_error = max(candidates, key=lambda e: e.get("time") or 0) if candidates else None
        msg = status_message(self.service, run_id=self.run_id, state=state, seq=self.seq, now=now, host=self.host,
                             pid=self.pid, interval_s=self.interval_s, started_at=self.started_at, rates=rates,
                             counts=counts, errors=errors, last_error=last_error,
                             config_hash=self.cfg.config_hash, **fields)
        self.seq += 1
        return msg

    def beat(self, **fields) -> dict | None:
        """Publish a heartbeat now (never blocks; failures are counted); return it."""
        if not self.enabled or self._closed:
            return None
        msg = self.message(**fields)
        assert self.producer is not None, "enabled heartbeats have a producer"
        try:
            self.producer.produce(self.topic, json.dumps(msg, default=str).encode(), key=msg["instance"].encode(),
                                  headers=[(SCHEMA_HEADER, STATUS_SCHEMA.encode())], on_delivery=self._delivered)
        except BufferError:
            self._failed("status heartbeat dropped: local queue full (broker away?)")
        except Exception as exc:  # noqa: BLE001 - a heartbeat must never stop the service
            self._failed(f"status heartbeat not produced: {exc}")
        self.producer.poll(0)
        return msg

    def maybe(self, now: float | None = None, fields: Callable[[], dict] | dict | None = None, **kw) -> bool:
        """Publish a heartbeat if one is due (``now``: ``time.monotonic()``); True if one was sent.

        ``fields``: a dict, or a callable returning one (called only when due), merged with ``kw``.
        """
        if not self.enabled or self._closed:
            return False
        now = time.monotonic() if now is None else now
        if now < self._next:
            return False
        self._next = now + self.interval_s
        given = fields() if callable(fields) else dict(fields or {})
        self.beat(**{**given, **kw})
        return True

    def close(self, state: str = "stopped", timeout: float = 2.0, fields: Callable[[], dict] | dict | None = None,
              **kw) -> None:
        """Send the final heartbeat (``stopped``) and release the producer (waits at most ``timeout``).

        ``fields``/``kw`` as for :meth:`maybe`; a ``state`` among them gives way to ``state``.
        """
        for logger in self._watched:
            logger.removeHandler(self._errors)
        if not self.enabled or self._closed:
            self._closed = True
            return
        given = fields() if callable(fields) else dict(fields or {})
        self.beat(**{**given, **kw, "state": state})
        self._closed = True
        assert self.producer is not None, "enabled heartbeats have a producer"
        self.producer.flush(timeout)


# ------------------------------------------------------------------------------------------------ reading


def _rate_text(rates: Mapping[str, float]) -> str:
    return " ".join(f"{k.removesuffix('_per_s')} {v:,.1f}/s" for k, v in rates.items()) or "-"


def status_table(rows: list[dict]) -> str:
    """The rows of :meth:`ServiceHealth.rows` as a text table; stale, failing and irregular ones marked.

    >>> print(status_table([{"service": "recorder", "host": "h", "pid": 3, "state": "stale", "age_s": 9.0,
    ...                      "lag_messages": 0, "lag_s": None, "rates": {"windows_per_s": 0.5}, "errors_total": 0,
    ...                      "last_error": None, "alarm": "no heartbeat for 9 s", "irregular": False}]))
    ... # doctest: +NORMALIZE_WHITESPACE
    SERVICE   HOST  PID  STATE  AGE   LAG     RATES          ERRORS  LAST ERROR
    recorder  h     3    STALE  9.0s  0 msgs  windows 0.5/s  0       -           <- no heartbeat for 9 s
    """
    if not rows:
        return "(no service heartbeats)"
    head = ["SERVICE", "HOST", "PID", "STATE", "AGE", "LAG", "RATES", "ERRORS", "LAST ERROR"]
    table = []
    for r in rows:
        state = str(r["state"]).upper() if r["alarm"] and not r.get("irregular") else str(r["state"])
        lag = "-" if r.get("lag_messages") is None else f"{r['lag_messages']} msgs"
        if r.get("lag_s") is not None:
            lag += f" {round(r['lag_s'], 1) + 0.0:.1f}s"  # + 0.0: no "-0.0"
        err = r.get("last_error") or {}
        when = time.strftime(" (%H:%M:%S)", time.gmtime(err["time"])) if err.get("time") else ""
        table.append([str(r["service"]), str(r["host"]), str(r["pid"]), state, f"{r['age_s']:.1f}s", lag,
                      _rate_text(r.get("rates") or {}), str(r.get("errors_total", 0)),
                      (err.get("text", "")[:60] + when) if err else "-"])
    widths = [max(len(head[i]), *(len(t[i]) for t in table)) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    for r, t in zip(rows, table):
        line = "  ".join(c.ljust(w) for c, w in zip(t, widths))
        lines.append((line + (f"   <- {r['alarm']}" if r["alarm"] else "")).rstrip())
    return "\n".join(lines)


class StatusReader:
    """Reads heartbeats from the status topic: first the recent ones (``since_s``), then what is new.

    Its own assigned consumer (no group), read_uncommitted: heartbeats are plain messages.

    >>> reader = StatusReader(load_config({}), "127.0.0.1:9092", since_s=30)   # doctest: +SKIP
    >>> health = ServiceHealth(); health.add(reader.read()); health.rows()     # doctest: +SKIP
    """

    def __init__(self, cfg, bootstrap: str, since_s: float = 30.0, per_second: int = 50):
        self.cfg, self.bootstrap, self.since_s, self.per_second = cfg, bootstrap, since_s, per_second
        self.consumer: Consumer | None = None
        self.skipped = 0

    def _open(self) -> bool:
        from confluent_kafka import Consumer, TopicPartition

        from dtlive.kafka.clients import client_config, end_offsets

        if self.consumer is None:
            self.consumer = Consumer(client_config(self.cfg, self.bootstrap, **{
                "group.id": "dtlive-status-reader", "enable.auto.commit": False,
                "isolation.level": "read_uncommitted", "fetch.wait.max.ms": 50}))
        ends = end_offsets(self.consumer, self.cfg.status_topic, timeout=5)
        if not ends:
            return False
        back = max(100, int(self.since_s * self.per_second))  # at most this many heartbeats per second are read
        self.ends = {p: high for p, (_, high) in ends.items()}
        self.next = {p: max(low, high - back) for p, (low, high) in ends.items()}  # next offset to read
        self.consumer.assign([TopicPartition(self.cfg.status_topic, p, o) for p, o in self.next.items()])
        return True

    def read(self, timeout: float = 3.0) -> list[dict]:
        """Heartbeats not read yet (the first call: those of the last ``since_s``), parsed."""
        first = self.consumer is None or not hasattr(self, "next")
        if first and not self._open():
            return []
        assert self.consumer is not None, "opened above"
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs = self.consumer.consume(1000, 0.1)
            for m in msgs:
                if m.error():
                    continue
                self.next[m.partition() or 0] = (m.offset() or 0) + 1  # set on every message consumed
                try:
                    out.append(parse_status(m.value() or b""))
                except ValueError:
                    self.skipped += 1
            if first and all(self.next[p] >= e for p, e in self.ends.items()):
                break  # the recent ones are in: no wait for a consume that comes back empty
            if not msgs and not first:
                break
        if first:
            oldest = time.time() - self.since_s
            out = [m for m in out if m["time"] >= oldest]
        return out

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
