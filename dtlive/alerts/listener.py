"""``dtlive alerts listen``: GCN-style notices in, canned analyses started, results out on ``dt.analyses``.

Thin service wiring, following the gcn-kafka conventions: ``KAFKA_*`` settings, a stable
consumer group (``dtlive-alerts``), topic patterns, offsets committed after a notice is handled.
Each notice is parsed (:mod:`dtlive.alerts.notices`), decided on by the rules
(:mod:`dtlive.alerts.rules`), and its analyses run in time-limited worker processes
(:mod:`dtlive.alerts.workers`). Every step is appended to the ledger's task history:
``received``, ``matched`` / ``ignored``, ``queued``, ``running``, ``succeeded`` / ``failed`` /
``timed_out`` / ``cancelled``, ``published`` (and ``retracted``). Broken notices are
dead-lettered on ``dt.alerts.rejected`` with a reason and never stop the listener.

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
from dtlive.alerts.notices import Alert, NoticeError, alert_from_dict, alert_to_dict, parse_notice
from dtlive.alerts.workers import WorkerPool
from dtlive.config import Config
from dtlive.kafka import client_config, ensure_topics

log = logging.getLogger(__name__)

ANALYSIS_SCHEMA = "dtlive.analysis/1"


def subscription(patterns: list[str]) -> list[str]:
    """Topic patterns (``*`` wildcards) as librdkafka subscriptions (regexes start with ``^``)."""
    out = []
    for p in patterns:
        out.append("^" + p.replace(".", "\\.").replace("*", ".*") if "*" in p else p)
    return out


def run_job(analysis: str, alert: dict, params: dict, history_path: str | None, ledger_url: str | None,
            artifacts_dir: str) -> dict:
    """Worker-side entry: run one canned analysis, save its Dataset as NetCDF, return a JSON-ready record."""
    from dtlive.alerts.analyses import AnalysisContext, get_analysis
    from dtlive.history import HistoryStore
    from dtlive.ledger import Ledger

    fn = get_analysis(analysis)
    ctx = AnalysisContext(history=HistoryStore(history_path), ledger=Ledger(ledger_url),
                          artifacts_dir=Path(artifacts_dir), params=params, now=time.time())
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    result = fn(alert_from_dict(alert), ctx)
    artifacts = [str(a) for a in result.artifacts]
    if result.data is not None:
        path = ctx.artifacts_dir / f"{analysis}.nc"
        data = result.data.copy()
        data.attrs["provenance"] = json.dumps(result.provenance, default=str)
        data.to_netcdf(path)
        artifacts.append(str(path))
    return {"name": result.name, "version": result.version, "summary": result.summary,
            "provenance": result.provenance, "artifacts": artifacts}


class AlertListener:
    """Consumes notices, applies the rules, runs analyses in workers and publishes their results."""

    def __init__(self, cfg: Config, bootstrap: str, ledger=None, rules=None, run_tests: bool = False,
                 workers: int = 2, timeout_s: float = 120.0, artifacts_dir: str | Path | None = None,
                 history_path: str | None = None, ledger_url: str | None = None, pool: WorkerPool | None = None):
        from confluent_kafka import Consumer, Producer

        from dtlive.alerts.rules import AlertDecider, default_rules
        from dtlive.ledger import Ledger, default_url

        self.cfg = cfg
        self.ledger = ledger if ledger is not None else Ledger(ledger_url)
        self.ledger_url = ledger_url or (str(self.ledger.engine.url.render_as_string(hide_password=False))
                                         if ledger is not None else default_url())
        self.history_path = history_path
        self.decider = AlertDecider(rules if rules is not None else default_rules())
        self.run_tests = run_tests
        self.timeout_s = timeout_s
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir else _default_artifacts()
        ensure_topics(cfg, bootstrap, [cfg.analyses_topic, cfg.alerts_rejected_topic])
        self.consumer = Consumer(client_config(cfg, bootstrap, **{
            "group.id": cfg.alerts_group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "topic.metadata.refresh.interval.ms": 2000, "fetch.wait.max.ms": 50}))
        self.consumer.subscribe(subscription(cfg.alert_topic_patterns()), on_assign=self._assigned,
                                on_lost=self._lost)
        self.producer = Producer(client_config(cfg, bootstrap, **{"linger.ms": 5}))
        self.pool = pool or WorkerPool(workers)
        self.counts: Counter = Counter()
        self.jobs: dict[str, dict] = {}  # job id -> {"alert": dict, "analysis": str, "state": str}
        self.by_alert: dict[tuple[str, bool], list[str]] = defaultdict(list)
        self._runs = 0
        self._stop = False
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
        self._state(task, "received", {"topic": topic, "partition": partition, "offset": offset,
                                       "type": alert.type, "tense": alert.tense}, kind="alert")
        decision = self.decider.decide(alert, run_tests=self.run_tests)
        if decision.action == "cancel":
            self._state(task, "matched", {"action": "cancel", "reason": decision.reason}, kind="alert")
            self.retract(alert)
            return alert
        if decision.action != "run":
            self.counts[decision.action] += 1
            self._state(task, "ignored", {"action": decision.action, "reason": decision.reason}, kind="alert")
            return alert
        self._state(task, "matched", {"reason": decision.reason,
                                      "analyses": [j.analysis for j in decision.jobs]}, kind="alert")
        self._runs += 1
        for job in decision.jobs:
            # unique even when an alert without record numbers (IGWN) is updated and runs again
            job_id = f"{alert.id}#{alert.record_number}:{job.analysis}:{self._runs}"
            info = {"alert": alert_to_dict(alert), "analysis": job.analysis, "state": "queued", "rule": job.rule}
            self.jobs[job_id] = info
            self.by_alert[(alert.id, alert.is_test)].append(job_id)
            self._state(job_id, "queued", {"rule": job.rule, "params": job.params}, kind="analysis")
            out_dir = self.artifacts_dir / _safe(alert.id) / f"{alert.record_number}-{job.analysis}"
            self.pool.submit(job_id, "dtlive.alerts.listener:run_job",
                             (job.analysis, info["alert"], dict(job.params or {}), self.history_path,
                              self.ledger_url, str(out_dir)), timeout_s=self.timeout_s)
        self.counts["alerts_run"] += 1
        return alert

    def _reject(self, value: bytes, topic: str, partition: int, offset: int, exc: NoticeError) -> None:
        self.counts["rejected"] += 1
        self.counts[f"rejected.{exc.reason}"] += 1
        self.producer.produce(self.cfg.alerts_rejected_topic, value, headers=[
            ("reason", exc.reason.encode()), ("detail", str(exc)[:500].encode()), ("source_topic", topic.encode()),
            ("source_partition", str(partition).encode()), ("source_offset", str(offset).encode())])
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
            detail = {"seconds": round(o.seconds, 3)}
            if o.error:
                detail["error"] = o.error[-2000:]
            self._finish(o.job_id, o.state, detail)
            if o.state == "succeeded":
                self._publish(o.job_id, o.value)
        return len(outcomes)

    def _finish(self, job_id: str, state: str, detail: dict | None) -> None:
        self.jobs[job_id]["state"] = state
        self.counts[f"analyses.{state}"] += 1
        self._state(job_id, state, detail, kind="analysis")

    def _publish(self, job_id: str, result: dict) -> None:
        info = self.jobs[job_id]
        alert = info["alert"]
        msg = {"schema": ANALYSIS_SCHEMA, "alert_id": alert["id"], "record_number": alert["record_number"],
               "mission": alert.get("mission"), "trigger_time": alert.get("trigger_time_iso"),
               "analysis": info["analysis"], "rule": info.get("rule"), "dtlive_version": __version__,
               "published_at": time.time(), **result}
        self.producer.produce(self.cfg.analyses_topic, json.dumps(msg, default=str).encode(), key=job_id.encode())
        self.producer.flush(10)
        if not result.get("retracted"):
            info["state"] = "published"
            self._state(job_id, "published", {"topic": self.cfg.analyses_topic}, kind="analysis")

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
        self.collect(0.0)
        return handled

    def run(self, max_seconds: float | None = None, until=None) -> AlertListener:
        """Listen until stopped, ``max_seconds``, or ``until(listener)`` is true."""
        started = time.monotonic()
        while not self._stop:
            self.poll()
            if until is not None and until(self):
                break
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                break
        return self

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)
        self.pool.close()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _default_artifacts() -> Path:
    import os

    import platformdirs

    return Path(os.environ.get("DTLIVE_ARTIFACTS") or Path(platformdirs.user_data_dir("dtlive")) / "analyses")
