"""``dtlive record``: follow the results topic into the ledger and the history store, and flag bad data.

Thin service wiring: every committed window on ``dt.monitor`` is recorded in the
:class:`~dtlive.storage.ledger.Ledger` (with where its result landed) and appended to the
:class:`~dtlive.storage.history.HistoryStore`; the pure :class:`~dtlive.core.quality.QualityMonitor`
turns the stream into data-quality periods, which go to the ledger and, as
``dtlive.quality/1`` JSON, to ``dt.quality`` (the dashboard shades them). Every ``judge_windows`` windows of
a processor (a lumi block) are judged against the configured reference
(:class:`~dtlive.storage.judging.LiveJudging`): the ``dtlive.quality/2`` verdict goes to ``dt.quality`` too
(consumers tell them apart by ``schema``) and chamber status changes to the ledger; a status change raises,
escalates or clears a latched alarm (:class:`~dtlive.storage.alarm_desk.AlarmDesk`: ``dtlive.alarm/1`` on
``alarm_topic``, people told through apprise, the ledger). An orbit-counter
reset (ORBIT_CNT going backwards) closes the current detector run and opens a new one.

Recording is idempotent, so the recorder simply restarts from the results it has not
recorded yet (the ledger knows the last result offset per partition). While the ledger database
is unreachable the recorder waits (retrying with backoff) without recording further, and goes on
where it was when the database is back; meanwhile it judges the newer results (read by a consumer of
their own), so verdicts and alarms keep going out.

>>> quality_message(Period(1.7e9, 1.7e9 + 210, "data_gap", {"seconds": 210.0}))["reason"]
'data_gap'
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dtlive.config import Config
from dtlive.core.messages import QUALITY_SCHEMA, decode_message, iso_utc
from dtlive.core.quality import Period, QualityMonitor
from dtlive.core.reconcile import ResultGaps
from dtlive.kafka.clients import ClusterWatch, client_config, end_offsets, ensure_topics, producer_config
from dtlive.kafka.health import Heartbeat, Progress, partition_lag
from dtlive.service.watchdog import Watchdog

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from dtlive.storage.judging import LiveJudging

log = logging.getLogger(__name__)

RECORD_CHUNK = 25  # results recorded at a time from a batch read: a stop or the watchdog waits at most one chunk
ORBIT_RESET_TOLERANCE = 1_000_000  # orbits a window may go back (late windows) before it counts as a counter reset


def quality_message(period: Period) -> dict:
    """The ``dtlive.quality/1`` JSON message of one data-quality period.

    >>> msg = quality_message(Period(1.7e9, None, "noisy_channel", {"chamber": 2, "channel": 17}))
    >>> msg["schema"], msg["start"], msg["end"], msg["kind"], msg["automatic"]
    ('dtlive.quality/1', '2023-11-14T22:13:20.000Z', None, 'bad', True)
    """
    return {
        "schema": QUALITY_SCHEMA,
        "start": iso_utc(period.start),
        "end": iso_utc(period.end),
        "reason": period.reason,
        "kind": period.kind,
        "automatic": period.automatic,
        "detail": period.detail,
    }


class Recorder:
    """Consumes committed results; records windows, history, quality periods and detector runs.

    >>> from dtlive.config import load_config
    >>> from dtlive.storage.history import HistoryStore
    >>> from dtlive.storage.ledger import Ledger
    >>> rec = Recorder(load_config({}), "127.0.0.1:9092", ledger=Ledger("sqlite:///dq.sqlite"),
    ...                history=HistoryStore("/data/dq/history"))  # doctest: +SKIP
    >>> rec.run()  # doctest: +SKIP
    """

    def __init__(self, cfg: Config, bootstrap: str, ledger=None, history=None, quality: QualityMonitor | None = None,
                 from_beginning: bool = True):
        from confluent_kafka import Consumer, Producer, TopicPartition

        from dtlive.storage.history import HistoryStore
        from dtlive.storage.ledger import Ledger, RetryingLedger

        self.cfg = cfg
        self.bootstrap = bootstrap
        self._stop = False
        # every ledger call waits out a database outage; SIGTERM during one ends the wait (LedgerUnavailable)
        self.ledger = RetryingLedger(ledger if ledger is not None else Ledger(), stop=lambda: self._stop,
                                     on_wait=self._waiting)
        self.history = history if history is not None else HistoryStore(
            retention_days=cfg.history_retention_days or None)
        self.quality = quality or QualityMonitor()
        ensure_topics(cfg, bootstrap, [cfg.monitor_topic, cfg.quality_topic])
        self.consumer = Consumer(client_config(cfg, bootstrap, **{
            "group.id": "dtlive-recorder", "enable.auto.commit": False, "isolation.level": "read_committed",
            "fetch.wait.max.ms": 100}))
        self.producer = Producer(producer_config(cfg, bootstrap, **{"linger.ms": 5}))
        self.cluster = ClusterWatch.of(cfg, bootstrap, every_s=5.0)
        ends = end_offsets(self.consumer, cfg.monitor_topic)
        # partition -> next offset not yet recorded, on this broker (a replaced one counts offsets from 0 again)
        done = self.ledger.result_positions(cfg.monitor_topic, cluster=self.cluster.cluster_id)
        starts = {p: done.get(p, low if from_beginning else high) for p, (low, high) in ends.items()}
        self.consumer.assign([TopicPartition(cfg.monitor_topic, p, o) for p, o in starts.items()])
        self.positions = dict(starts)
        self.recorded = 0
        self.periods = 0
        self._last_orbit: int | None = None
        self._last_end: float | None = None
        self.heartbeat = Heartbeat("recorder", cfg, bootstrap, watch=("dtlive.storage.recorder", "dtlive.librdkafka"))
        self._progress = Progress()
        self.gaps = ResultGaps()  # results published but never read here
        self.watchdog = Watchdog("recorder", cfg.watchdog_s)
        self._ahead: Consumer | None = None  # the consumer that judges ahead while the database is away
        self._ahead_next = 0.0
        self._batch_from: dict[int, int] = {}  # where the batch in hand starts (judging ahead starts there)
        self.judging: LiveJudging | None = None  # lumi blocks judged against the reference (dtlive.quality/2 verdicts)
        self.alarms = None  # chamber status changes -> latched alarms (dtlive.alarm/1)
        if cfg.judge_windows > 0:
            from dtlive.storage.alarm_desk import AlarmDesk
            from dtlive.storage.judging import LiveJudging

            self.alarms = AlarmDesk(cfg, bootstrap, self.ledger, producer=self.producer,
                                    spool=Path(self.history.path) / "outbox" / "alarm-events.jsonl")
            self.judging = LiveJudging(cfg, self.ledger, self.history.path, on_changes=self.alarms.status_changes)

    def stop(self, *_):
        self._stop = True

    def _waiting(self) -> None:
        """Waiting for the ledger database is deliberate (and logged): the watchdog is told the loop is alive, and
        the results in hand and newer ones are judged meanwhile (verdicts and alarms go out)."""
        if hasattr(self, "watchdog"):
            self.watchdog.beat()
        judging = getattr(self, "judging", None)
        if judging is not None and not judging.busy and self.cfg.judge_during_outage:
            self._judge_ahead()

    def _judge_ahead(self) -> None:
        """Judge the results in hand and newer ones, read by a consumer of their own, while the database is away.

        The status changes they make wait for the database in an outbox; once it is back the results are
        recorded as usual, and judging skips the windows it judged already (so nothing is published twice).
        """
        from confluent_kafka import Consumer, TopicPartition

        now = time.monotonic()
        if now < self._ahead_next:
            return
        self._ahead_next = now + 1.0  # at most a block a second: the service's own work goes first
        if self._ahead is None:
            self._ahead = Consumer(client_config(self.cfg, self.bootstrap, **{
                "group.id": "dtlive-recorder-ahead", "enable.auto.commit": False, "isolation.level": "read_committed",
                "fetch.wait.max.ms": 100}))
            starts = {**self.positions, **self._batch_from}
            self._ahead.assign([TopicPartition(self.cfg.monitor_topic, p, o) for p, o in starts.items()])
            log.warning("recorder: judging the results ahead while the ledger database is away")
        msgs = []
        for m in self._ahead.consume(self.cfg.judge_windows, 0.1):
            if m.error():
                continue
            try:
                msgs.append(decode_message(m.value() or b""))
            except ValueError:
                continue
        if msgs:
            assert self.judging is not None  # judging ahead is for the recorder that judges
            self.judging.deferred = True
            try:
                self._judge(msgs)
            finally:
                self.judging.deferred = False

    def _end_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def handle(self, records: list[tuple[dict, int, int]]) -> None:
        """Record one batch of ``(message, partition, offset)`` (pure bookkeeping; no consuming)."""
        msgs = [m for m, _, _ in records]
        for run, first, last in self.gaps.add(msgs):
            log.warning("recorder: results %d-%d of processing run %s were published but never reached the "
                        "recorder (lost with a broker restart?)", first, last, run)
        for msg in msgs:
            self._detector_run(msg)
        self.history.append(msgs)  # idempotent, so first: the ledger's positions are where a restart resumes
        self.ledger.record_windows([(m, self.cfg.monitor_topic, p, o) for m, p, o in records],
                                   cluster=self.cluster.cluster_id)
        self._publish(self.quality.check(msgs))
        self._judge(msgs)  # while the database is away, _judge_ahead judges these and newer results
        self.recorded += len(records)

    def _judge(self, msgs: list[dict]) -> None:
        """Judge the lumi blocks these windows complete; publish their verdicts next to the periods."""
        if self.judging is None:
            return
        from dtlive.core.lumi import compact, verdict_key

        verdicts = self.judging.handle(msgs)
        for v in verdicts:
            self.producer.produce(self.cfg.quality_topic, compact(v).encode(), key=verdict_key(v))
        if verdicts:
            self.producer.flush(10)

    def _detector_run(self, msg: dict) -> None:
        from dtlive.core.messages import utc_seconds

        first, last = msg["window"]["first_orbit"], msg["window"]["last_orbit"]
        start, end = utc_seconds(msg["window"].get("start")), utc_seconds(msg["window"].get("end"))
        current = self.ledger.current_detector_run()
        reset = self._last_orbit is not None and first < self._last_orbit - ORBIT_RESET_TOLERANCE
        if current is not None and reset:
            self.ledger.close_detector_run(current["id"], end=self._last_end, last_orbit=self._last_orbit)
            current = None
        if current is None:
            self.ledger.open_detector_run(start, first, metadata={"source": self.cfg.hits_topic,
                                                                  "reason": "orbit counter reset" if reset else
                                                                  "first window seen"})
        if self._last_orbit is None or reset or last > self._last_orbit:
            self._last_orbit, self._last_end = last, end

    def _publish(self, periods: list[Period]) -> None:
        for p in periods:
            self.ledger.add_period(p.start, p.end, p.reason, automatic=p.automatic, kind=p.kind, detail=p.detail)
            self.producer.produce(self.cfg.quality_topic, json.dumps(quality_message(p)).encode(),
                                  key=p.reason.encode())
            self.periods += 1
        if periods:
            self.producer.flush(10)

    def poll(self, timeout: float = 0.5) -> int:
        """Consume and record one batch; return how many results it held."""
        from confluent_kafka import TopicPartition

        self._batch_from = dict(self.positions)
        records = []
        for m in self.consumer.consume(2000, timeout):
            if m.error():
                continue
            part, offset = m.partition() or 0, m.offset() or 0  # both set on every message consumed
            self.positions[part] = offset + 1
            try:
                records.append((decode_message(m.value() or b""), part, offset))
            except ValueError:
                log.warning("skipping a non-dtlive message at %s/%s", part, offset)
        if records:
            try:
                for i in range(0, len(records), RECORD_CHUNK):
                    if self._stop:  # stopping: the rest is read again from the ledger's positions at the next start
                        return i
                    self.handle(records[i:i + RECORD_CHUNK])
                    self.watchdog.beat()  # a long backlog is progress, not a hung call
            finally:
                self._end_ahead()
        elif self.cluster.replaced():
            self.follow_broker()
            return 0
        # the consumer's position also steps over transaction markers, which carry no message
        for tp in self.consumer.position([TopicPartition(self.cfg.monitor_topic, p) for p in self.positions]):
            if tp.offset >= 0:
                self.positions[tp.partition] = tp.offset
        return len(records)

    def follow_broker(self) -> None:
        """The broker was replaced (restarted empty): read the results topic there from its beginning."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        log.warning("recorder: the broker lost its topics (restarted?); creating them again and reading %s from "
                    "its beginning", self.cfg.monitor_topic)
        try:
            ensure_topics(self.cfg, self.bootstrap, [self.cfg.monitor_topic, self.cfg.quality_topic]
                          + ([self.cfg.alarm_topic] if self.alarms is not None else []))
        except Exception as exc:  # noqa: BLE001 - the processor creates the results topic too
            log.warning("recorder: could not create the topics yet: %s", exc)
        self.consumer.assign([TopicPartition(self.cfg.monitor_topic, p, OFFSET_BEGINNING) for p in self.positions])
        self.positions = {p: 0 for p in self.positions}

    def run(self, until_end: bool = False, max_seconds: float | None = None,
            on_tick: Callable[[Recorder], None] | None = None) -> Recorder:
        """Record until stopped (``until_end``: until the results present at start are recorded, then flush)."""
        targets = {p: high for p, (_, high) in end_offsets(self.consumer, self.cfg.monitor_topic).items()} \
            if until_end else None
        if targets is not None:  # end_offsets re-assigned the consumer: go back to where we were
            from confluent_kafka import TopicPartition

            self.consumer.assign([TopicPartition(self.cfg.monitor_topic, p, o) for p, o in self.positions.items()])
        started = time.monotonic()
        self.watchdog.start()
        while not self._stop:
            self.watchdog.beat()
            n = self.poll()
            if self.alarms is not None:
                self.alarms.poll()  # acknowledgements
            self.heartbeat.maybe(None, self.health)
            if on_tick:
                on_tick(self)
            if targets is not None and all(self.positions.get(p, 0) >= t for p, t in targets.items()):
                break
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                break
            if n == 0 and targets is not None and time.monotonic() - started > 60:
                log.warning("results up to %s are not readable yet (open transaction?); stopping", targets)
                break
        if until_end:
            self._publish(self.quality.flush())
        return self

    def health(self) -> dict:
        """Heartbeat fields (:mod:`dtlive.kafka.health`): state, lag behind the results topic, running totals."""
        from confluent_kafka import TopicPartition

        self.producer.poll(0)  # serves its delivery reports and librdkafka log lines
        high = {p: self.consumer.get_watermark_offsets(TopicPartition(self.cfg.monitor_topic, p), cached=True)[1]
                for p in self.positions}
        lag = partition_lag({p: max(h, self.positions[p]) for p, h in high.items()}, self.positions,
                            topic=self.cfg.monitor_topic)
        busy = lag["messages"] or self.recorded > getattr(self, "_recorded_seen", 0)
        self._recorded_seen = self.recorded
        stalled = self._progress.stalled_s(sum(self.positions.values()), lag["messages"], time.monotonic())
        self.watchdog.check(stalled, f"{lag['messages']} results waiting on {self.cfg.monitor_topic}")
        return {"state": "degraded" if stalled > 10 else "running" if busy else "idle", "lag": lag,
                "counts": {"windows": self.recorded, "periods": self.periods, "results_lost": self.gaps.lost,
                           "verdicts": self.judging.verdicts if self.judging else 0,
                           "alarms": self.alarms.raised if self.alarms else 0}}

    def close(self) -> None:
        self._end_ahead()
        if self.judging is not None:  # a database still away: the results read again next time make them again
            self.judging.close(timeout_s=1.0)
        if self.alarms is not None:  # within the 5 s a service has to stop
            self.alarms.close(timeout_s=1.0)
        self.watchdog.close()
        self.heartbeat.close(fields=self.health)
        self.consumer.close()
        self.producer.flush(10)
