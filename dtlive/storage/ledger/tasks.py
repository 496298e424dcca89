"""The append-only state history of long tasks: the :class:`TasksMixin` part of :class:`Ledger`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dtlive.storage.ledger.models import TaskState, UTCDateTime, _now
from dtlive.storage.ledger.values import TimeLike, _jsonable, to_utc


class TasksMixin:
    """The task state history of a :class:`~dtlive.storage.ledger.Ledger`, which inherits it.

    Uses the ledger's ``_tx`` (a session in a transaction).

    >>> from dtlive.storage.ledger import Ledger
    >>> led = Ledger("sqlite://")
    >>> _ = led.append_state("replay-1", "queued", task_kind="replay"); _ = led.append_state("replay-1", "running")
    >>> [(t["task_id"], t["task_kind"], t["state"], t["states"]) for t in led.tasks()]
    [('replay-1', 'replay', 'running', 2)]
    """

    if TYPE_CHECKING:  # given by the Ledger
        def _tx(self, write: bool = True) -> AbstractContextManager[Session]: ...

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
