"""The run bookkeeping ledger: what ran, on which data, with which code and settings.

One database holds processing runs, the window results they published on ``dt.monitor`` (with the
input offset ranges each window read), data-quality periods, annotations and tags, detector runs
and the append-only state history of long tasks. SQLite by default (a file in the user's data
directory), PostgreSQL or any SQLAlchemy URL through ``DTLIVE_DB`` or the ``url`` argument. Opening
a :class:`Ledger` brings the schema to the newest Alembic revision (``dtlive/migrations``).

The package, one job a module: :mod:`~dtlive.storage.ledger.models` (tables), :mod:`~dtlive.storage.ledger.values`
(pure helpers), :mod:`~dtlive.storage.ledger.engine` (URLs, engines, migrations), :mod:`~dtlive.storage.ledger.queries`
(run liveness, the :class:`Q` filter), :mod:`~dtlive.storage.ledger.outage` (an unreachable database),
:mod:`~dtlive.storage.ledger.api` (:class:`Ledger`: runs and windows),
:mod:`~dtlive.storage.ledger.periods` (its periods,
annotations, tags and detector runs), :mod:`~dtlive.storage.ledger.tasks` (its task state history),
:mod:`~dtlive.storage.ledger.alarms` (its chamber-status alarm events),
:mod:`~dtlive.storage.ledger.certification` (judged lumi blocks and certification overrides) and
:mod:`~dtlive.storage.ledger.resilience` (:class:`RetryingLedger`, :class:`RunKeeper`, :class:`Outbox`). Every
name is importable from ``dtlive.storage.ledger`` itself.

>>> from datetime import UTC, datetime
>>> led = Ledger("sqlite://")  # in memory; Ledger() opens DTLIVE_DB or the default SQLite file
>>> run = led.start_run(config={"window_s": 2.0}, config_hash="a1b2c3", inputs=[{"topic": "dt.hits"}])
>>> msg = {"schema": "dtlive.monitor/1", "total_hits": 10,
...        "window": {"id": 7, "first_orbit": 0, "last_orbit": 99, "start": "2024-05-01T12:00:00.000Z",
...                   "end": "2024-05-01T12:00:02.000Z"},
...        "provenance": {"run_id": run, "processor": "dtlive-processor", "config_hash": "a1b2c3",
...                       "inputs": [{"topic": "dt.hits", "partition": 0, "first_offset": 0, "last_offset": 9}]}}
>>> led.record_window(msg, topic="dt.monitor", partition=0, offset=41), led.record_window(msg, "dt.monitor", 0, 41)
(True, False)
>>> led.provenance(7)["inputs"]
[{'topic': 'dt.hits', 'partition': 0, 'ranges': [(0, 9)], 'messages': 10}]
>>> pid = led.add_period(datetime(2024, 5, 1, 12, tzinfo=UTC), 1714564830.0, "HV trip", who="shifter")
>>> led.tag("period", pid, "hv")
>>> [p["reason"] for p in led.periods(kind="bad")], led.search("hv")[0]["target"]
(['HV trip'], 'period')
>>> dr = led.open_detector_run(1714564800.0, first_orbit=0, metadata={"trigger": "scint"}, tags=["cosmics"])
>>> [r["id"] for r in led.detector_runs(Q.tag("cosmics") & ~Q.meta(trigger="random"))] == [dr]
True
>>> _ = led.append_state("alert-42", "received", task_kind="alert"); _ = led.append_state("alert-42", "analysed")
>>> led.current_state("alert-42"), [h["state"] for h in led.task_history("alert-42")]
('analysed', ['received', 'analysed'])
"""

from __future__ import annotations

from dtlive.service.extras import extra

with extra("ledger", "dtlive.storage.ledger"):  # SQLAlchemy and Alembic: one line naming the extra when missing
    from dtlive.storage.ledger.api import Ledger
    from dtlive.storage.ledger.engine import (
        CONNECT_TIMEOUT_S,
        MIGRATIONS_DIR,
        VERSION_TABLE,
        alembic_config,
        current_revision,
        default_url,
        downgrade,
        head_revision,
        make_engine,
        normalize_url,
        upgrade,
    )
    from dtlive.storage.ledger.models import (
        NAMING_CONVENTION,
        TARGETS,
        UNKNOWN_PROCESSOR,
        AlarmEvent,
        Annotation,
        AppendOnlyError,
        Base,
        CertificationOverride,
        DetectorRun,
        DQPeriod,
        JSONType,
        LumiBlock,
        ProcessingRun,
        Tag,
        TaskState,
        UTCDateTime,
        WindowInput,
        WindowRecord,
    )
    from dtlive.storage.ledger.outage import (
        RETRY_FIRST_S,
        RETRY_MAX_S,
        LedgerUnavailable,
        Outage,
        is_unreachable,
        retry_unreachable,
    )
    from dtlive.storage.ledger.queries import HEARTBEAT_S, STALE_HEARTBEATS, Q, run_liveness
    from dtlive.storage.ledger.resilience import Outbox, RetryingLedger, RunKeeper
    from dtlive.storage.ledger.values import TimeLike, merge_offset_ranges, source_git_commit, to_utc

__all__ = [
    "AppendOnlyError",
    "Base",
    "Ledger",
    "LedgerUnavailable",
    "Outage",
    "Outbox",
    "Q",
    "RetryingLedger",
    "RunKeeper",
    "alembic_config",
    "current_revision",
    "default_url",
    "downgrade",
    "head_revision",
    "is_unreachable",
    "make_engine",
    "normalize_url",
    "merge_offset_ranges",
    "retry_unreachable",
    "run_liveness",
    "source_git_commit",
    "to_utc",
    "upgrade",
    # tables, types and constants, importable from here as well
    "CONNECT_TIMEOUT_S",
    "HEARTBEAT_S",
    "MIGRATIONS_DIR",
    "NAMING_CONVENTION",
    "RETRY_FIRST_S",
    "RETRY_MAX_S",
    "STALE_HEARTBEATS",
    "TARGETS",
    "UNKNOWN_PROCESSOR",
    "VERSION_TABLE",
    "AlarmEvent",
    "Annotation",
    "CertificationOverride",
    "DQPeriod",
    "DetectorRun",
    "JSONType",
    "LumiBlock",
    "ProcessingRun",
    "Tag",
    "TaskState",
    "TimeLike",
    "UTCDateTime",
    "WindowInput",
    "WindowRecord",
]
