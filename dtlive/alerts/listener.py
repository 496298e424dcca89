"""``dtlive alerts listen``: GCN-style notices in, canned analyses started, results out on ``dt.analyses``.

Thin service wiring, following the gcn-kafka conventions: ``KAFKA_*`` settings, a stable
consumer group (``dtlive-alerts``), topic patterns, offsets committed after a notice is handled.
Each notice is parsed (:mod:`dtlive.alerts.notices`), decided on by the rules
(:mod:`dtlive.alerts.rules`), and its analyses run in time-limited worker processes
(:mod:`dtlive.alerts.workers`). Every step is appended to the ledger's task history:
``received``, ``matched`` / ``ignored``, ``queued``, ``running``, ``succeeded`` / ``failed`` /
``timed_out`` / ``cancelled``, ``published`` (and ``retracted``). An analysis that failed or timed out is
published too, as status ``error`` with the reason, so the shift sees it where results appear (its state stays
``failed`` / ``timed_out``). Broken notices are dead-lettered on ``dt.alerts.rejected`` with a reason and never stop
the listener.

The ledger is also what a restarted listener resumes from: a notice's offset is committed only
after its states are written (while the database is unreachable the listener waits, retrying),
analyses still queued or running when the listener died are queued again (their history says
so), and a notice read again after a crash is not run twice (its analyses are named after its
topic, partition and offset).

>>> subscription(["gcn.notices.*", "igwn.gwalert"])
['^gcn\\\\.notices\\\\..*', 'igwn.gwalert']
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from pathlib import Path

from dtlive import __version__
from dtlive.alerts.jobs import failure_record
from dtlive.alerts.notices import Alert, NoticeError, alert_to_dict, parse_notice
from dtlive.alerts.workers import WorkerPool
from dtlive.config import Config
from dtlive.core.messages import ANALYSIS_SCHEMA
from dtlive.kafka.clients import ClusterWatch, client_config, ensure_topics, producer_config
from dtlive.kafka.deadletter import dead_letter
from dtlive.kafka.health import Heartbeat, partition_lag
from dtlive.service.watchdog import Watchdog

log = logging.getLogger(__name__)


def subscription(patterns: list[str]) -> list[str]:
    """Topic patterns (``*`` wildcards) as librdkafka subscriptions (regexes start with ``^``).

    >>> subscription(["gcn.notices.swift.*", "igwn.gwalert", "gcn.classic.voevent.*"])
    ['^gcn\\\\.notices\\\\.swift\\\\..*', 'igwn.gwalert', '^gcn\\\\.classic\\\\.voevent\\\\..*']
    """
    out = []
    for p in patterns:
        out.append("^" + p.replace(".", "\\.").replace("*", ".*") if "*" in p else p)
    return out


class AlertListener:
    """Consumes notices, applies the rules, runs analyses in workers and publishes their results.

    >>> from dtlive.config import load_config
    >>> listener = AlertListener(load_config({}), "127.0.0.1:9092", workers=2)  # doctest: +SKIP
    >>> listener.run()  # consumes notices until stopped  # doctest: +SKIP
    """

    def __init__(self, cfg: Config, bootstrap: str, ledger=None, rules=None, run_tests: bool = False,
                 workers: int = 2, timeout_s: float = 120.0, artifacts_dir: str | Path | None = None,
                 history_path: str | None = None, ledger_url: str | None = None, pool: WorkerPool | None = None):
        from confluent_kafka import Producer

        from dtlive.alerts.rules import AlertDecider, default_rules
        from dtlive.storage.ledger import Ledger, RetryingLedger, default_url

        self.cfg = cfg
        self.bootstrap = bootstrap
        self._stop = False
        # every state is written before the notice's offset is committed; an outage is waited out (SIGTERM ends it)
        self.ledger = RetryingLedger(ledger if ledger is not None else Ledger(ledger_url), stop=lambda: self._stop,
                                     on_wait=self._waiting)
        self.ledger_url = ledger_url or (str(self.ledger.engine.url.render_as_string(hide_password=False))
                                         if ledger is not None else default_url())
        self.history_path = history_path
        self.decider = AlertDecider(rules if rules is not None else default_rules())
        self.run_tests = run_tests
        self.timeout_s = timeout_s
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir else _default_artifacts()
        ensure_topics(cfg, bootstrap, [cfg.analyses_topic, cfg.alerts_rejected_topic])
        self.consumer = self._subscribed_consumer()
        self.producer = Producer(producer_config(cfg, bootstrap, **{"linger.ms": 5, "message.timeout.ms": 8000}))
        self.cluster = ClusterWatch.of(cfg, bootstrap, every_s=5.0)
        self.pool = pool or WorkerPool(workers)
        self.counts: Counter = Counter()
        self.jobs: dict[str, dict] = {}  # job id -> {"alert": dict, "analysis": str, "state": str}
        self.by_alert: dict[tuple[str, bool], list[str]] = defaultdict(list)
        self._runs = 0
        self.heartbeat = Heartbeat("alerts", cfg, bootstrap, watch=("dtlive.alerts", "dtlive.librdkafka"))
        self._received = self._received_notices()
        self._resume()
        self.watchdog = Watchdog("alerts", cfg.watchdog_s)  # the loop must turn (analyses run in workers)
        self._error_logged = 0.0

    # --- group membership: librdkafka rejoins by itself on the next consume; say so, once per event ----------
    def _assigned(self, consumer, partitions) -> None:
        if self.counts["assignment_lost"]:
            log.warning("alert listener: rejoined group %r, %d partition(s) assigned", self.cfg.alerts_group_id,
                        len(partitions))

    def _lost(self, consumer, partitions) -> None:
        self.counts["assignment_lost"] += 1
        log.warning("alert listener: lost its %d partition(s) of group %r (the broker did not hear from it within "
                    "session.timeout.ms, or it did not poll within max.poll.interval.ms); rejoining",
                    len(partitions), self.cfg.alerts_group_id)

    def _consumer_error(self, err) -> None:
        self.counts["consumer_errors"] += 1
        if time.monotonic() - self._error_logged > 10:  # one line per 10 s, not one per poll
            self._error_logged = time.monotonic()
            log.warning("alert listener: consumer error: %s (%d so far)", err.str(), self.counts["consumer_errors"])

    def stop(self, *_):
        self._stop = True

    def _waiting(self) -> None:
        """Waiting for the ledger database is deliberate (and logged): the watchdog is told the loop is alive."""
        if hasattr(self, "watchdog"):
            self.watchdog.beat()

    def _subscribed_consumer(self):
        from confluent_kafka import Consumer

        consumer = Consumer(client_config(self.cfg, self.bootstrap, **{
            "group.id": self.cfg.alerts_group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "topic.metadata.refresh.interval.ms": 2000, "fetch.wait.max.ms": 50}))
        consumer.subscribe(subscription(self.cfg.alert_topic_patterns()), on_assign=self._assigned, on_lost=self._lost)
        return consumer

    def follow_broker(self) -> None:
        """The broker was replaced (restarted empty): its topics are created again.

        The consumer stays: librdkafka joins the group on the new broker by itself, finds no committed offsets
        there and reads every notice from the start. A new consumer would race the old one's join, and a
        member that leaves while joining can stay the group's leader on the embedded broker, so that no other
        member is ever given the partitions.
        """
        log.warning("alerts: the broker lost its topics (restarted?); creating %s and %s again; the group is "
                    "joined anew there", self.cfg.analyses_topic, self.cfg.alerts_rejected_topic)
        try:
            ensure_topics(self.cfg, self.bootstrap, [self.cfg.analyses_topic, self.cfg.alerts_rejected_topic])
        except Exception as exc:  # noqa: BLE001 - results are sent with their topic created again anyway
            log.warning("alerts: could not create the topics yet: %s", exc)

    # --- notices in --------------------------------------------------------------------------------------
    def handle(self, value: bytes | None, topic: str, partition: int = 0, offset: int = -1) -> Alert | None:
        """One notice: parse, decide, queue its analyses (no consuming: usable from tests and notebooks)."""
        self.counts["notices"] += 1
        try:
            alert = parse_notice(value or b"", topic)
        except NoticeError as exc:
            self._reject(value or b"", topic, partition, offset, exc)
            return None
        task = f"alert:{alert.id}#{alert.record_number}"
        # read again after a crash: the same notice at the same place (after a broker restart loses its topics,
        # another notice may come at a place seen before)
        again = offset >= 0 and self._received.get((topic, partition, offset)) == task
        if again:
            self.counts["redelivered"] += 1
        else:
            self._state(task, "received", {"topic": topic, "partition": partition, "offset": offset,
                                           "type": alert.type, "tense": alert.tense,
                                           "group": self.cfg.alerts_group_id}, kind="alert")
            if offset >= 0:
                self._received[(topic, partition, offset)] = task
        decision = self.decider.decide(alert, run_tests=self.run_tests)
        if again and decision.action != "run":
            return alert  # its states are written already
        if decision.action == "cancel" and not again:
            self._state(task, "matched", {"action": "cancel", "reason": decision.reason}, kind="alert")
            self.retract(alert)
            return alert
        if decision.action != "run":
            self.counts[decision.action] += 1
            self._state(task, "ignored", {"action": decision.action, "reason": decision.reason}, kind="alert")
            return alert
        if not again:
            self._state(task, "matched", {"reason": decision.reason,
                                          "analyses": [j.analysis for j in decision.jobs]}, kind="alert")
        self._runs += 1
        # unique even when an alert without record numbers (IGWN) is updated and runs again; the same when a
        # notice is read again after a crash, so its analyses are not run twice
        where = f"{topic}:{partition}:{offset}" if offset >= 0 else f"run{self._runs}"
        for job in decision.jobs:
            job_id = f"{alert.id}#{alert.record_number}:{job.analysis}:{where}"
            if again and self.ledger.current_state(job_id) is not None:
                continue  # queued before the crash: resumed at start if it had not finished
            out_dir = self.artifacts_dir / _safe(alert.id) / f"{alert.record_number}-{job.analysis}"
            self._queue(job_id, alert_to_dict(alert), job.analysis, job.rule, dict(job.params or {}), str(out_dir))
        self.counts["alerts_run"] += 1
        return alert

    def _queue(self, job_id: str, alert: dict, analysis: str, rule: str | None, params: dict, out_dir: str,
               resumed_from: str | None = None) -> None:
        """Record an analysis as queued (with all it needs to be run again after a restart) and submit it."""
        info = {"alert": alert, "analysis": analysis, "state": "queued", "rule": rule}
        self.jobs[job_id] = info
        self.by_alert[(alert["id"], bool(alert.get("is_test")))].append(job_id)
        detail = {"rule": rule, "params": params, "analysis": analysis, "alert": alert, "out_dir": out_dir,
                  "group": self.cfg.alerts_group_id}
        if resumed_from is not None:
            detail["resumed"] = f"the listener restarted while it was {resumed_from}"
        self._state(job_id, "queued", detail, kind="analysis")
        self.pool.submit(job_id, "dtlive.alerts.jobs:run_job",
                         (analysis, alert, params, self.history_path, self.ledger_url, out_dir),
                         timeout_s=self.timeout_s)

    # --- resuming after a restart ------------------------------------------------------------------------------
    def _received_notices(self) -> dict[tuple[str, int, int], str]:
        """(topic, partition, offset) -> alert task of every notice this listener's group recorded as received."""
        return {(d["topic"], int(d["partition"]), int(d["offset"])): d["task_id"]
                for d in self._details("alert", "received") if isinstance(d.get("offset"), int) and d["offset"] >= 0}

    def _details(self, kind: str, state: str) -> list[dict]:
        from sqlalchemy import select

        from dtlive.storage.ledger import TaskState

        q = select(TaskState.task_id, TaskState.detail).where(TaskState.task_kind == kind, TaskState.state == state)
        with self.ledger.session() as s:
            rows = s.execute(q).all()
        return [dict(d, task_id=t) for t, d in rows
                if isinstance(d, dict) and d.get("group") == self.cfg.alerts_group_id]

    def _resume(self) -> None:
        """Queue again this group's analyses that were queued, running, or succeeded but not published."""
        unfinished = {t["task_id"]: t["state"] for t in self.ledger.tasks(kind="analysis")
                      if t["state"] in ("queued", "running", "succeeded")}
        if not unfinished:
            return
        queued = {d["task_id"]: d for d in self._details("analysis", "queued")
                  if d["task_id"] in unfinished and "alert" in d}
        published = self._published_job_ids() if any(unfinished[j] == "succeeded" for j in queued) else set()
        for job_id, d in queued.items():
            if job_id in published:  # its result went out just before the listener died
                self._state(job_id, "published", {"topic": self.cfg.analyses_topic, "found_after_restart": True},
                            kind="analysis")
                continue
            self._queue(job_id, d["alert"], d["analysis"], d.get("rule"), d.get("params") or {}, d["out_dir"],
                        resumed_from=unfinished[job_id])
            self.counts["resumed"] += 1
        if self.counts["resumed"]:
            log.warning("resumed %d analyses left unfinished by a previous listener", self.counts["resumed"])

    def _published_job_ids(self, timeout_s: float = 30.0) -> set[str]:
        """Keys (job ids) of the results on the analyses topic (read once, from the beginning, bounded in time)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer(client_config(self.cfg, self.bootstrap, **{"group.id": f"{self.cfg.alerts_group_id}-resume",
                                                                "enable.auto.commit": False}))
        try:
            meta = c.list_topics(self.cfg.analyses_topic, timeout=10).topics.get(self.cfg.analyses_topic)
            ends = {p: c.get_watermark_offsets(TopicPartition(self.cfg.analyses_topic, p), timeout=10)
                    for p in (meta.partitions if meta is not None else {})}
            todo = {p: high for p, (low, high) in ends.items() if high > low}
            c.assign([TopicPartition(self.cfg.analyses_topic, p, ends[p][0]) for p in todo])
            keys: set[str] = set()
            deadline = time.monotonic() + timeout_s
            while todo and time.monotonic() < deadline:
                for m in c.consume(500, 0.5):
                    if m.error():
                        continue
                    if key := m.key():
                        keys.add(key.decode(errors="replace"))
                    if (m.offset() or 0) + 1 >= todo.get(m.partition() or 0, 0):  # both set on messages consumed
                        todo.pop(m.partition() or 0, None)
            return keys
        finally:
            c.close()

    def _reject(self, value: bytes, topic: str, partition: int, offset: int, exc: NoticeError) -> None:
        self.counts["rejected"] += 1
        self.counts[f"rejected.{exc.reason}"] += 1
        letter = dead_letter(value, exc.reason, str(exc), topic, partition, offset, self.cfg.dead_letter_max_bytes)
        error = self._send(self.cfg.alerts_rejected_topic, letter.value, headers=letter.headers)
        if error is not None:
            self.counts["dead_letter_failed"] += 1
            log.error("a rejected notice (%s/%s/%s) could not be dead-lettered: %s", topic, partition, offset, error)
        self._state(f"notice:{topic}:{partition}:{offset}", "rejected", {"reason": exc.reason, "detail": str(exc)},
                    kind="notice")

    def retract(self, alert: Alert) -> None:
        """Cancel pending analyses of a retracted alert; mark finished results retracted (and say so)."""
        key = (alert.id, alert.is_test)  # a test retraction never touches the real alert's results
        pending = [j for j in self.by_alert.get(key, []) if self.jobs[j]["state"] in ("queued", "running")]
        for outcome in self.pool.cancel(pending):
            self._finish(outcome.job_id, "cancelled", {"reason": "alert retracted"})
        for job_id in self.by_alert.get(key, []):
            if self.jobs[job_id]["state"] == "published":
                self.jobs[job_id]["state"] = "retracted"
                self._state(job_id, "retracted", {"reason": "alert retracted"}, kind="analysis")
                self._publish(job_id, {"retracted": True})
        self.counts["retractions"] += 1

    # --- results out ------------------------------------------------------------------------------------------
    def collect(self, timeout: float = 0.0) -> int:
        """Record worker outcomes and publish successful results; return how many jobs ended."""
        for job_id in self.pool.take_started():
            if job_id in self.jobs and self.jobs[job_id]["state"] == "queued":
                self.jobs[job_id]["state"] = "running"
                self._state(job_id, "running", None, kind="analysis")
        outcomes = self.pool.poll(timeout)
        for o in outcomes:
            if o.job_id not in self.jobs:
                continue
            detail: dict[str, float | str] = {"seconds": round(o.seconds, 3)}
            if o.error:
                detail["error"] = o.error[-2000:]
            self._finish(o.job_id, o.state, detail)
            if o.state == "succeeded":
                self._publish(o.job_id, o.value)
            elif o.state in ("failed", "timed_out"):  # the shift sees it failed, and why, where results appear
                self._publish(o.job_id, failure_record(self.jobs[o.job_id]["analysis"], o.state, o.error),
                              marks_published=False)
        return len(outcomes)

    def _finish(self, job_id: str, state: str, detail: dict | None) -> None:
        self.jobs[job_id]["state"] = state
        self.counts[f"analyses.{state}"] += 1
        self._state(job_id, state, detail, kind="analysis")

    def _publish(self, job_id: str, result: dict, marks_published: bool = True) -> None:
        """Publish a job's record on the analyses topic; a result (not a retraction or a failure) marks it published."""
        info = self.jobs[job_id]
        alert = info["alert"]
        msg = {"schema": ANALYSIS_SCHEMA, "alert_id": alert["id"], "record_number": alert["record_number"],
               "mission": alert.get("mission"), "trigger_time": alert.get("trigger_time_iso"),
               "analysis": info["analysis"], "rule": info.get("rule"), "dtlive_version": __version__,
               "published_at": time.time(), **result}
        error = self._send(self.cfg.analyses_topic, json.dumps(msg, default=str).encode(), key=job_id.encode())
        if error is not None:
            self.counts["publish_failed"] += 1
            log.error("the result of %s could not be published on %s: %s", job_id, self.cfg.analyses_topic, error)
            self._state(job_id, "publish_failed", {"topic": self.cfg.analyses_topic, "error": error}, kind="analysis")
        elif marks_published and not result.get("retracted"):
            info["state"] = "published"
            self._state(job_id, "published", {"topic": self.cfg.analyses_topic}, kind="analysis")

    def _send(self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None,
              attempts: int = 3) -> str | None:
        """Produce one message and wait until the broker has it; returns None, or why it could not be delivered.

        A topic the broker does not have (it restarted empty) is created again between attempts.
        """
        error = "not tried"
        reports: list[object] = []  # the delivery report's error (None: delivered)
        for _ in range(attempts):
            reports.clear()
            self.producer.produce(topic, value, key=key, headers=headers,
                                  on_delivery=lambda err, _msg: reports.append(err))
            self.producer.flush(10)
            if reports and reports[0] is None:
                return None
            error = str(reports[0]) if reports else "no delivery report within 10 s"
            log.warning("could not deliver to %s (%s); creating the topic again", topic, error)
            try:
                ensure_topics(self.cfg, self.bootstrap, [topic])
            except Exception as exc:  # noqa: BLE001 - the broker may still be away: the next attempt tells
                error = f"{error}; creating the topic: {exc}"
        return error

    def _state(self, task: str, state: str, detail, kind: str) -> None:
        self.ledger.append_state(task, state, detail=detail, task_kind=kind)

    # --- the loop -----------------------------------------------------------------------------------------
    def poll(self, timeout: float = 0.2) -> int:
        """Handle a batch of notices, then commit their offsets; collect finished analyses."""
        msgs = self.consumer.consume(1, timeout)  # wake on the first notice, then take what else is there
        if msgs:
            msgs += self.consumer.consume(100, 0)
        handled = 0
        for m in msgs:
            if m.error():
                self._consumer_error(m.error())
                continue
            self.handle(m.value(), m.topic(), m.partition(), m.offset())
            handled += 1
        if handled:
            from confluent_kafka import KafkaException

            try:
                self.consumer.commit(asynchronous=False)  # after handling: a crash re-reads, duplicates run once
            except KafkaException as exc:  # membership lost meanwhile: the rejoined member reads them again
                self.counts["commit_failed"] += 1
                log.warning("alert listener: offsets of %d notice(s) not committed (%s); they will be read again "
                            "after the group is rejoined", handled, exc.args[0].str())
        elif self.cluster.replaced():
            self.follow_broker()
        self.collect(0.0)
        return handled

    def run(self, max_seconds: float | None = None, until=None) -> AlertListener:
        """Listen until stopped, ``max_seconds``, or ``until(listener)`` is true."""
        started = time.monotonic()
        self.watchdog.start()
        while not self._stop:
            self.watchdog.beat()
            self.poll()
            self.heartbeat.maybe(None, self.health)
            if until is not None and until(self):
                break
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                break
        return self

    def health(self) -> dict:
        """Heartbeat fields (:mod:`dtlive.kafka.health`): state, lag of the assigned notice partitions, totals,
        errors."""
        self.producer.poll(0)  # serves its delivery reports and librdkafka log lines
        high: dict[str, int] = {}
        positions: dict[str, int] = {}
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                if tp.offset < 0:  # nothing read there yet
                    continue
                key = f"{tp.topic}/{tp.partition}"
                high[key] = max(self.consumer.get_watermark_offsets(tp, cached=True)[1], tp.offset)
                positions[key] = tp.offset
        except Exception:  # noqa: BLE001 - no assignment yet (group joining) or the broker is away
            pass
        counts = {k: v for k, v in self.counts.items() if "." not in k}
        errors = {k: v for k, v in self.counts.items() if k in ("rejected", "analyses.failed", "analyses.timed_out")}
        running = sum(1 for j in self.jobs.values() if j["state"] in ("queued", "running"))
        return {"state": "running" if running or high and any(high[k] > positions[k] for k in high) else "idle",
                "lag": partition_lag(high, positions) if high else None, "counts": counts, "errors": errors,
                "detail": {"analyses_pending": running}}

    def close(self) -> None:
        self.watchdog.close()
        self.heartbeat.close(fields=self.health)
        self.consumer.close()
        self.producer.flush(10)
        self.pool.close()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _default_artifacts() -> Path:
    import os

    import platformdirs

    return Path(os.environ.get("DTLIVE_ARTIFACTS") or Path(platformdirs.user_data_dir("dtlive")) / "analyses")
