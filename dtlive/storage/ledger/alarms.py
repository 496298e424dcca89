"""Chamber-status alarm events: the :class:`AlarmsMixin` part of :class:`Ledger`.

Every ``dtlive.alarm/1`` event is appended once (by its ``event_id``); an alarm's state is the fold of its
events in the order they were recorded (:func:`dtlive.core.alarms.fold`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dtlive.storage.ledger.models import AlarmEvent
from dtlive.storage.ledger.values import TimeLike, _jsonable, to_utc

if TYPE_CHECKING:
    from dtlive.core.alarms import Alarm


class AlarmsMixin:
    """The alarm events of a :class:`~dtlive.storage.ledger.Ledger`, which inherits them.

    Uses the ledger's ``_tx`` and ``_retry`` (a write retried on a unique-key race).

    >>> from dtlive.core.alarms import on_ack, on_status
    >>> from dtlive.storage.ledger import Ledger
    >>> led = Ledger("sqlite://")
    >>> board, events = on_status({}, {"processor": "p", "chamber": 1, "previous": 0, "status": 4,
    ...                                "start": "2026-12-05T10:00:00Z"})
    >>> led.record_alarm_events(events), led.record_alarm_events(events)  # each event once
    (1, 0)
    >>> [(a["chamber"], a["state"], a["severity"]) for a in led.alarms()]
    [(1, 'active', 'error')]
    """

    if TYPE_CHECKING:  # given by the Ledger

        def _tx(self, write: bool = True) -> AbstractContextManager[Session]: ...

        def _retry(self, fn: Callable[[Session], Any], attempts: int = 3) -> Any: ...

    def record_alarm_events(self, messages: Iterable[Mapping]) -> int:
        """Append the events not recorded yet, in order; return how many were new."""
        msgs = [dict(m) for m in messages]

        def write(s: Session) -> int:
            ids = [m["event_id"] for m in msgs]
            known = set(s.scalars(sa.select(AlarmEvent.event_id).where(AlarmEvent.event_id.in_(ids))))
            new = 0
            for m in msgs:
                if m["event_id"] in known:
                    continue
                known.add(m["event_id"])
                s.add(AlarmEvent(event_id=m["event_id"], alarm_id=m["alarm_id"], event=m["event"], at=to_utc(m["time"]),
                                 processor=m.get("processor"), chamber=m.get("chamber"), severity=m.get("severity"),
                                 status=m.get("status"), by=m.get("by"), message=_jsonable(m)))
                new += 1
            return new

        return self._retry(write) if msgs else 0

    def alarm_events(self, alarm_id: str | None = None, since: TimeLike | None = None) -> list[dict]:
        """The recorded ``dtlive.alarm/1`` messages in the order they were recorded (of one alarm, or since a time)."""
        q = sa.select(AlarmEvent.message).order_by(AlarmEvent.id)
        if alarm_id is not None:
            q = q.where(AlarmEvent.alarm_id == alarm_id)
        if since is not None:
            q = q.where(AlarmEvent.at >= to_utc(since))
        with self._tx(write=False) as s:
            return [dict(m) for m in s.scalars(q)]

    def alarm_board(self, closed: bool = False) -> dict[str, Alarm]:
        """Alarm id -> :class:`~dtlive.core.alarms.Alarm` as the recorded events make them (``closed`` ones too)."""
        from dtlive.core.alarms import fold  # with numpy and the products: not for a process that only keeps a run

        return fold(self.alarm_events(), closed=closed)

    def alarms(self, closed: bool = True) -> list[dict]:
        """Alarms as rows: active, cleared (both not acknowledged), acknowledged, closed; newest first in each."""
        from dtlive.core.alarms import ordered

        return [a.row() for a in ordered(self.alarm_board(closed=closed).values())]

    def find_alarm(self, prefix: str) -> Alarm:
        """The alarm whose id is or starts with ``prefix`` (KeyError when none or several match)."""
        board = self.alarm_board(closed=True)
        found = [a for aid, a in board.items() if aid.startswith(prefix)] if prefix else []
        if len(found) != 1:
            raise KeyError(f"no alarm {prefix!r}" if not found else
                           f"{len(found)} alarms start with {prefix!r}: {', '.join(a.id for a in found)}")
        return found[0]
