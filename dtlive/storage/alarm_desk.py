"""The recorder's alarm desk: chamber status changes -> latched alarms on the alarm topic, to people, in the ledger.

:class:`AlarmDesk` keeps the board of open alarms (:mod:`dtlive.core.alarms`, the pure state machine) and, for
every status change the live judging finds (:class:`dtlive.storage.judging.LiveJudging` calls
:meth:`AlarmDesk.status_changes` before it writes the change to the ledger):

1. publishes the events as ``dtlive.alarm/1`` on ``alarm_topic`` at once (never waiting for the database);
2. hands the notifying ones to :class:`dtlive.service.notify.Notifier` (apprise URLs of ``alarm_notify``, at most
   ``alarm_notify_limit`` per ``alarm_notify_minutes``);
3. appends them to the ledger through an :class:`~dtlive.storage.ledger.Outbox`, which waits out a database
   outage on its own thread.

Acknowledgements come from the alarm topic (``dtlive alarms ack``, the dashboard's alarm panel):
:meth:`AlarmDesk.poll` reads them, applies them to the board and appends them to the ledger. A restarted desk
takes the board from the ledger and reads the topic from its beginning (an acknowledgement already applied
changes nothing), so acknowledgements given while it was down count.

>>> from dtlive.config import load_config
>>> from dtlive.storage.ledger import Ledger
>>> desk = AlarmDesk(load_config({}, env={}), "127.0.0.1:9092", Ledger())  # doctest: +SKIP
>>> desk.status_changes([{"processor": "p", "chamber": 2, "previous": 0, "status": 4}])  # doctest: +SKIP
[{'schema': 'dtlive.alarm/1', 'event': 'raised', ...}]
"""

from __future__ import annotations

import logging
import os
import time

from dtlive.config import Config
from dtlive.core.alarms import on_ack, on_status

log = logging.getLogger(__name__)


def _write(ledger, events: list[dict]) -> int:
    return ledger.record_alarm_events(events)


class AlarmDesk:
    """Alarms from status changes, acknowledgements from the alarm topic (see the module docstring).

    ``ledger``: a :class:`~dtlive.storage.ledger.Ledger` or ``RetryingLedger`` (the board is read from it once, at
    start); ``producer``: a confluent-kafka producer to share (the recorder's), else one of its own; ``spool``: the
    file where events the ledger database was still away for at :meth:`close` wait for the next start.

    >>> from dtlive.config import load_config
    >>> from dtlive.storage.ledger import Ledger
    >>> desk = AlarmDesk(load_config({}, env={}), "127.0.0.1:9092", Ledger())  # doctest: +SKIP
    >>> desk.poll(timeout=1.0)  # acknowledgements read                        # doctest: +SKIP
    0
    >>> desk.close()                                                           # doctest: +SKIP
    """

    def __init__(self, cfg: Config, bootstrap: str, ledger, producer=None, spool: str | os.PathLike | None = None):
        from confluent_kafka import Consumer, TopicPartition

        from dtlive.kafka.alarms import AlarmPublisher
        from dtlive.kafka.clients import client_config, end_offsets
        from dtlive.service.notify import Notifier
        from dtlive.storage.ledger import Outbox

        self.cfg = cfg
        self.publisher = AlarmPublisher(cfg, bootstrap, producer=producer)
        self.notifier = Notifier(cfg.alarm_notify, cfg.alarm_notify_limit, cfg.alarm_notify_minutes)
        self.outbox = Outbox(ledger, _write, name="alarm events", spool=spool)
        if self.outbox.unspooled:  # events a stopped desk could not write: in the ledger before the board is read
            self.outbox.drain()
        self.board = ledger.alarm_board()
        self.raised = 0
        self.acks = 0
        self.consumer = Consumer(client_config(cfg, bootstrap, **{
            "group.id": "dtlive-recorder-alarms", "enable.auto.commit": False, "fetch.wait.max.ms": 100}))
        ends = end_offsets(self.consumer, cfg.alarm_topic)
        self.consumer.assign([TopicPartition(cfg.alarm_topic, p, low) for p, (low, _) in ends.items()])
        started = time.monotonic()
        while self.consumer.assignment() and time.monotonic() - started < 10:  # acknowledgements given meanwhile
            if not self.poll(timeout=0.2) and self._caught_up(ends):
                break

    def _caught_up(self, ends: dict[int, tuple[int, int]]) -> bool:
        from confluent_kafka import TopicPartition

        positions = self.consumer.position([TopicPartition(self.cfg.alarm_topic, p) for p in ends])
        return all(tp.offset >= ends[tp.partition][1] or ends[tp.partition][1] == ends[tp.partition][0]
                   for tp in positions)

    def status_changes(self, changes: list[dict]) -> list[dict]:
        """Alarm events of these status changes: published, notified, queued for the ledger; returned."""
        events: list[dict] = []
        for change in changes:
            self.board, new = on_status(self.board, change, now=time.time())
            events += new
        self._send(events)
        self.raised += sum(e["event"] == "raised" for e in events)
        return events

    def _send(self, events: list[dict]) -> None:
        if not events:
            return
        confirmed = self.publisher.publish(events)
        if confirmed < len(events):
            log.warning("alarm events: %d of %d not confirmed by the broker", len(events) - confirmed, len(events))
        for e in events:
            self.notifier.send(e)
            log.log(logging.WARNING if e["notify"] else logging.INFO, "alarm %s: chamber %s %s (%s, status %s)",
                    e["alarm_id"], e["chamber"], e["event"], e["severity"], e["status"])
        self.outbox.put(events)

    def poll(self, timeout: float = 0.0) -> int:
        """Apply the acknowledgements that came on the alarm topic; return how many were read."""
        from dtlive.kafka.alarms import parse_alarm

        acks = []
        for m in self.consumer.consume(500, timeout):
            if m.error():
                continue
            try:
                msg = parse_alarm(m.value() or b"")
            except ValueError as exc:
                log.warning("alarm topic: skipping a record that is no alarm event: %s", exc)
                continue
            if msg["event"] != "acknowledged":
                continue
            acks.append(msg)
            self.board, applied = on_ack(self.board, msg["alarm_id"], msg["by"], msg.get("note"), msg["time"],
                                         event_id=msg["event_id"])
            if applied:
                log.warning("alarm %s acknowledged by %s%s", msg["alarm_id"], msg["by"],
                            f": {msg['note']}" if msg.get("note") else "")
        if acks:
            self.acks += len(acks)
            self.outbox.put(acks)
        self.notifier.tick()
        return len(acks)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what waits for the ledger and send what waits for people (each waiting at most ``timeout_s``)."""
        self.outbox.close(timeout_s)
        self.notifier.close(timeout_s)
        self.consumer.close()
