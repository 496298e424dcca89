"""A producer that outlives a broker restart: undelivered messages are sent again, nothing is dropped silently.

confluent-kafka reports a failed delivery only to a delivery callback, and an idempotent producer whose broker
restarted empty stops for good ("unknown producer id"). :class:`RetryingProducer` keeps every message whose
delivery failed (only failures are reported, so the hot path pays nothing), and when one failed or the producer
stopped, it waits for the broker, has the topics created again (with their intended partition counts, never a
broker's auto-create default) and sends the failed messages again, in order, with a new producer if needed.
It has the part of the confluent-kafka ``Producer`` interface that :func:`dtlive.kafka.emulator.emulate` uses.

>>> sent = []
>>> class FakeProducer:
...     def __init__(self, conf): self.conf = conf
...     def produce(self, topic, value, **kw): sent.append(value)
...     def poll(self, timeout=0): return 0
...     def flush(self, timeout=0): return 0
...     def __len__(self): return 0
>>> p = RetryingProducer(FakeProducer, watch_every_s=None)
>>> p.produce("dt.hits", b"2,0,5,100,7,3"); p.flush(1)
0
>>> sent, p.producer.conf["delivery.report.only.error"]
([b'2,0,5,100,7,3'], True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

log = logging.getLogger(__name__)


class BrokerGone(RuntimeError):
    """The broker did not come back within the producer's ``give_up_s``.

    >>> from confluent_kafka import KafkaException
    >>> class StoppedProducer:  # its broker restarted empty: it refuses every message
    ...     def __init__(self, conf): pass
    ...     def produce(self, topic, value, **kw): raise KafkaException("unknown producer id")
    ...     def purge(self): pass
    ...     def poll(self, timeout=0): return 0
    >>> def ensure_topics(): raise RuntimeError("no broker")
    >>> p = RetryingProducer(StoppedProducer, ensure_topics, give_up_s=0, watch_every_s=None)
    >>> p.produce("dt.hits", b"2,0,5,100,7,3")
    Traceback (most recent call last):
    ...
    dtlive.kafka.delivery.BrokerGone: the broker did not come back within 0 s (no broker); 0 messages were not delivered
    """


class RetryingProducer:
    """Wraps a confluent-kafka producer made by ``make(extra_settings)``; ``ensure()`` creates the topics.

    ``give_up_s``: how long to wait for a broker that went away before raising :class:`BrokerGone`.

    >>> from types import SimpleNamespace
    >>> class FlakyProducer:  # fails its first delivery, then delivers everything
    ...     made = 0
    ...     def __init__(self, conf):
    ...         self.conf, self.queue, self.sent = conf, [], []
    ...         FlakyProducer.made += 1
    ...     def produce(self, topic, value, key=None, **kw): self.queue.append((topic, value))
    ...     def flush(self, timeout=0):
    ...         for topic, value in self.queue:
    ...             if FlakyProducer.made == 1 and not self.sent:
    ...                 self.sent.append(None)
    ...                 msg = SimpleNamespace(topic=lambda: topic, value=lambda: value, key=lambda: None,
    ...                                       partition=lambda: 0, error=lambda: "timed out")
    ...                 self.conf["on_delivery"]("timed out", msg)
    ...             else:
    ...                 self.sent.append(value)
    ...         self.queue = []
    ...         return 0
    ...     def __len__(self): return len(self.queue)
    >>> p = RetryingProducer(FlakyProducer, watch_every_s=None)
    >>> p.produce("dt.hits", b"a"); p.flush(1)
    0
    >>> p.producer.sent, p.recoveries, p.resent
    ([None, b'a'], 1, 1)
    """

    def __init__(self, make: Callable[[dict], object], ensure: Callable[[], None] | None = None,
                 give_up_s: float = 300.0, watch_every_s: float | None = 2.0):
        self._make = make
        self._ensure = ensure
        self.give_up_s = give_up_s
        self.failed: list = []  # (message, its headers) whose delivery failed, in the order they were reported
        self.fatal: object = None  # why the producer cannot go on: its KafkaError or a message
        self.recoveries = 0
        self.resent = 0
        self.producer = self._new()
        self._watch = None
        if watch_every_s is not None:  # a replaced broker fails nothing: messages would wait out their timeout
            from dtlive.kafka.clients import ClusterWatch

            self._watch = ClusterWatch(self.producer, every_s=watch_every_s)

    def _new(self):
        return self._make({"delivery.report.only.error": True, "on_delivery": self._delivered,
                           "error_cb": self._error})

    def _delivered(self, err, msg, headers=None) -> None:
        if err is not None:  # a delivery report carries no headers: they come with the message's own callback
            self.failed.append((msg, headers))

    def _error(self, err) -> None:
        if err.fatal():
            self.fatal = err

    def produce(self, topic: str, value: bytes, **kwargs) -> None:
        from confluent_kafka import KafkaException

        if kwargs.get("headers"):
            kwargs["on_delivery"] = partial(self._delivered_headers, kwargs["headers"])
        try:
            self.producer.produce(topic, value, **kwargs)
        except KafkaException as exc:  # a stopped producer refuses new messages
            self.fatal = self.fatal or exc.args[0]
            self._recover()
            self.producer.produce(topic, value, **kwargs)

    def _delivered_headers(self, headers, err, msg) -> None:
        self._delivered(err, msg, headers)

    def poll(self, timeout: float = 0) -> int:
        n = self.producer.poll(timeout)
        if self._watch is not None and self._watch.replaced():
            self.fatal = self.fatal or "the broker was replaced and does not know this producer"
        if self.failed or self.fatal:
            self._recover()
        return n

    def flush(self, timeout: float = -1) -> int:
        """Wait until everything is delivered (sending failed messages again); returns how many are left."""
        deadline = time.monotonic() + (self.give_up_s if timeout is None or timeout < 0 else timeout)
        while True:
            left = self.producer.flush(max(0.0, deadline - time.monotonic()))
            if not (self.failed or self.fatal) or time.monotonic() >= deadline:
                return left + len(self.failed)
            self._recover()

    def __len__(self) -> int:
        return len(self.producer) + len(self.failed)

    def _recover(self) -> None:
        from confluent_kafka import KafkaException

        if self.fatal is not None:  # nothing more comes out of the old producer: take back what it still holds
            old = self.producer
            try:
                old.purge()
                old.poll(0)
            except (KafkaException, AttributeError):
                pass
        why = self.fatal or (self.failed[0][0].error() if self.failed else None)
        log.warning("delivery failed (%s): waiting for the broker, then sending %d messages again", why,
                    len(self.failed))
        deadline = time.monotonic() + self.give_up_s
        pause = 0.2
        while True:
            try:
                if self._ensure is not None:
                    self._ensure()
                if self.fatal is not None:
                    self.producer, self.fatal = self._new(), None
                    if self._watch is not None:
                        self._watch.client = self.producer
                done = 0
                try:
                    for msg, headers in self.failed:
                        part = msg.partition()
                        where = {"partition": part} if part is not None and part >= 0 else {}
                        if headers:
                            where.update(headers=headers, on_delivery=partial(self._delivered_headers, headers))
                        self.producer.produce(msg.topic(), msg.value(), key=msg.key(), **where)
                        done += 1
                finally:
                    self.failed = self.failed[done:]
                    self.resent += done
                self.recoveries += 1
                log.warning("the broker is back: %d messages sent again", done)
                return
            except (KafkaException, BufferError, RuntimeError, OSError) as exc:  # the broker is not back yet
                if time.monotonic() + pause > deadline:
                    raise BrokerGone(f"the broker did not come back within {self.give_up_s:.0f} s ({exc}); "
                                     f"{len(self.failed)} messages were not delivered") from None
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
