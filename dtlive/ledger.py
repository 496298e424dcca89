"""The run bookkeeping ledger: what ran, on which data, with which code and settings.

One database holds processing runs, the window results they published on ``dt.monitor`` (with the
input offset ranges each window read), data-quality periods, annotations and tags, detector runs
and the append-only state history of long tasks. SQLite by default (a file in the user's data
directory), PostgreSQL or any SQLAlchemy URL through ``DTLIVE_DB`` or the ``url`` argument. Opening
a :class:`Ledger` brings the schema to the newest Alembic revision (``dtlive/migrations``).

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

import functools
import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    mapped_column,
    relationship,
    selectinload,
    sessionmaker,
)

from dtlive import __version__
from dtlive.processes import pid_alive

__all__ = [
    "AppendOnlyError",
    "Base",
    "Ledger",
    "LedgerUnavailable",
    "Outage",
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
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "dtlive_alembic_version"  # not "alembic_version": the database may be shared with other apps
TARGETS = ("run", "period", "detector_run")  # what annotations and tags can be attached to
UNKNOWN_PROCESSOR = "unknown"  # results published without a provenance.processor
_PG_MIGRATION_LOCK = 0x64746C6976  # pg_advisory_xact_lock key serialising concurrent upgrades ("dtliv")
_SECRET_KEY = re.compile(r"pass|secret|token|credential|private", re.IGNORECASE)

CONNECT_TIMEOUT_S = 5  # a database host that does not answer is reported within seconds, not minutes
RETRY_FIRST_S = 0.5  # backoff while the database is unreachable: 0.5 s, doubling ...
RETRY_MAX_S = 30.0  # ... up to 30 s between attempts
HEARTBEAT_S = 30.0  # a running service stamps its run this often
STALE_HEARTBEATS = 4  # a run on another host silent for this many heartbeats is shown as "unknown"

log = logging.getLogger(__name__)

TimeLike = datetime | float | int | str


class AppendOnlyError(RuntimeError):
    """Raised on an attempt to change or delete a row of an append-only table (task state history)."""


class LedgerUnavailable(RuntimeError):
    """The ledger database cannot be reached (server down, connection refused or lost, timeout)."""


# --------------------------------------------------------------------------------------------- types


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = to_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of the ledger tables."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), str: sa.String(), int: sa.BigInteger(), float: sa.Float()}


def _now() -> datetime:
    return datetime.now(UTC)


class ProcessingRun(Base):
    """One run of a dtlive service (processor, reprocessing, emulator...)."""

    __tablename__ = "processing_runs"

    run_id: Mapped[str] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(index=True)
    status: Mapped[str]  # running, finished, failed, ... ; "observed": only seen in published results
    processor: Mapped[str | None] = mapped_column(index=True)
    config: Mapped[dict | None] = mapped_column(JSONType)
    config_hash: Mapped[str | None] = mapped_column(index=True)
    inputs: Mapped[list | None] = mapped_column(JSONType)
    host: Mapped[str | None]
    pid: Mapped[int | None]  # the run's process on ``host``: a "running" run whose process is gone died
    dtlive_version: Mapped[str | None]
    git_commit: Mapped[str | None]
    started_at: Mapped[datetime] = mapped_column(index=True)
    stopped_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]  # the last time the run's process said it was alive


class WindowRecord(Base):
    """One published window result (one ``dtlive.monitor/1`` message)."""

    __tablename__ = "windows"
    # keyed by run too: a processor that starts a new series (its broker lost the old one) publishes ids again
    __table_args__ = (sa.UniqueConstraint("processor", "run_id", "window_id"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    processor: Mapped[str]
    window_id: Mapped[int]
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("processing_runs.run_id"), index=True)
    first_orbit: Mapped[int]
    last_orbit: Mapped[int]
    start_time: Mapped[datetime | None] = mapped_column(index=True)
    end_time: Mapped[datetime | None]
    orbit_epoch: Mapped[float | None]
    total_hits: Mapped[int]
    hits_per_chamber: Mapped[list | None] = mapped_column(JSONType)
    rows: Mapped[int]
    rejected: Mapped[int]
    rejected_by_reason: Mapped[dict | None] = mapped_column(JSONType)
    late_hits: Mapped[int]
    ancillary: Mapped[int]
    special_channel_hits: Mapped[int]
    config_hash: Mapped[str | None]
    dtlive_version: Mapped[str | None]
    host: Mapped[str | None]
    result_topic: Mapped[str]
    result_partition: Mapped[int] = mapped_column(sa.Integer)
    result_offset: Mapped[int]
    result_cluster: Mapped[str | None]  # the broker's cluster id: a restarted broker counts offsets from 0 again
    provenance: Mapped[dict | None] = mapped_column(JSONType)  # the message's whole provenance block
    recorded_at: Mapped[datetime]

    inputs: Mapped[list[WindowInput]] = relationship(
        back_populates="window", cascade="all, delete-orphan", order_by="WindowInput.id", passive_deletes=True
    )


class WindowInput(Base):
    """One input offset range (one topic partition) read by a window."""

    __tablename__ = "window_inputs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    window_pk: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("windows.id", ondelete="CASCADE"), index=True)
    topic: Mapped[str]
    partition: Mapped[int] = mapped_column(sa.Integer)
    first_offset: Mapped[int]
    last_offset: Mapped[int]

    window: Mapped[WindowRecord] = relationship(back_populates="inputs")


class DQPeriod(Base):
    """A data-quality period: a time interval flagged bad (or good, warning...) with a reason."""

    __tablename__ = "dq_periods"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(index=True)
    start_time: Mapped[datetime] = mapped_column(index=True)
    end_time: Mapped[datetime | None]  # None: still going on
    reason: Mapped[str] = mapped_column(sa.Text)
    automatic: Mapped[bool]
    who: Mapped[str | None]
    detail: Mapped[dict | None] = mapped_column(JSONType)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DetectorRun(Base):
    """A detector run: starts on an orbit-counter reset or a run change."""

    __tablename__ = "detector_runs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    start_time: Mapped[datetime] = mapped_column(index=True)
    end_time: Mapped[datetime | None]
    first_orbit: Mapped[int]
    last_orbit: Mapped[int | None]
    meta: Mapped[dict] = mapped_column(JSONType)
    created_at: Mapped[datetime]


class Annotation(Base):
    """Free text attached to a run, a period or a detector run."""

    __tablename__ = "annotations"
    __table_args__ = (sa.Index("ix_annotations_target", "target", "target_id"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    target: Mapped[str]
    target_id: Mapped[str]
    text: Mapped[str] = mapped_column(sa.Text)
    who: Mapped[str | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Tag(Base):
    """A short label attached to a run, a period or a detector run."""

    __tablename__ = "tags"
    __table_args__ = (sa.UniqueConstraint("target", "target_id", "tag"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    target: Mapped[str]
    target_id: Mapped[str]
    tag: Mapped[str] = mapped_column(index=True)


class TaskState(Base):
    """One state change of a long task; append-only (never updated, never deleted)."""

    __tablename__ = "task_states"
    __table_args__ = (sa.Index("ix_task_states_task_at", "task_id", "at"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    task_id: Mapped[str]
    task_kind: Mapped[str | None] = mapped_column(index=True)
    state: Mapped[str]
    detail: Mapped[dict | None] = mapped_column(JSONType)
    at: Mapped[datetime]


_TARGET_MODELS: dict[str, type[Base]] = {"run": ProcessingRun, "period": DQPeriod, "detector_run": DetectorRun}


@event.listens_for(TaskState, "before_update")
def _no_task_update(mapper, connection, target):
    raise AppendOnlyError(f"task_states is append-only: cannot update state row {target.id}")


@event.listens_for(TaskState, "before_delete")
def _no_task_delete(mapper, connection, target):
    raise AppendOnlyError(f"task_states is append-only: cannot delete state row {target.id}")


def _no_bulk_task_changes(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and any(m.class_ is TaskState for m in state.all_mappers):
        raise AppendOnlyError("task_states is append-only: bulk UPDATE/DELETE refused")


# ------------------------------------------------------------------------------------------- helpers


def to_utc(t: TimeLike | Any) -> datetime:
    """A timezone-aware UTC datetime from a datetime (naive = UTC), UNIX seconds, an ISO string or datetime64."""
    if isinstance(t, datetime):
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if isinstance(t, str):
        return to_utc(datetime.fromisoformat(t.strip().replace("Z", "+00:00")))
    if isinstance(t, bool):
        raise TypeError(f"not a time: {t!r}")
    if isinstance(t, int | float):
        return datetime.fromtimestamp(float(t), UTC)
    if type(t).__name__ == "datetime64":  # numpy, without importing it
        return datetime.fromtimestamp(int(t.astype("datetime64[us]").astype("int64")) / 1e6, UTC)
    if hasattr(t, "item") and not isinstance(t, type):  # numpy scalars
        return to_utc(t.item())
    raise TypeError(f"not a time: {t!r} (give a datetime, UNIX seconds or an ISO 8601 string)")


def _opt_utc(t: TimeLike | None) -> datetime | None:
    return None if t is None else to_utc(t)


def _jsonable(value: Any) -> Any:
    return None if value is None else json.loads(json.dumps(value, default=str))


def _redact(value: Any) -> Any:
    """Mask secrets (``sasl.password`` ...) in a configuration before it is stored."""
    if isinstance(value, Mapping):
        return {k: "***" if isinstance(k, str) and _SECRET_KEY.search(k) and v else _redact(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def merge_offset_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge inclusive offset ranges that overlap or touch: ``[(0, 9), (10, 19), (30, 39)] -> [(0, 19), (30, 39)]``.

    >>> merge_offset_ranges([(10, 19), (0, 9), (5, 7), (30, 39)])
    [(0, 19), (30, 39)]
    """
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _merge_intervals(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@functools.lru_cache(maxsize=1)
def source_git_commit() -> str | None:
    """The git commit of the dtlive source checkout this module runs from, or None (installed, no git...)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None  # not a checkout, or the package sits inside some other repository (a venv in a repo)
    return lines[1]


def _chunks(items: Sequence, n: int = 500) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# ------------------------------------------------------------------------------ engine and migrations


def default_url() -> str:
    """``DTLIVE_DB`` if set, else a SQLite file ``ledger.sqlite`` in the user's dtlive data directory."""
    if os.environ.get("DTLIVE_DB"):
        return os.environ["DTLIVE_DB"]
    from platformdirs import user_data_dir

    path = Path(user_data_dir("dtlive")) / "ledger.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def normalize_url(url: str | URL) -> URL:
    """A SQLAlchemy URL; plain ``postgresql://`` gets the installed psycopg (3) driver."""
    url = make_url(url)
    return url.set(drivername="postgresql+psycopg") if url.drivername in ("postgres", "postgresql") else url


def _libpq_timeouts(driver: str) -> dict[str, Any]:
    """libpq options: give up connecting after a few seconds; notice a dead server instead of waiting forever."""
    options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 10,
                               "keepalives_interval": 5, "keepalives_count": 3}
    try:
        if driver == "psycopg":
            import psycopg

            version = psycopg.pq.version()
        else:
            import psycopg2.extensions

            version = psycopg2.extensions.libpq_version()
    except (ImportError, AttributeError):
        return options
    if version >= 120000:  # unacknowledged writes to a frozen server fail after 30 s (libpq 12+)
        options["tcp_user_timeout"] = 30_000
    return options


def make_engine(url: str | URL, busy_timeout_s: float = 30.0) -> Engine:
    """A SQLAlchemy engine for the ledger; SQLite gets WAL, a busy timeout, foreign keys and real BEGINs.

    Write transactions on SQLite start with ``BEGIN IMMEDIATE`` (execution option ``dtlive_write``) so
    concurrent writers queue on the busy timeout instead of failing on a lock upgrade.
    """
    url = normalize_url(url)
    if url.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg", "psycopg2"):
            connect_args = _libpq_timeouts(url.get_driver_name())
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": busy_timeout_s, "check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN; _begin below does
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not memory and cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                _set_wal(cur, busy_timeout_s)
            cur.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("dtlive_write") else "BEGIN")

    return engine


# ------------------------------------------------------------------------------ unreachable database

_SQLITE_TRANSIENT = re.compile(r"database is locked|unable to open database|disk i/o error", re.IGNORECASE)


def is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached right now (a later attempt may work).

    Connection refused, lost or timed out (``OperationalError``, ``InterfaceError``, an invalidated
    connection, a pool timeout), a locked SQLite file, and :class:`LedgerUnavailable`; a constraint
    violation, a bad query or a missing SQLite table is not.

    >>> is_unreachable(OperationalError("SELECT 1", {}, ConnectionRefusedError("refused")))
    True
    >>> is_unreachable(IntegrityError("INSERT", {}, ValueError("duplicate key"))), is_unreachable(ValueError())
    (False, False)
    """
    if isinstance(exc, LedgerUnavailable | PoolTimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    orig = exc.orig
    if type(orig).__module__ == "sqlite3":  # SQLite reports schema errors as OperationalError too
        return bool(_SQLITE_TRANSIENT.search(str(orig)))
    return True


def _reason(exc: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's boilerplate."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0].strip()


class Outage:
    """Logs one line when a database becomes unreachable and one when it is back, not one per attempt.

    >>> o = Outage("the ledger database sqlite://")
    >>> o.failed(OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))); o.down
    True
    >>> o.recovered(); o.down
    False
    """

    def __init__(self, name: str):
        self.name = name
        self._since: float | None = None
        self._attempts = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """True between a failed attempt and the next successful one."""
        return self._since is not None

    def message(self, exc: BaseException) -> str:
        """One line naming the database and what went wrong."""
        return f"{self.name} is unreachable: {_reason(exc)}"

    def failed(self, exc: BaseException) -> None:
        """An attempt failed because the database is unreachable."""
        with self._lock:
            self._attempts += 1
            first = self._since is None
            if first:
                self._since = time.monotonic()
        if first:
            log.warning("%s; retrying with backoff (%.1f s doubling to %.0f s)", self.message(exc), RETRY_FIRST_S,
                        RETRY_MAX_S)

    def recovered(self) -> None:
        """An attempt worked."""
        with self._lock:
            if self._since is None:
                return
            seconds, attempts = time.monotonic() - self._since, self._attempts
            self._since, self._attempts = None, 0
        log.warning("%s is reachable again after %.1f s (%d failed attempts)", self.name, seconds, attempts)


def retry_unreachable(
    fn: Callable[[], Any],
    *,
    outage: Outage | None = None,
    stop: Callable[[], bool] | None = None,
    give_up_s: float | None = None,
    first_s: float = RETRY_FIRST_S,
    max_s: float = RETRY_MAX_S,
    on_wait: Callable[[], None] | None = None,
) -> Any:
    """``fn()``, called again while the database is unreachable, waiting ``first_s`` doubling to ``max_s``.

    Other errors propagate at once. Raises :class:`LedgerUnavailable` when ``stop()`` turns true or
    ``give_up_s`` seconds have passed while the database is still away. ``on_wait()`` is called about
    ten times a second while waiting (a service's watchdog: it is waiting on purpose, not stuck).

    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    ...     return "written"
    >>> retry_unreachable(flaky, first_s=0.01), len(calls)
    ('written', 3)
    """
    outage = outage or Outage("the ledger database")
    started, delay = time.monotonic(), first_s
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            outage.failed(exc)
            wake = time.monotonic() + delay
            if give_up_s is not None:
                wake = min(wake, started + give_up_s)
            while time.monotonic() < wake and not (stop is not None and stop()):
                if on_wait is not None:
                    on_wait()
                time.sleep(min(0.1, max(0.0, wake - time.monotonic())))
            if (stop is not None and stop()) or (give_up_s is not None and time.monotonic() >= started + give_up_s):
                raise LedgerUnavailable(outage.message(exc)) from exc
            delay = min(2 * delay, max_s)
        else:
            outage.recovered()
            return result


def run_liveness(
    run: Mapping,
    *,
    host: str,
    now: datetime,
    pid_alive: Callable[[int], bool] = pid_alive,
    stale_s: float = STALE_HEARTBEATS * HEARTBEAT_S,
) -> str:
    """The status a run really has: ``died`` for a ``running`` run whose process on this host is gone,
    ``unknown`` for a ``running`` run on another host silent for ``stale_s`` seconds, else its stored status.

    Runs recorded without a process id (before it was kept) keep their stored status.

    >>> t0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
    >>> run = {"status": "running", "host": "daq1", "pid": 4242, "heartbeat_at": t0, "started_at": t0}
    >>> run_liveness(run, host="daq1", now=t0, pid_alive=lambda pid: False)
    'died'
    >>> from datetime import timedelta
    >>> [run_liveness(run, host="ctrl", now=t0 + timedelta(seconds=s)) for s in (10, 600)]
    ['running', 'unknown']
    """
    if run.get("status") != "running" or run.get("pid") is None:
        return run.get("status")
    if run.get("host") == host:
        return "running" if pid_alive(int(run["pid"])) else "died"
    last = run.get("heartbeat_at") or run.get("started_at")
    return "unknown" if last is None or (now - last).total_seconds() > stale_s else "running"


def _set_wal(cur, timeout_s: float) -> None:
    """Switch a SQLite file to WAL; while another process creates the file this can be refused as "locked"
    without the busy timeout being applied (SQLite's deadlock avoidance), so try again until ``timeout_s``."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def alembic_config(url: str | URL | None = None):
    """An Alembic ``Config`` for the ledger migrations shipped in ``dtlive/migrations`` (no alembic.ini).

    Developers make a new revision with
    ``alembic.command.revision(alembic_config(url), autogenerate=True, message="...")``.
    """
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))  # ConfigParser interpolation
    return cfg


@functools.lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest migration revision shipped with this dtlive."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration revision a database is at (None: empty)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """``alembic upgrade`` the database; idempotent and safe when several processes do it at once.

    The upgrade runs in one transaction that holds the database's write lock (SQLite ``BEGIN
    IMMEDIATE``; a PostgreSQL transaction-level advisory lock), so a second process waits, then
    finds the schema already at head.
    """
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    current, head = current_revision(engine), head_revision()
    if revision == "head" and current == head:
        return
    cfg = alembic_config()
    if current is not None and current not in {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}:
        raise RuntimeError(f"the ledger database is at schema revision {current!r}, unknown to this dtlive "
                           f"{__version__} (newest: {head!r}); use a newer dtlive")
    with engine.execution_options(dtlive_write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, revision)
        except CommandError as e:
            raise RuntimeError(f"cannot migrate the ledger database to {revision!r}: {e}") from e


def downgrade(engine: Engine, revision: str = "base") -> None:
    """``alembic downgrade`` the database (``base`` drops every ledger table)."""
    from alembic import command

    cfg = alembic_config()
    with engine.execution_options(dtlive_write=True).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


# ------------------------------------------------------------------------------------ run queries (Q)


class Q:
    """A composable filter on detector runs, translated into SQL where-clauses.

    ``Q.between(start, end) & Q.tag("cosmics") | Q.meta(trigger="scint")``; ``~q`` negates.
    Metadata values compare as JSON (``1 == 1.0``, ``True != 1``); a missing key never matches.
    """

    @staticmethod
    def between(start: TimeLike | None = None, end: TimeLike | None = None) -> Q:
        """Runs overlapping [start, end) (either bound may be None); a run still going extends forever."""
        return _Between(_opt_utc(start), _opt_utc(end))

    @staticmethod
    def tag(name: str) -> Q:
        """Runs carrying this tag."""
        return _Tag(name)

    @staticmethod
    def meta(**values: Any) -> Q:
        """Runs whose metadata has all these key/value pairs."""
        if not values:
            raise ValueError("Q.meta() needs at least one key=value")
        parts: list[Q] = [_Meta(k, _jsonable(v)) for k, v in values.items()]
        return functools.reduce(_And, parts)

    def __and__(self, other: Q) -> Q:
        return _And(self, _as_q(other))

    def __or__(self, other: Q) -> Q:
        return _Or(self, _as_q(other))

    def __invert__(self) -> Q:
        return _Not(self)

    def clause(self, dialect: str) -> tuple[sa.ColumnElement[bool], bool]:
        """(SQL where-clause on ``detector_runs``, exact?); when not exact the clause is a superset."""
        raise NotImplementedError

    def matches(self, run: Mapping) -> bool:
        """The same test in Python on a detector-run dict (as returned by :meth:`Ledger.detector_runs`)."""
        raise NotImplementedError


def _as_q(other: Any) -> Q:
    if not isinstance(other, Q):
        raise TypeError(f"cannot combine Q with {type(other).__name__}")
    return other


@dataclass(frozen=True, repr=False)
class _Between(Q):
    start: datetime | None
    end: datetime | None

    def __repr__(self):
        return f"Q.between({self.start!r}, {self.end!r})"

    def clause(self, dialect):
        parts = []
        if self.end is not None:
            parts.append(DetectorRun.start_time < self.end)
        if self.start is not None:
            parts.append(sa.or_(DetectorRun.end_time.is_(None), DetectorRun.end_time > self.start))
        return sa.and_(sa.true(), *parts), True

    def matches(self, run):
        return (self.end is None or run["start"] < self.end) and (
            self.start is None or run["end"] is None or run["end"] > self.start
        )


@dataclass(frozen=True, repr=False)
class _Tag(Q):
    name: str

    def __repr__(self):
        return f"Q.tag({self.name!r})"

    def clause(self, dialect):
        return sa.exists().where(
            Tag.target == "detector_run", Tag.target_id == sa.cast(DetectorRun.id, sa.String), Tag.tag == self.name
        ), True

    def matches(self, run):
        return self.name in run["tags"]


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@dataclass(frozen=True, repr=False)
class _Meta(Q):
    key: str
    value: Any

    def __repr__(self):
        return f"Q.meta({self.key}={self.value!r})"

    def clause(self, dialect):
        col, v = DetectorRun.meta, self.value
        if dialect == "postgresql":  # jsonb equality: exact for every JSON value
            expr = sa.type_coerce(col, JSONB)[self.key] == sa.cast(sa.literal(json.dumps(v), sa.Text()), JSONB)
            return sa.func.coalesce(expr, sa.false()), True
        if dialect == "sqlite" and '"' not in self.key and "\\" not in self.key:
            path = f'$."{self.key}"'
            jtype, value = sa.func.json_type(col, path), sa.func.json_extract(col, path)
            if v is None:
                expr = jtype == "null"
            elif isinstance(v, bool):
                expr = jtype == ("true" if v else "false")
            elif isinstance(v, int | float):
                expr = sa.and_(jtype.in_(["integer", "real"]), value == v)
            elif isinstance(v, str):
                expr = sa.and_(jtype == "text", value == v)
            else:  # objects and arrays: compared in Python
                return sa.true(), False
            return sa.func.coalesce(expr, sa.false()), True
        return sa.true(), False

    def matches(self, run):
        meta = run["metadata"] or {}
        return self.key in meta and _json_equal(meta[self.key], self.value)


@dataclass(frozen=True, repr=False)
class _And(Q):
    left: Q
    right: Q

    def __repr__(self):
        return f"({self.left!r} & {self.right!r})"

    def clause(self, dialect):
        (a, ea), (b, eb) = self.left.clause(dialect), self.right.clause(dialect)
        return sa.and_(a, b), ea and eb

    def matches(self, run):
        return self.left.matches(run) and self.right.matches(run)


@dataclass(frozen=True, repr=False)
class _Or(Q):
    left: Q
    right: Q

    def __repr__(self):
        return f"({self.left!r} | {self.right!r})"

    def clause(self, dialect):
        (a, ea), (b, eb) = self.left.clause(dialect), self.right.clause(dialect)
        return sa.or_(a, b), ea and eb

    def matches(self, run):
        return self.left.matches(run) or self.right.matches(run)


@dataclass(frozen=True, repr=False)
class _Not(Q):
    inner: Q

    def __repr__(self):
        return f"~{self.inner!r}"

    def clause(self, dialect):
        c, exact = self.inner.clause(dialect)
        return (sa.not_(c), True) if exact else (sa.true(), False)

    def matches(self, run):
        return not self.inner.matches(run)


# ------------------------------------------------------------------------------------------ Ledger


class _Unset:
    def __repr__(self):
        return "<unset>"


_UNSET: Any = _Unset()


class Ledger:
    """The bookkeeping database. ``Ledger()`` opens ``DTLIVE_DB`` or the default SQLite file and migrates it.

    Every query returns plain dicts (``pandas.DataFrame(ledger.windows())`` works); times are
    timezone-aware UTC datetimes, and every time argument also takes UNIX seconds or ISO strings.
    """

    def __init__(self, url: str | URL | None = None, *, migrate: bool = True, busy_timeout_s: float = 30.0):
        """Open the ledger at ``url`` (default :func:`default_url`); ``migrate`` runs ``alembic upgrade head``."""
        self.url = normalize_url(url if url is not None else default_url())
        self.engine = make_engine(self.url, busy_timeout_s)
        self._write_engine = self.engine.execution_options(dtlive_write=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "do_orm_execute", _no_bulk_task_changes)
        self.outage = Outage(f"the ledger database {self.url.render_as_string(hide_password=True)}")
        self.upgrade_pending = False  # opened by for_service while the database was unreachable
        if migrate:
            upgrade(self.engine)
            self.mark_dead_runs()  # a service starts: runs of this host whose process is gone died

    @classmethod
    def for_service(cls, url: str | URL | None = None) -> Ledger:
        """Open the ledger for a service that must start even while the database is unreachable.

        Then the ledger is returned unmigrated (``upgrade_pending``; one log line says so) and
        :meth:`ensure_upgraded` (which :class:`RunKeeper` calls) migrates it once the database answers.
        """
        try:
            return cls(url)
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            ledger = cls(url, migrate=False)
            ledger.upgrade_pending = True
            ledger.outage.failed(exc)
            return ledger

    def ensure_upgraded(self) -> None:
        """Migrate now if the ledger was opened while its database was unreachable (see :meth:`for_service`)."""
        if self.upgrade_pending:
            upgrade(self.engine)
            self.upgrade_pending = False
            self.mark_dead_runs()

    def __repr__(self) -> str:
        return f"Ledger({self.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """An ORM session in a transaction (committed on success) for queries the API does not cover.

        Give ``write=True`` when it will write: on SQLite it then takes the write lock up front.
        """
        with self._tx(write) as s:
            yield s

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Session]:
        with self._sessions(bind=self._write_engine if write else self.engine) as s, s.begin():
            yield s

    def _retry(self, fn, attempts: int = 3):
        """Run ``fn(session)`` in a write transaction, again if a concurrent writer won a unique-key race."""
        for attempt in range(attempts):
            try:
                with self._tx() as s:
                    return fn(s)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise

    # ---------------------------------------------------------------------------- processing runs

    def start_run(
        self,
        kind: str = "processing",
        config: Mapping | Any | None = None,
        config_hash: str | None = None,
        inputs: list[dict] | None = None,
        run_id: str | None = None,
        *,
        processor: str | None = None,
        host: str | None = None,
        pid: int | None = _UNSET,
        dtlive_version: str | None = None,
        git_commit: str | None = _UNSET,
        at: TimeLike | None = None,
    ) -> str:
        """Record the start of a processing run and return its id (a new uuid unless ``run_id`` is given).

        ``config`` is a dict or a :class:`dtlive.config.Config` (then ``config_hash``, ``processor`` and
        ``inputs`` default from it); secrets in it are masked. Host, dtlive version and the git commit
        of the source checkout are filled in. A run only seen in results so far gets completed.
        ``pid`` (default: this process, when ``host`` is this host) lets a run whose process is gone be
        shown as ``died`` (see :meth:`mark_dead_runs`).
        """
        if hasattr(config, "as_dict") and hasattr(config, "config_hash"):  # a dtlive Config
            cfg = config
            config = cfg.as_dict()
            config_hash = config_hash or cfg.config_hash
            processor = processor or cfg.group_id
            inputs = inputs if inputs is not None else [{"topic": cfg.hits_topic}]
        values = dict(
            kind=kind,
            status="running",
            processor=processor,
            config=_jsonable(_redact(config)),
            config_hash=config_hash,
            inputs=_jsonable(inputs),
            host=host or socket.gethostname(),
            pid=(os.getpid() if host in (None, socket.gethostname()) else None) if pid is _UNSET else pid,
            dtlive_version=dtlive_version or __version__,
            git_commit=source_git_commit() if git_commit is _UNSET else git_commit,
            started_at=to_utc(at) if at is not None else _now(),
            stopped_at=None,
        )
        values["heartbeat_at"] = values["started_at"]
        run_id = run_id or uuid.uuid4().hex[:12]

        def write(s: Session) -> str:
            run = s.get(ProcessingRun, run_id)
            if run is None:
                s.add(ProcessingRun(run_id=run_id, **values))
            elif run.status == "observed":
                for k, v in values.items():
                    if v is not None or k == "stopped_at":
                        setattr(run, k, v)
            else:
                raise ValueError(f"run {run_id!r} already exists (status {run.status})")
            return run_id

        return self._retry(write)

    def stop_run(self, run_id: str, status: str = "finished", *, at: TimeLike | None = None) -> None:
        """Record the end of a run (``status``: finished, failed, killed...); repeating the same stop is a no-op."""
        with self._tx() as s:
            run = s.get(ProcessingRun, run_id)
            if run is None:
                raise KeyError(f"no run {run_id!r}")
            if run.stopped_at is not None:
                if run.status != status:
                    raise ValueError(f"run {run_id!r} already stopped with status {run.status!r}")
                return
            run.status, run.stopped_at = status, to_utc(at) if at is not None else _now()

    def heartbeat(self, run_id: str, *, at: TimeLike | None = None) -> None:
        """Stamp a running run as alive now (or ``at``); a stopped run is left alone."""
        with self._tx() as s:
            s.execute(sa.update(ProcessingRun)
                      .where(ProcessingRun.run_id == run_id, ProcessingRun.status == "running")
                      .values(heartbeat_at=to_utc(at) if at is not None else _now()))

    def mark_dead_runs(self) -> list[str]:
        """Mark ``died`` the runs still ``running`` on this host whose process is gone; returns their ids.

        Their ``stopped_at`` is the last heartbeat (the last time the process was known alive).
        Done whenever a service opens the ledger and when runs are listed.
        """
        host = socket.gethostname()
        q = sa.select(ProcessingRun.run_id, ProcessingRun.pid).where(
            ProcessingRun.status == "running", ProcessingRun.host == host, ProcessingRun.pid.is_not(None))
        with self._tx(write=False) as s:
            dead = [run_id for run_id, pid in s.execute(q) if not pid_alive(int(pid))]
        if not dead:
            return []
        with self._tx() as s:
            for run in s.scalars(sa.select(ProcessingRun).where(ProcessingRun.run_id.in_(dead),
                                                                ProcessingRun.status == "running")):
                run.status, run.stopped_at = "died", run.heartbeat_at or run.started_at
        log.warning("runs whose process on %s is gone, marked died: %s", host, ", ".join(dead))
        return dead

    def run(self, run_id: str) -> dict:
        """One processing run as a dict (KeyError if unknown); its ``status`` as :meth:`runs` shows it."""
        self.mark_dead_runs()
        with self._tx(write=False) as s:
            run = s.get(ProcessingRun, run_id)
            if run is None:
                raise KeyError(f"no run {run_id!r}")
            return self._shown(self._run_dict(run, self._tags_for(s, "run", [run_id])))

    def runs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        processor: str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> list[dict]:
        """Processing runs, oldest first, optionally filtered (``start``/``end``: runs overlapping that range).

        Runs of this host whose process is gone are marked ``died`` first; a ``running`` run on another
        host without a heartbeat for a while is shown as ``unknown`` (see :func:`run_liveness`).
        """
        self.mark_dead_runs()
        q = sa.select(ProcessingRun).order_by(ProcessingRun.started_at, ProcessingRun.run_id)
        for col, value in ((ProcessingRun.kind, kind), (ProcessingRun.status, status),
                           (ProcessingRun.processor, processor)):
            if value is not None:
                q = q.where(col == value)
        if end is not None:
            q = q.where(ProcessingRun.started_at < to_utc(end))
        if start is not None:
            q = q.where(sa.or_(ProcessingRun.stopped_at.is_(None), ProcessingRun.stopped_at > to_utc(start)))
        with self._tx(write=False) as s:
            runs = s.scalars(q).all()
            tags = self._tags_for(s, "run", [r.run_id for r in runs])
        return [self._shown(self._run_dict(r, tags)) for r in runs]

    @staticmethod
    def _shown(run: dict) -> dict:
        run["status"] = run_liveness(run, host=socket.gethostname(), now=_now())
        return run

    @staticmethod
    def _run_dict(r: ProcessingRun, tags: Mapping[str, list[str]]) -> dict:
        return {
            "run_id": r.run_id, "kind": r.kind, "status": r.status, "processor": r.processor,
            "config_hash": r.config_hash, "config": r.config, "inputs": r.inputs, "host": r.host,
            "pid": r.pid, "dtlive_version": r.dtlive_version, "git_commit": r.git_commit,
            "started_at": r.started_at, "stopped_at": r.stopped_at, "heartbeat_at": r.heartbeat_at,
            "tags": tags.get(r.run_id, []),
        }  # fmt: skip

    # ------------------------------------------------------------------------------------ windows

    def record_window(self, msg: dict | bytes | str, topic: str, partition: int, offset: int) -> bool:
        """Record one ``dtlive.monitor/1`` result read at ``topic``/``partition``/``offset``.

        Idempotent on (processor, window id): returns False when the window was already recorded.
        """
        return self.record_windows([(msg, topic, partition, offset)]) == 1

    def record_windows(self, records: Iterable[tuple[dict | bytes | str, str, int, int]],
                       cluster: str | None = None) -> int:
        """Record many results ``(msg, topic, partition, offset)`` in one transaction; returns how many were new.

        Idempotent on (processor, processing run, window id). ``cluster``: the cluster id of the broker the
        results were read from (where their offsets belong).
        """
        from dtlive.messages import decode_message

        rows: dict[tuple[str, str | None, int], tuple[dict, list[dict]]] = {}
        for msg, topic, partition, offset in records:
            row, inputs = _window_row(decode_message(msg), topic, partition, offset)
            row["result_cluster"] = cluster
            rows.setdefault((row["processor"], row["run_id"], row["window_id"]), (row, inputs))

        def write(s: Session) -> int:
            known: set[tuple[str, str | None, int]] = set()
            by_processor: dict[str, list[int]] = {}
            for proc, _, wid in rows:
                by_processor.setdefault(proc, []).append(wid)
            for proc, wids in by_processor.items():
                for chunk in _chunks(sorted(set(wids))):
                    q = sa.select(WindowRecord.run_id, WindowRecord.window_id).where(
                        WindowRecord.processor == proc, WindowRecord.window_id.in_(chunk)
                    )
                    known.update((proc, run, w) for run, w in s.execute(q))
            new = [rows[k] for k in rows if k not in known]
            self._ensure_runs(s, [row for row, _ in new])
            s.add_all(WindowRecord(**row, inputs=[WindowInput(**i) for i in inputs]) for row, inputs in new)
            return len(new)

        return self._retry(write) if rows else 0

    def result_positions(self, topic: str, cluster: str | None = None) -> dict[int, int]:
        """Per partition of a results topic, the offset after the last recorded result (where to resume).

        ``cluster``: only results read from the broker with this cluster id count (offsets of a broker that
        was replaced mean nothing on its successor).
        """
        with self._tx(write=False) as s:
            q = (sa.select(WindowRecord.result_partition, sa.func.max(WindowRecord.result_offset))
                 .where(WindowRecord.result_topic == topic).group_by(WindowRecord.result_partition))
            if cluster is not None:
                q = q.where(WindowRecord.result_cluster == cluster)
            return {int(p): int(o) + 1 for p, o in s.execute(q)}

    @staticmethod
    def _ensure_runs(s: Session, rows: list[dict]) -> None:
        """Runs only seen in results get a stub row (status "observed") so windows always point to a run."""
        first: dict[str, dict] = {}
        for row in rows:
            if row["run_id"] and row["run_id"] not in first:
                first[row["run_id"]] = row
        if not first:
            return
        have = set(s.scalars(sa.select(ProcessingRun.run_id).where(ProcessingRun.run_id.in_(list(first)))))
        for run_id, row in first.items():
            if run_id not in have:
                s.add(ProcessingRun(
                    run_id=run_id, kind="processing", status="observed", processor=row["processor"],
                    config_hash=row["config_hash"], host=row["host"], dtlive_version=row["dtlive_version"],
                    started_at=row["start_time"] or _now(),
                ))  # fmt: skip
        s.flush()

    def windows(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        run_id: str | None = None,
        *,
        processor: str | None = None,
        window_id: int | None = None,
    ) -> list[dict]:
        """Recorded windows overlapping [start, end), oldest first, with their input ranges."""
        with self._tx(write=False) as s:
            return [self._window_dict(w) for w in self._select_windows(s, start, end, run_id, processor, window_id)]

    @staticmethod
    def _select_windows(s, start, end, run_id, processor, window_id) -> Sequence[WindowRecord]:
        q = sa.select(WindowRecord).options(selectinload(WindowRecord.inputs))
        q = q.order_by(WindowRecord.start_time.is_(None), WindowRecord.start_time, WindowRecord.processor,
                       WindowRecord.window_id)
        if start is not None:
            q = q.where(WindowRecord.end_time > to_utc(start))
        if end is not None:
            q = q.where(WindowRecord.start_time < to_utc(end))
        for col, value in ((WindowRecord.run_id, run_id), (WindowRecord.processor, processor),
                           (WindowRecord.window_id, window_id)):
            if value is not None:
                q = q.where(col == value)
        return s.scalars(q).all()

    @staticmethod
    def _window_dict(w: WindowRecord) -> dict:
        return {
            "processor": w.processor, "window_id": w.window_id, "run_id": w.run_id,
            "first_orbit": w.first_orbit, "last_orbit": w.last_orbit, "start": w.start_time, "end": w.end_time,
            "orbit_epoch": w.orbit_epoch, "total_hits": w.total_hits, "hits_per_chamber": w.hits_per_chamber,
            "rows": w.rows, "rejected": w.rejected, "rejected_by_reason": w.rejected_by_reason,
            "late_hits": w.late_hits, "ancillary": w.ancillary, "special_channel_hits": w.special_channel_hits,
            "config_hash": w.config_hash, "dtlive_version": w.dtlive_version, "host": w.host,
            "result_topic": w.result_topic, "result_partition": w.result_partition, "result_offset": w.result_offset,
            "inputs": [{"topic": i.topic, "partition": i.partition, "first_offset": i.first_offset,
                        "last_offset": i.last_offset} for i in w.inputs],
            "recorded_at": w.recorded_at,
        }  # fmt: skip

    def provenance(
        self,
        window_id: int | None = None,
        *,
        processor: str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> dict:
        """Which inputs, code and configuration made one window (by id) or the windows of a time range.

        Returns ``{"windows", "processors", "start", "end", "inputs": [{topic, partition, ranges,
        messages}], "results": [...same for where the results landed...], "code": {"dtlive_versions",
        "git_commits"}, "configuration": {"config_hashes", "configs": {run_id: config}}, "runs": [...]}``;
        offset ranges are inclusive and merged per partition. A time range without windows gives
        ``"windows": 0`` and empty lists; an unknown window id raises KeyError.
        """
        if window_id is None and start is None and end is None:
            raise ValueError("give a window id or a time range (start and/or end)")
        with self._tx(write=False) as s:
            wins = self._select_windows(s, start, end, None, processor, window_id)
            run_ids = sorted({w.run_id for w in wins if w.run_id})
            runs = s.scalars(sa.select(ProcessingRun).where(ProcessingRun.run_id.in_(run_ids))).all()
            tags = self._tags_for(s, "run", run_ids)
        if not wins and window_id is not None:
            raise KeyError(f"no recorded window {window_id}" + (f" of processor {processor!r}" if processor else ""))

        def merged(pairs: Iterable[tuple[tuple[str, int], tuple[int, int]]]) -> list[dict]:
            groups: dict[tuple[str, int], list[tuple[int, int]]] = {}
            for key, rng in pairs:
                groups.setdefault(key, []).append(rng)
            out = []
            for (topic, partition), rngs in sorted(groups.items()):
                m = merge_offset_ranges(rngs)
                out.append({"topic": topic, "partition": partition, "ranges": m,
                            "messages": sum(b - a + 1 for a, b in m)})
            return out

        per_proc: dict[str, list[int]] = {}
        for w in wins:
            per_proc.setdefault(w.processor, []).append(w.window_id)
        starts = [w.start_time for w in wins if w.start_time is not None]
        ends = [w.end_time for w in wins if w.end_time is not None]
        return {
            "windows": len(wins),
            "processors": {p: {"windows": len(ids), "first_window": min(ids), "last_window": max(ids)}
                           for p, ids in sorted(per_proc.items())},
            "start": min(starts, default=None),
            "end": max(ends, default=None),
            "inputs": merged(((i.topic, i.partition), (i.first_offset, i.last_offset)) for w in wins for i in w.inputs),
            "results": merged(((w.result_topic, w.result_partition), (w.result_offset, w.result_offset)) for w in wins),
            "code": {
                "dtlive_versions": sorted({v for v in [*(w.dtlive_version for w in wins),
                                                       *(r.dtlive_version for r in runs)] if v}),
                "git_commits": sorted({r.git_commit for r in runs if r.git_commit}),
            },
            "configuration": {
                "config_hashes": sorted({h for h in [*(w.config_hash for w in wins),
                                                     *(r.config_hash for r in runs)] if h}),
                "configs": {r.run_id: r.config for r in runs},
            },
            "runs": [self._run_dict(r, tags) for r in runs],
        }  # fmt: skip

    # ------------------------------------------------------------------------- data-quality periods

    def add_period(
        self,
        start: TimeLike,
        end: TimeLike | None,
        reason: str,
        *,
        automatic: bool = True,
        who: str | None = None,
        kind: str = "bad",
        detail: dict | None = None,
    ) -> int:
        """Flag [start, end) (``end`` None: still going on) as ``kind`` (bad, good, warning...); returns its id."""
        start_t, end_t = to_utc(start), _opt_utc(end)
        if end_t is not None and end_t < start_t:
            raise ValueError(f"period ends ({end_t}) before it starts ({start_t})")
        now = _now()
        with self._tx() as s:
            p = DQPeriod(kind=kind, start_time=start_t, end_time=end_t, reason=reason, automatic=automatic, who=who,
                         detail=_jsonable(detail), created_at=now, updated_at=now)
            s.add(p)
            s.flush()
            return p.id

    def end_period(self, period_id: int, end: TimeLike) -> None:
        """Set the end of a period (typically one added with ``end=None``)."""
        self.edit_period(period_id, end=end)

    def edit_period(
        self,
        period_id: int,
        *,
        start: TimeLike = _UNSET,
        end: TimeLike | None = _UNSET,
        reason: str = _UNSET,
        kind: str = _UNSET,
        automatic: bool = _UNSET,
        who: str | None = _UNSET,
        detail: dict | None = _UNSET,
    ) -> None:
        """Change some fields of a period (only those given)."""
        with self._tx() as s:
            p = s.get(DQPeriod, int(period_id))
            if p is None:
                raise KeyError(f"no period {period_id}")
            if start is not _UNSET:
                p.start_time = to_utc(start)
            if end is not _UNSET:
                p.end_time = _opt_utc(end)
            if p.end_time is not None and p.end_time < p.start_time:
                raise ValueError(f"period ends ({p.end_time}) before it starts ({p.start_time})")
            for name, value in (("reason", reason), ("kind", kind), ("automatic", automatic), ("who", who)):
                if value is not _UNSET:
                    setattr(p, name, value)
            if detail is not _UNSET:
                p.detail = _jsonable(detail)
            p.updated_at = _now()

    def period(self, period_id: int) -> dict:
        """One period as a dict (KeyError if unknown)."""
        with self._tx(write=False) as s:
            p = s.get(DQPeriod, int(period_id))
            if p is None:
                raise KeyError(f"no period {period_id}")
            return self._period_dict(p, self._tags_for(s, "period", [str(p.id)]))

    def periods(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        kind: str | None = None,
        *,
        automatic: bool | None = None,
    ) -> list[dict]:
        """Periods overlapping [start, end), oldest first, optionally of one kind / automatic or manual only."""
        q = sa.select(DQPeriod).order_by(DQPeriod.start_time, DQPeriod.id)
        if end is not None:
            q = q.where(DQPeriod.start_time < to_utc(end))
        if start is not None:
            q = q.where(sa.or_(DQPeriod.end_time.is_(None), DQPeriod.end_time > to_utc(start)))
        if kind is not None:
            q = q.where(DQPeriod.kind == kind)
        if automatic is not None:
            q = q.where(DQPeriod.automatic == automatic)
        with self._tx(write=False) as s:
            ps = s.scalars(q).all()
            tags = self._tags_for(s, "period", [str(p.id) for p in ps])
        return [self._period_dict(p, tags) for p in ps]

    def bad_intervals(
        self, start: TimeLike, end: TimeLike, kinds: Sequence[str] = ("bad",)
    ) -> list[tuple[datetime, datetime]]:
        """The union of the ``kinds`` periods within [start, end): sorted, non-overlapping, clipped to the range."""
        lo, hi = to_utc(start), to_utc(end)
        spans = []
        for kind in kinds:
            for p in self.periods(lo, hi, kind):
                a, b = max(p["start"], lo), min(p["end"] or hi, hi)
                if a < b:
                    spans.append((a, b))
        return _merge_intervals(spans)

    @staticmethod
    def _period_dict(p: DQPeriod, tags: Mapping[str, list[str]]) -> dict:
        return {
            "id": p.id, "kind": p.kind, "start": p.start_time, "end": p.end_time, "reason": p.reason,
            "automatic": p.automatic, "who": p.who, "detail": p.detail, "created_at": p.created_at,
            "updated_at": p.updated_at, "tags": tags.get(str(p.id), []),
        }  # fmt: skip

    # ----------------------------------------------------------------------- annotations and tags

    @staticmethod
    def _target_key(s: Session, target: str, target_id: str | int) -> str:
        if target not in _TARGET_MODELS:
            raise ValueError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
        model = _TARGET_MODELS[target]
        try:
            pk = str(target_id) if model is ProcessingRun else int(target_id)
        except (TypeError, ValueError):
            raise KeyError(f"no {target} {target_id!r}") from None
        if s.get(model, pk) is None:
            raise KeyError(f"no {target} {target_id!r}")
        return str(pk)

    def annotate(self, target: str, target_id: str | int, text: str, who: str | None = None) -> int:
        """Attach a note to a ``run`` / ``period`` / ``detector_run``; returns the annotation id."""
        now = _now()
        with self._tx() as s:
            a = Annotation(target=target, target_id=self._target_key(s, target, target_id), text=text, who=who,
                           created_at=now, updated_at=now)
            s.add(a)
            s.flush()
            return a.id

    def edit_annotation(self, annotation_id: int, text: str, who: str | None = None) -> None:
        """Replace an annotation's text (``who`` made the edit, if given)."""
        with self._tx() as s:
            a = s.get(Annotation, int(annotation_id))
            if a is None:
                raise KeyError(f"no annotation {annotation_id}")
            a.text, a.updated_at = text, _now()
            if who is not None:
                a.who = who

    def delete_annotation(self, annotation_id: int) -> None:
        """Remove an annotation."""
        with self._tx() as s:
            a = s.get(Annotation, int(annotation_id))
            if a is None:
                raise KeyError(f"no annotation {annotation_id}")
            s.delete(a)

    def annotations(self, target: str | None = None, target_id: str | int | None = None) -> list[dict]:
        """Annotations, oldest first, optionally of one target (kind, or kind and id)."""
        q = sa.select(Annotation).order_by(Annotation.created_at, Annotation.id)
        if target is not None:
            q = q.where(Annotation.target == target)
        if target_id is not None:
            q = q.where(Annotation.target_id == str(target_id))
        with self._tx(write=False) as s:
            return [self._annotation_dict(a) for a in s.scalars(q)]

    @staticmethod
    def _annotation_dict(a: Annotation) -> dict:
        return {"id": a.id, "target": a.target, "target_id": a.target_id, "text": a.text, "who": a.who,
                "created_at": a.created_at, "updated_at": a.updated_at}

    def tag(self, target: str, target_id: str | int, *tags: str) -> None:
        """Add tags to a ``run`` / ``period`` / ``detector_run`` (tags it already has are ignored)."""
        self._retry(lambda s: self._add_tags(s, target, target_id, tags))

    def _add_tags(self, s: Session, target: str, target_id: str | int, tags: Iterable[str]) -> None:
        key = self._target_key(s, target, target_id)
        wanted = {t.strip() for t in tags if t and t.strip()}
        have = set(s.scalars(sa.select(Tag.tag).where(Tag.target == target, Tag.target_id == key)))
        s.add_all(Tag(target=target, target_id=key, tag=t) for t in sorted(wanted - have))
        s.flush()

    def untag(self, target: str, target_id: str | int, *tags: str) -> None:
        """Remove tags (tags it does not have are ignored)."""
        with self._tx() as s:
            s.execute(sa.delete(Tag).where(Tag.target == target, Tag.target_id == str(target_id),
                                           Tag.tag.in_([t.strip() for t in tags])))

    def tags(self, target: str, target_id: str | int) -> list[str]:
        """The sorted tags of one target."""
        with self._tx(write=False) as s:
            return self._tags_for(s, target, [str(target_id)]).get(str(target_id), [])

    @staticmethod
    def _tags_for(s: Session, target: str, ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for chunk in _chunks(list(ids)):
            q = sa.select(Tag.target_id, Tag.tag).where(Tag.target == target, Tag.target_id.in_(chunk))
            for tid, tag in s.execute(q.order_by(Tag.tag)):
                out.setdefault(tid, []).append(tag)
        return out

    def search(self, text: str) -> list[dict]:
        """Case-insensitive substring search over annotation texts and tags.

        Returns ``[{"target", "target_id", "match": "annotation" | "tag", "text", "annotation_id"}]``.
        """
        with self._tx(write=False) as s:
            notes = s.scalars(sa.select(Annotation).where(Annotation.text.icontains(text, autoescape=True))
                              .order_by(Annotation.created_at, Annotation.id)).all()
            tags = s.scalars(sa.select(Tag).where(Tag.tag.icontains(text, autoescape=True))
                             .order_by(Tag.target, Tag.target_id, Tag.tag)).all()
        return [{"target": a.target, "target_id": a.target_id, "match": "annotation", "text": a.text,
                 "annotation_id": a.id} for a in notes] + [
                {"target": t.target, "target_id": t.target_id, "match": "tag", "text": t.tag,
                 "annotation_id": None} for t in tags]  # fmt: skip

    # ------------------------------------------------------------------------------ detector runs

    def open_detector_run(
        self,
        start: TimeLike,
        first_orbit: int,
        metadata: dict | None = None,
        tags: Iterable[str] = (),
    ) -> int:
        """Start a detector run (orbit-counter reset or run change); returns its number.

        A run still open is closed at ``start`` (its last orbit left unknown).
        """
        start_t = to_utc(start)
        with self._tx() as s:
            for old in s.scalars(sa.select(DetectorRun).where(DetectorRun.end_time.is_(None))):
                if old.start_time > start_t:
                    raise ValueError(f"detector run {old.id} started after {start_t}; close it first")
                old.end_time = start_t
            run = DetectorRun(start_time=start_t, first_orbit=int(first_orbit), meta=_jsonable(metadata or {}),
                              created_at=_now())
            s.add(run)
            s.flush()
            if tags:
                self._add_tags(s, "detector_run", run.id, tags)
            return run.id

    def close_detector_run(self, run_id: int, end: TimeLike, last_orbit: int | None = None) -> None:
        """End a detector run at ``end`` (and its last orbit, if known)."""
        with self._tx() as s:
            run = s.get(DetectorRun, int(run_id))
            if run is None:
                raise KeyError(f"no detector run {run_id}")
            end_t = to_utc(end)
            if end_t < run.start_time:
                raise ValueError(f"detector run {run_id} cannot end ({end_t}) before it starts ({run.start_time})")
            run.end_time = end_t
            if last_orbit is not None:
                run.last_orbit = int(last_orbit)

    def current_detector_run(self) -> dict | None:
        """The detector run still open (the newest, if several), or None."""
        with self._tx(write=False) as s:
            q = sa.select(DetectorRun).where(DetectorRun.end_time.is_(None))
            run = s.scalars(q.order_by(DetectorRun.start_time.desc(), DetectorRun.id.desc()).limit(1)).first()
            return None if run is None else self._detector_run_dict(run, self._tags_for(s, "detector_run",
                                                                                         [str(run.id)]))

    def detector_run(self, run_id: int) -> dict:
        """One detector run as a dict (KeyError if unknown)."""
        with self._tx(write=False) as s:
            run = s.get(DetectorRun, int(run_id))
            if run is None:
                raise KeyError(f"no detector run {run_id}")
            return self._detector_run_dict(run, self._tags_for(s, "detector_run", [str(run.id)]))

    def detector_runs(self, query: Q | None = None) -> list[dict]:
        """Detector runs matching a :class:`Q` query (all without one), oldest first."""
        q = sa.select(DetectorRun).order_by(DetectorRun.start_time, DetectorRun.id)
        exact = True
        if query is not None:
            clause, exact = _as_q(query).clause(self.engine.dialect.name)
            q = q.where(clause)
        with self._tx(write=False) as s:
            runs = s.scalars(q).all()
            tags = self._tags_for(s, "detector_run", [str(r.id) for r in runs])
        out = [self._detector_run_dict(r, tags) for r in runs]
        return out if exact else [r for r in out if query.matches(r)]

    @staticmethod
    def _detector_run_dict(r: DetectorRun, tags: Mapping[str, list[str]]) -> dict:
        return {"id": r.id, "start": r.start_time, "end": r.end_time, "first_orbit": r.first_orbit,
                "last_orbit": r.last_orbit, "metadata": r.meta, "tags": tags.get(str(r.id), [])}

    # ---------------------------------------------------------------------- long-task state history

    def append_state(
        self,
        task_id: str,
        state: str,
        *,
        detail: dict | None = None,
        task_kind: str | None = None,
        at: TimeLike | None = None,
    ) -> int:
        """Append a state to a task's history (never changes earlier rows); returns the row id.

        ``task_kind`` is remembered from the task's earlier states when not given.
        """
        with self._tx() as s:
            known = s.scalars(sa.select(TaskState.task_kind).where(TaskState.task_id == task_id,
                                                                   TaskState.task_kind.is_not(None)).limit(1)).first()
            if task_kind is not None and known is not None and task_kind != known:
                raise ValueError(f"task {task_id!r} is a {known!r} task, not {task_kind!r}")
            row = TaskState(task_id=task_id, task_kind=task_kind or known, state=state, detail=_jsonable(detail),
                            at=to_utc(at) if at is not None else _now())
            s.add(row)
            s.flush()
            return row.id

    def task_history(self, task_id: str) -> list[dict]:
        """A task's states, oldest first: ``[{"id", "task_id", "task_kind", "state", "detail", "at"}]``."""
        q = sa.select(TaskState).where(TaskState.task_id == task_id).order_by(TaskState.at, TaskState.id)
        with self._tx(write=False) as s:
            return [self._state_dict(r) for r in s.scalars(q)]

    def current_state(self, task_id: str) -> str | None:
        """A task's latest state, or None for an unknown task."""
        q = sa.select(TaskState.state).where(TaskState.task_id == task_id)
        with self._tx(write=False) as s:
            return s.scalars(q.order_by(TaskState.at.desc(), TaskState.id.desc()).limit(1)).first()

    def tasks(self, kind: str | None = None, state: str | None = None) -> list[dict]:
        """Tasks with their current state: ``[{"task_id", "task_kind", "state", "since", "first_at", "states"}]``.

        ``kind`` / ``state`` filter on the task kind and on the *current* state.
        """
        rank = sa.func.row_number().over(partition_by=TaskState.task_id,
                                         order_by=(TaskState.at.desc(), TaskState.id.desc()))
        latest = sa.select(TaskState.id, rank.label("rank")).subquery()
        stats = (sa.select(TaskState.task_id, sa.func.min(TaskState.at).label("first_at"),
                           sa.func.count().label("states")).group_by(TaskState.task_id).subquery())
        first_at = sa.type_coerce(stats.c.first_at, UTCDateTime())
        q = (sa.select(TaskState, first_at, stats.c.states)
             .join(latest, sa.and_(latest.c.id == TaskState.id, latest.c.rank == 1))
             .join(stats, stats.c.task_id == TaskState.task_id)
             .order_by(first_at, TaskState.task_id))  # fmt: skip
        if kind is not None:
            q = q.where(TaskState.task_kind == kind)
        if state is not None:
            q = q.where(TaskState.state == state)
        with self._tx(write=False) as s:
            return [{"task_id": r.task_id, "task_kind": r.task_kind, "state": r.state, "since": r.at,
                     "detail": r.detail, "first_at": first, "states": n} for r, first, n in s.execute(q)]

    @staticmethod
    def _state_dict(r: TaskState) -> dict:
        return {"id": r.id, "task_id": r.task_id, "task_kind": r.task_kind, "state": r.state, "detail": r.detail,
                "at": r.at}


class RetryingLedger:
    """A :class:`Ledger` whose every call waits out database outages instead of failing (for services).

    Each call is retried with backoff (:func:`retry_unreachable`) while the database is unreachable,
    so a service blocks where it is and goes on when the database is back: nothing it had to write
    is skipped and nothing is written twice (each call is one transaction). When ``stop()`` turns
    true during an outage the waiting call raises :class:`LedgerUnavailable`; ``on_wait()`` is called
    while it waits (see :func:`retry_unreachable`). Attributes that are not methods (``url``,
    ``engine``, ``outage``) are the wrapped ledger's.

    A write whose COMMIT was sent just as the connection died may have been applied; retrying it is
    harmless for the idempotent calls (``record_windows``, ``stop_run``, ``tag``) and appends a
    repeated row for the others (``append_state``, ``add_period``).

    >>> led = RetryingLedger(Ledger("sqlite://"))
    >>> led.append_state("task-1", "queued") > 0, led.current_state("task-1")
    (True, 'queued')
    """

    _AS_IS = frozenset({"close", "session"})

    def __init__(self, ledger: Ledger | RetryingLedger, stop: Callable[[], bool] | None = None,
                 on_wait: Callable[[], None] | None = None):
        self.ledger: Ledger = ledger.ledger if isinstance(ledger, RetryingLedger) else ledger
        self.stop = stop
        self.on_wait = on_wait

    def __repr__(self) -> str:
        return f"RetryingLedger({self.ledger!r})"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.ledger, name)
        if name.startswith("_") or name in self._AS_IS or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            return retry_unreachable(lambda: attr(*args, **kwargs), outage=self.ledger.outage, stop=self.stop,
                                     on_wait=self.on_wait)

        return call


class RunKeeper:
    """A service's processing run in the ledger, kept without ever making the service wait on the database.

    The run is started at once when the database answers; otherwise a background thread retries
    with backoff until it does. The thread stamps a heartbeat every ``heartbeat_s`` seconds;
    :meth:`stop` records the end, waiting at most ``timeout_s`` for an unreachable database (the
    run then stays ``running`` and is marked ``died`` once its process is gone). ``start_kwargs``
    go to :meth:`Ledger.start_run`.

    >>> led = Ledger("sqlite://")
    >>> keeper = RunKeeper(led, "run-1", heartbeat_s=0.05, config={"window_s": 2.0})
    >>> led.run("run-1")["status"]
    'running'
    >>> keeper.stop("finished"), led.run("run-1")["status"]
    (True, 'finished')
    """

    def __init__(self, ledger: Ledger | RetryingLedger, run_id: str, *, heartbeat_s: float = HEARTBEAT_S,
                 **start_kwargs: Any):
        self.ledger: Ledger = ledger.ledger if isinstance(ledger, RetryingLedger) else ledger
        self.run_id = run_id
        self.heartbeat_s = heartbeat_s
        self.started = False
        self.stopped = False
        self._start_kwargs = dict(start_kwargs, run_id=run_id)
        self._status = "finished"
        self._deadline = float("inf")  # monotonic time after which an unreachable database is given up on
        self._stopping = threading.Event()
        try:
            self._start()
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            self.ledger.outage.failed(exc)
        self._thread = threading.Thread(target=self._work, name=f"ledger-run-{run_id}", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        self.ledger.ensure_upgraded()
        try:
            self.ledger.start_run(**self._start_kwargs)
        except ValueError:  # already there: fine if an earlier attempt, whose answer was lost, wrote it
            run = self.ledger.run(self.run_id)
            if (run["host"], run["pid"], run["status"]) != (socket.gethostname(), os.getpid(), "running"):
                raise
        self.started = True

    def _retry(self, fn: Callable[[], Any]) -> bool:
        try:
            retry_unreachable(fn, outage=self.ledger.outage, stop=lambda: time.monotonic() > self._deadline)
        except LedgerUnavailable as exc:
            log.error("run %s: %s; giving up on recording it", self.run_id, exc)
            return False
        return True

    def _work(self) -> None:
        try:
            if not self.started and not self._retry(self._start):
                return
            while not self._stopping.wait(self.heartbeat_s):
                try:
                    self.ledger.heartbeat(self.run_id)
                    self.ledger.outage.recovered()
                except Exception as exc:
                    if not is_unreachable(exc):
                        raise
                    self.ledger.outage.failed(exc)
            self.stopped = self._retry(lambda: self.ledger.stop_run(self.run_id, status=self._status))
        except Exception:  # never let bookkeeping kill its service; say why
            log.exception("run %s: recording it in the ledger failed", self.run_id)

    def stop(self, status: str = "finished", timeout_s: float = 10.0) -> bool:
        """Record the run's end with ``status``; wait at most ``timeout_s``; True once it is recorded."""
        self._status = status
        self._deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self._thread.join(timeout_s + 1.0)
        return self.stopped


def _window_row(msg: dict, topic: str, partition: int, offset: int) -> tuple[dict, list[dict]]:
    """Column values of a ``windows`` row and its ``window_inputs`` rows from one parsed message."""
    w = msg["window"]
    prov = msg.get("provenance") or {}
    counts = msg.get("counts") or {}
    rejected = counts.get("rejected") or {}
    if not isinstance(rejected, Mapping):  # an older producer may send a plain number
        rejected = {"unknown": int(rejected)}
    row = {
        "processor": prov.get("processor") or UNKNOWN_PROCESSOR,
        "window_id": int(w["id"]),
        "run_id": prov.get("run_id"),
        "first_orbit": int(w.get("first_orbit", -1)),
        "last_orbit": int(w.get("last_orbit", -1)),
        "start_time": _opt_utc(w.get("start")),
        "end_time": _opt_utc(w.get("end")),
        "orbit_epoch": None if prov.get("orbit_epoch") is None else float(prov["orbit_epoch"]),
        "total_hits": int(msg.get("total_hits", 0)),
        "hits_per_chamber": _jsonable(msg.get("hits_per_chamber")),
        "rows": int(counts.get("rows", 0)),
        "rejected": sum(int(v) for v in rejected.values()),
        "rejected_by_reason": _jsonable(dict(rejected)),
        "late_hits": int(counts.get("late_hits", 0)),
        "ancillary": int(counts.get("ancillary", 0)),
        "special_channel_hits": int(counts.get("special_channel_hits", 0)),
        "config_hash": prov.get("config_hash"),
        "dtlive_version": prov.get("dtlive_version"),
        "host": prov.get("host"),
        "result_topic": topic,
        "result_partition": int(partition),
        "result_offset": int(offset),
        "provenance": _jsonable(prov),
        "recorded_at": _now(),
    }
    inputs = [
        {"topic": i.get("topic") or prov.get("topic") or "", "partition": int(i["partition"]),
         "first_offset": int(i["first_offset"]), "last_offset": int(i["last_offset"])}
        for i in prov.get("inputs") or []
    ]  # fmt: skip
    return row, inputs
