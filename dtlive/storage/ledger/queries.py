"""Read-side logic of the ledger: the status a run really has and :class:`Q`, the composable detector-run filter."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from dtlive.service.processes import pid_alive
from dtlive.storage.ledger.models import DetectorRun, Tag
from dtlive.storage.ledger.values import TimeLike, _jsonable, _opt_utc

HEARTBEAT_S = 30.0  # a running service stamps its run this often
STALE_HEARTBEATS = 4  # a run on another host silent for this many heartbeats is shown as "unknown"


def run_liveness(
    run: Mapping,
    *,
    host: str,
    now: datetime,
    pid_alive: Callable[[int], bool] = pid_alive,
    stale_s: float = STALE_HEARTBEATS * HEARTBEAT_S,
) -> str | None:
    """The status a run really has: ``died`` for a ``running`` run whose process on this host is gone,
    ``unknown`` for a ``running`` run on another host silent for ``stale_s`` seconds, else its stored status.

    Runs recorded without a process id (before it was kept) keep their stored status.

    >>> from datetime import UTC
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




class Q:
    """A composable filter on detector runs, translated into SQL where-clauses.

    ``Q.between(start, end) & Q.tag("cosmics") | Q.meta(trigger="scint")``; ``~q`` negates.
    Metadata values compare as JSON (``1 == 1.0``, ``True != 1``); a missing key never matches.

    >>> from datetime import UTC
    >>> run = {"start": datetime(2024, 5, 1, tzinfo=UTC), "end": None, "tags": ["cosmics"],
    ...        "metadata": {"trigger": "scint", "hv": 3600}}
    >>> (Q.tag("cosmics") & Q.meta(hv=3600.0)).matches(run), (~Q.tag("cosmics") | Q.meta(trigger="random")).matches(run)
    (True, False)
    >>> Q.between("2024-06-01", None).matches(run)  # still going: overlaps any later interval
    True
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
