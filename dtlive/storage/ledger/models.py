"""The ledger's tables (SQLAlchemy 2 declarative models) and the append-only guard of the task state history."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, ORMExecuteState, mapped_column, relationship

from dtlive.storage.ledger.values import to_utc

TARGETS = ("run", "period", "detector_run")  # what annotations and tags can be attached to
UNKNOWN_PROCESSOR = "unknown"  # results published without a provenance.processor


class AppendOnlyError(RuntimeError):
    """Raised on an attempt to change or delete a row of an append-only table (task state history).

    >>> from sqlalchemy.orm import Session
    >>> engine = sa.create_engine("sqlite://")
    >>> Base.metadata.create_all(engine)
    >>> with Session(engine) as s:
    ...     s.add(TaskState(task_id="alert-1", state="received", at=datetime(2024, 5, 1, tzinfo=UTC)))
    ...     s.commit()
    ...     s.get(TaskState, 1).state = "analysed"
    ...     try:
    ...         s.commit()
    ...     except AppendOnlyError as e:
    ...         print(e)
    task_states is append-only: cannot update state row 1
    """


# --------------------------------------------------------------------------------------------- types


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC).

    >>> from sqlalchemy.dialects import sqlite
    >>> t = UTCDateTime()
    >>> t.process_bind_param("2024-05-01T14:00:00+02:00", sqlite.dialect())  # stored naive, in UTC
    datetime.datetime(2024, 5, 1, 12, 0)
    >>> t.process_result_value(datetime(2024, 5, 1, 12), sqlite.dialect())
    datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    """

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
    """Declarative base of the ledger tables.

    >>> sorted(Base.metadata.tables)  # doctest: +NORMALIZE_WHITESPACE
    ['alarm_events', 'annotations', 'certification_overrides', 'detector_runs', 'dq_periods', 'lumi_blocks',
     'processing_runs', 'tags', 'task_states', 'window_inputs', 'windows']
    """

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), str: sa.String(), int: sa.BigInteger(), float: sa.Float()}


def _now() -> datetime:
    return datetime.now(UTC)


class ProcessingRun(Base):
    """One run of a dtlive service (processor, reprocessing, emulator...).

    >>> from sqlalchemy.orm import Session
    >>> engine = sa.create_engine("sqlite://")
    >>> Base.metadata.create_all(engine)
    >>> with Session(engine) as s:
    ...     s.add(ProcessingRun(run_id="r1", kind="processor", status="running", started_at="2024-05-01T12:00:00Z"))
    ...     s.commit()
    ...     run = s.get(ProcessingRun, "r1")
    ...     run.kind, run.started_at
    ('processor', datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc))
    """

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
    """One published window result (one ``dtlive.monitor/1`` message).

    >>> WindowRecord.__table__.c.window_id.type, [c.name for c in WindowRecord.__table__.primary_key]
    (BigInteger(), ['id'])
    >>> sorted(c.name for con in WindowRecord.__table__.constraints if isinstance(con, sa.UniqueConstraint)
    ...        for c in con.columns)
    ['processor', 'run_id', 'window_id']
    """

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
    """One input offset range (one topic partition) read by a window.

    >>> from sqlalchemy.orm import Session
    >>> engine = sa.create_engine("sqlite://")
    >>> Base.metadata.create_all(engine)
    >>> t = datetime(2024, 5, 1, tzinfo=UTC)
    >>> w = WindowRecord(processor="p", window_id=7, first_orbit=0, last_orbit=99, total_hits=3, rows=3, rejected=0,
    ...                  late_hits=0, ancillary=0, special_channel_hits=0, result_topic="dt.monitor",
    ...                  result_partition=0, result_offset=41, recorded_at=t)
    >>> w.inputs.append(WindowInput(topic="dt.hits", partition=0, first_offset=0, last_offset=9))
    >>> with Session(engine) as s:
    ...     s.add(w)
    ...     s.commit()
    ...     [(i.topic, i.first_offset, i.last_offset, i.window.window_id) for i in s.scalars(sa.select(WindowInput))]
    [('dt.hits', 0, 9, 7)]
    """

    __tablename__ = "window_inputs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    window_pk: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("windows.id", ondelete="CASCADE"), index=True)
    topic: Mapped[str]
    partition: Mapped[int] = mapped_column(sa.Integer)
    first_offset: Mapped[int]
    last_offset: Mapped[int]

    window: Mapped[WindowRecord] = relationship(back_populates="inputs")


class DQPeriod(Base):
    """A data-quality period: a time interval flagged bad (or good, warning...) with a reason.

    >>> DQPeriod.__table__.c.end_time.nullable, DQPeriod.__table__.c.reason.type
    (True, Text())
    """

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
    """A detector run: starts on an orbit-counter reset or a run change.

    >>> [c.name for c in DetectorRun.__table__.c]
    ['id', 'start_time', 'end_time', 'first_orbit', 'last_orbit', 'meta', 'created_at']
    """

    __tablename__ = "detector_runs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    start_time: Mapped[datetime] = mapped_column(index=True)
    end_time: Mapped[datetime | None]
    first_orbit: Mapped[int]
    last_orbit: Mapped[int | None]
    meta: Mapped[dict] = mapped_column(JSONType)
    created_at: Mapped[datetime]


class Annotation(Base):
    """Free text attached to a run, a period or a detector run.

    >>> [c.name for c in Annotation.__table__.c if not c.nullable]
    ['id', 'target', 'target_id', 'text', 'created_at', 'updated_at']
    """

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
    """A short label attached to a run, a period or a detector run.

    >>> sorted(c.name for con in Tag.__table__.constraints if isinstance(con, sa.UniqueConstraint) for c in con.columns)
    ['tag', 'target', 'target_id']
    """

    __tablename__ = "tags"
    __table_args__ = (sa.UniqueConstraint("target", "target_id", "tag"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    target: Mapped[str]
    target_id: Mapped[str]
    tag: Mapped[str] = mapped_column(index=True)


class TaskState(Base):
    """One state change of a long task; append-only (never updated, never deleted).

    >>> from sqlalchemy.orm import Session
    >>> engine = sa.create_engine("sqlite://")
    >>> Base.metadata.create_all(engine)
    >>> with Session(engine) as s:
    ...     s.add_all([TaskState(task_id="alert-1", state=st, at=1714564800.0 + i) for i, st in
    ...                enumerate(("received", "analysed"))])
    ...     s.commit()
    ...     s.scalars(sa.select(TaskState.state).order_by(TaskState.at)).all()
    ['received', 'analysed']
    """

    __tablename__ = "task_states"
    __table_args__ = (sa.Index("ix_task_states_task_at", "task_id", "at"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    task_id: Mapped[str]
    task_kind: Mapped[str | None] = mapped_column(index=True)
    state: Mapped[str]
    detail: Mapped[dict | None] = mapped_column(JSONType)
    at: Mapped[datetime]


class AlarmEvent(Base):
    """One ``dtlive.alarm/1`` event (raised, escalated, repeated, cleared, acknowledged); append-only, each
    ``event_id`` once (the whole message is kept in ``message``).

    >>> from sqlalchemy.orm import Session
    >>> engine = sa.create_engine("sqlite://")
    >>> Base.metadata.create_all(engine)
    >>> with Session(engine) as s:
    ...     s.add(AlarmEvent(event_id="e1", alarm_id="a1", event="raised", at="2026-12-05T10:00:00Z", chamber=2,
    ...                      message={"event": "raised"}))
    ...     s.commit()
    ...     s.scalars(sa.select(AlarmEvent.event)).all()
    ['raised']
    """

    __tablename__ = "alarm_events"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(unique=True)
    alarm_id: Mapped[str] = mapped_column(index=True)
    event: Mapped[str]
    at: Mapped[datetime] = mapped_column(index=True)  # the event's time (a status change: its block's start)
    processor: Mapped[str | None]
    chamber: Mapped[int | None]
    severity: Mapped[str | None]
    status: Mapped[int | None]
    by: Mapped[str | None]  # who acknowledged
    message: Mapped[dict] = mapped_column(JSONType)
    recorded_at: Mapped[datetime] = mapped_column(default=_now)


class LumiBlock(Base):
    """One lumi block the recorder judged: its windows, time range and the status of each chamber.

    ``statuses``: ``{"0": status, ...}`` (None: not judged); ``detail``: per chamber its label and first reason,
    and the reference judged against.

    >>> sorted(c.name for con in LumiBlock.__table__.constraints if isinstance(con, sa.UniqueConstraint)
    ...        for c in con.columns)
    ['first_window', 'processor', 'start_time']
    """

    __tablename__ = "lumi_blocks"
    __table_args__ = (sa.UniqueConstraint("processor", "start_time", "first_window"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    processor: Mapped[str]
    first_window: Mapped[int]
    last_window: Mapped[int]
    windows: Mapped[int]
    start_time: Mapped[datetime] = mapped_column(index=True)
    end_time: Mapped[datetime]
    statuses: Mapped[dict] = mapped_column(JSONType)
    detail: Mapped[dict | None] = mapped_column(JSONType)
    recorded_at: Mapped[datetime]


class CertificationOverride(Base):
    """A person's good/bad verdict for a detector run or a time range, one chamber or all; append-only.

    >>> [c.name for c in CertificationOverride.__table__.c if c.nullable]
    ['chamber', 'detector_run', 'start_time', 'end_time']
    """

    __tablename__ = "certification_overrides"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    good: Mapped[bool]
    chamber: Mapped[int | None] = mapped_column(sa.Integer)  # None: every chamber
    detector_run: Mapped[int | None] = mapped_column(sa.Integer)
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(sa.Text)
    who: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(index=True)


_TARGET_MODELS: dict[str, type[Base]] = {"run": ProcessingRun, "period": DQPeriod, "detector_run": DetectorRun}


@event.listens_for(TaskState, "before_update")
def _no_task_update(mapper, connection, target):
    raise AppendOnlyError(f"task_states is append-only: cannot update state row {target.id}")


@event.listens_for(TaskState, "before_delete")
def _no_task_delete(mapper, connection, target):
    raise AppendOnlyError(f"task_states is append-only: cannot delete state row {target.id}")


@event.listens_for(AlarmEvent, "before_update")
def _no_alarm_update(mapper, connection, target):
    raise AppendOnlyError(f"alarm_events is append-only: cannot update event row {target.id}")


@event.listens_for(AlarmEvent, "before_delete")
def _no_alarm_delete(mapper, connection, target):
    raise AppendOnlyError(f"alarm_events is append-only: cannot delete event row {target.id}")


@event.listens_for(CertificationOverride, "before_update")
def _no_override_update(mapper, connection, target):
    raise AppendOnlyError(f"certification_overrides is append-only: cannot update override {target.id}")


@event.listens_for(CertificationOverride, "before_delete")
def _no_override_delete(mapper, connection, target):
    raise AppendOnlyError(f"certification_overrides is append-only: cannot delete override {target.id}")


_APPEND_ONLY = (TaskState, AlarmEvent, CertificationOverride)


def _no_bulk_task_changes(state: ORMExecuteState) -> None:
    if state.is_update or state.is_delete:
        for m in state.all_mappers:
            if m.class_ in _APPEND_ONLY:
                raise AppendOnlyError(f"{m.class_.__tablename__} is append-only: bulk UPDATE/DELETE refused")
