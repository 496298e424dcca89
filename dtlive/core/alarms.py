"""Chamber-status alarms, latched until acknowledged: a pure state machine. No I/O (the recorder publishes,
notifies and records what it returns).

An alarm belongs to one chamber of one processor (its *condition*: that chamber's judged status is not ok). A
status change of the chamber (:class:`dtlive.core.lumi.StatusChanges`) and an acknowledgement by a person are
the only inputs; each makes at most one ``dtlive.alarm/1`` event (:func:`on_status`, :func:`on_ack`). The
state of every alarm is the fold of its events (:func:`apply`), so a dashboard or the ledger that folds the
published events sees exactly what the recorder's state machine holds.

Severity comes from the status: 1-2 ``warning``, 3-4 ``error``; 0 (ok) has none. An alarm's states:

========================  ==============================  =====================================================
state                     meaning                         next
========================  ==============================  =====================================================
``active``                condition on, not acknowledged  ack -> ``acknowledged``; ok -> ``cleared``
``acknowledged``          condition on, acknowledged      ok -> ``closed``; worse severity -> ``active`` again
``cleared``               condition gone, not yet         ack -> ``closed``; bad again -> ``active`` (a repeat)
                          acknowledged (latched)
``closed``                over                            a new bad status raises a new alarm
========================  ==============================  =====================================================

Events: ``raised`` (a new alarm), ``escalated`` (its severity got worse: latched again until acknowledged),
``repeated`` (a **repeat**: the chamber's status changed to another non-ok status, or came back bad after a
clear, while its alarm is still open -- not closed -- and the severity is no worse than the alarm's worst; no
new alarm is raised and nobody is notified, the alarm counts it), ``cleared`` (the status came back to ok) and
``acknowledged``. Every event says whether people are to be told (``notify``): raised and escalated always,
cleared only the first time an alarm clears (a flapping chamber's later clears count as repeats), an
acknowledgement never.

>>> board, events = on_status({}, {"processor": "p", "chamber": 2, "previous": 0, "status": 4, "label": "bad",
...                                "reasons": ["dead_channels: 64 dead"], "start": "2026-12-05T10:00:00Z"})
>>> [(e["event"], e["severity"], e["state"], e["notify"]) for e in events]
[('raised', 'error', 'active', True)]
>>> alarm_id = events[0]["alarm_id"]
>>> board, events = on_status(board, {"processor": "p", "chamber": 2, "previous": 4, "status": 0,
...                                   "start": "2026-12-05T10:00:10Z"})
>>> [(e["event"], e["state"]) for e in events], board[alarm_id].state  # latched until acknowledged
([('cleared', 'cleared')], 'cleared')
>>> board, events = on_ack(board, alarm_id, "shifter", None, at=1764928830.0)
>>> [(e["event"], e["state"], e["by"]) for e in events], open_alarms(board)
([('acknowledged', 'closed', 'shifter')], [])
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from dtlive.core.messages import ALARM_SCHEMA, iso_utc, utc_seconds

SEVERITIES = ("warning", "error")  # from the least to the most severe
EVENTS = ("raised", "escalated", "repeated", "cleared", "acknowledged")
STATES = ("active", "acknowledged", "cleared", "closed")
_ORDER = {"active": 0, "cleared": 1, "acknowledged": 2, "closed": 3}  # how lists sort: unacknowledged first


def severity(status: int | None) -> str | None:
    """The alarm severity of a chamber status: None for 0 (ok) or unknown, ``warning`` for 1-2, ``error`` for 3-4.

    >>> [severity(s) for s in (None, 0, 1, 2, 3, 4)]
    [None, None, 'warning', 'warning', 'error', 'error']
    """
    if status is None or status <= 0:
        return None
    return "warning" if status <= 2 else "error"


def _rank(sev: str | None) -> int:
    return -1 if sev is None else SEVERITIES.index(sev)


@dataclass(frozen=True)
class Alarm:
    """One alarm as its events made it (see the module docstring for ``state``).

    >>> a = Alarm("a1", "p", 2, "active", "error", 4, ("dead",), "2026-12-05T10:00:00.000Z",
    ...           "2026-12-05T10:00:00.000Z")
    >>> a.open, a.latched, a.row()["chamber"]
    (True, True, 2)
    """

    id: str
    processor: str
    chamber: int
    state: str
    severity: str | None  # the worst severity the alarm reached
    status: int | None  # the chamber's newest status
    reasons: tuple[str, ...]  # the reasons of the newest non-ok status
    raised: str  # ISO UTC time of the block that raised it
    updated: str  # ISO UTC time of its newest event
    repeats: int = 0
    clears: int = 0
    acked_by: str | None = None
    acked_at: str | None = None
    note: str | None = None

    @property
    def open(self) -> bool:
        """Not closed."""
        return self.state != "closed"

    @property
    def latched(self) -> bool:
        """Waiting for an acknowledgement (``active`` or ``cleared``)."""
        return self.state in ("active", "cleared")

    def row(self) -> dict:
        """The alarm as a plain dict (lists, tables)."""
        return {"id": self.id, "state": self.state, "severity": self.severity, "processor": self.processor,
                "chamber": self.chamber, "status": self.status, "reason": self.reasons[0] if self.reasons else "",
                "reasons": list(self.reasons), "raised": self.raised, "updated": self.updated,
                "repeats": self.repeats, "acked_by": self.acked_by, "acked_at": self.acked_at, "note": self.note}


Board = Mapping[str, Alarm]  # alarm id -> alarm


def _iso(t: str | float | datetime | None, default: float | None) -> str:
    """Any time as the ISO UTC text of messages (milliseconds); ``default`` (UNIX seconds) when missing."""
    if isinstance(t, datetime):
        t = t.astimezone(UTC).timestamp()
    if isinstance(t, str):
        s = utc_seconds(t)
        t = None if math.isnan(s) else s
    if t is None:
        if default is None:
            raise ValueError("an alarm event needs a time: the change's start, or now")
        t = default
    return iso_utc(float(t))


def _digest(*parts) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


def alarm_id(processor: str, chamber: int, raised: str) -> str:
    """The id of the alarm raised for ``chamber`` of ``processor`` at ``raised``: 8 hex digits, the same whoever
    computes it (a recorder judging the same block again raises the same alarm).

    >>> alarm_id("p", 2, "2026-12-05T10:00:00.000Z") == alarm_id("p", 2, "2026-12-05T10:00:00.000Z")
    True
    """
    return _digest(processor, chamber, raised)[:8]


def event(kind: str, alarm: Alarm, at: str, *, previous: int | None = None, label: str | None = None,
          notify: bool = False, by: str | None = None, note: str | None = None, event_id: str | None = None) -> dict:
    """The ``dtlive.alarm/1`` message of one event of ``alarm`` (its state after the event).

    >>> a = Alarm("a1", "p", 2, "active", "error", 4, ("dead",), "2026-12-05T10:00:00.000Z",
    ...           "2026-12-05T10:00:00.000Z")
    >>> m = event("raised", a, a.raised, previous=0, label="bad", notify=True)
    >>> m["schema"], m["event"], m["alarm_id"], m["chamber"], m["reasons"], len(m["event_id"])
    ('dtlive.alarm/1', 'raised', 'a1', 2, ['dead'], 16)
    """
    if kind not in EVENTS:
        raise ValueError(f"unknown alarm event {kind!r} (known: {', '.join(EVENTS)})")
    return {"schema": ALARM_SCHEMA, "event_id": event_id or _digest(alarm.id, kind, at, alarm.status)[:16],
            "event": kind, "alarm_id": alarm.id, "time": at, "processor": alarm.processor, "chamber": alarm.chamber,
            "severity": alarm.severity, "status": alarm.status, "previous": previous, "label": label,
            "reasons": list(alarm.reasons), "state": alarm.state, "repeats": alarm.repeats, "notify": notify,
            "by": by, "note": note}


def find_open(board: Board, processor: str, chamber: int) -> Alarm | None:
    """The open alarm of ``chamber`` of ``processor`` on the board, or None.

    >>> find_open({}, "p", 0) is None
    True
    """
    for a in board.values():
        if a.open and a.processor == processor and a.chamber == chamber:
            return a
    return None


def on_status(board: Board, change: Mapping, now: float | None = None) -> tuple[dict[str, Alarm], list[dict]]:
    """The board and the events after one chamber status change.

    ``change``: ``{"processor", "chamber", "previous", "status", "label", "reasons", "start"}`` as
    :meth:`dtlive.core.lumi.StatusChanges.update` gives it (``start``: the block's first window, the event time;
    ``now`` (UNIX seconds, given by the caller: this module reads no clock) when it is missing). Returns a new
    board (the given one is not changed) and zero or one event. Closed alarms leave the board.

    >>> change = {"processor": "p", "chamber": 1, "previous": None, "status": 2, "start": "2026-12-05T10:00:00Z"}
    >>> board, (raised,) = on_status({}, change)
    >>> board, (repeat,) = on_status(board, {**change, "previous": 2, "status": 1, "start": "2026-12-05T10:00:10Z"})
    >>> repeat["event"], repeat["notify"], repeat["repeats"], len(board)
    ('repeated', False, 1, 1)
    >>> board, (worse,) = on_status(board, {**change, "previous": 1, "status": 4, "start": "2026-12-05T10:00:20Z"})
    >>> worse["event"], worse["severity"], worse["notify"], worse["alarm_id"] == raised["alarm_id"]
    ('escalated', 'error', True, True)
    """
    processor, chamber = str(change.get("processor") or ""), int(change["chamber"])
    status, previous = change.get("status"), change.get("previous")
    at = _iso(change.get("start"), now)
    sev = severity(status)
    reasons = tuple(str(r) for r in change.get("reasons") or ())
    current = find_open(board, processor, chamber)
    if current is None:
        if sev is None:
            return dict(board), []
        alarm = Alarm(alarm_id(processor, chamber, at), processor, chamber, "active", sev, status, reasons, at, at)
        msg = event("raised", alarm, at, previous=previous, label=change.get("label"), notify=True)
    elif sev is None:
        if status is None:
            return dict(board), []
        state = "closed" if current.state == "acknowledged" else "cleared"
        alarm = replace(current, state=state, status=status, updated=at, clears=current.clears + 1)
        first = current.clears == 0 or state == "closed"
        msg = event("cleared", alarm, at, previous=previous, label=change.get("label"), notify=first)
    elif _rank(sev) > _rank(current.severity):
        alarm = replace(current, state="active", severity=sev, status=status, reasons=reasons or current.reasons,
                        updated=at)
        msg = event("escalated", alarm, at, previous=previous, label=change.get("label"), notify=True)
    else:
        state = "active" if current.state == "cleared" else current.state
        alarm = replace(current, state=state, status=status, reasons=reasons or current.reasons, updated=at,
                        repeats=current.repeats + 1)
        msg = event("repeated", alarm, at, previous=previous, label=change.get("label"))
    return _put(board, alarm), [msg]


def on_ack(board: Board, alarm_id: str, by: str, note: str | None, at: float | str,
           event_id: str | None = None) -> tuple[dict[str, Alarm], list[dict]]:
    """The board and the events after ``by`` acknowledged ``alarm_id`` at ``at`` (with an optional ``note``).

    An alarm that is not latched (unknown, closed, or acknowledged already) is left as it is: no event. A
    ``cleared`` alarm closes; an ``active`` one becomes ``acknowledged`` and closes when its chamber is ok again.

    >>> change = {"processor": "p", "chamber": 0, "previous": 0, "status": 3, "start": "2026-12-05T10:00:00Z"}
    >>> board, (raised,) = on_status({}, change)
    >>> board, (ack,) = on_ack(board, raised["alarm_id"], "shifter", "HV tripped, called expert", at=1764928805)
    >>> ack["state"], ack["by"], ack["note"], ack["time"], on_ack(board, raised["alarm_id"], "again", None, 0)[1]
    ('acknowledged', 'shifter', 'HV tripped, called expert', '2025-12-05T10:00:05.000Z', [])
    """
    current = board.get(alarm_id)
    if current is None or not current.latched:
        return dict(board), []
    when = _iso(at, None)
    alarm = replace(current, state="closed" if current.state == "cleared" else "acknowledged", updated=when,
                    acked_by=by, acked_at=when, note=note)
    msg = event("acknowledged", alarm, when, by=by, note=note,
                event_id=event_id or _digest(alarm_id, "acknowledged", when, by)[:16])
    return _put(board, alarm), [msg]


def ack_request(alarm: Alarm, by: str, note: str | None, at: float) -> dict:
    """The ``acknowledged`` event ``by`` sends for ``alarm`` at ``at`` (from the CLI or the dashboard).

    >>> a = Alarm("a1", "p", 2, "cleared", "error", 0, ("dead",), "2026-12-05T10:00:00.000Z",
    ...           "2026-12-05T10:00:10.000Z")
    >>> m = ack_request(a, "shifter", None, at=1764928830)
    >>> m["event"], m["alarm_id"], m["state"], m["by"]
    ('acknowledged', 'a1', 'closed', 'shifter')
    """
    board, events = on_ack({alarm.id: alarm}, alarm.id, by, note, at)
    if not events:
        raise ValueError(f"alarm {alarm.id} is {alarm.state}: nothing to acknowledge")
    return events[0]


def _put(board: Board, alarm: Alarm) -> dict[str, Alarm]:
    out = {k: v for k, v in board.items() if k != alarm.id}
    if alarm.open:
        out[alarm.id] = alarm
    return out


def apply(alarms: Mapping[str, Alarm], msg: Mapping) -> dict[str, Alarm]:
    """Fold one ``dtlive.alarm/1`` event into the alarms it concerns (closed ones are kept, as ``closed``).

    The same event twice counts twice: callers drop repeated ``event_id`` s. An acknowledgement of an alarm that
    is not latched changes nothing.

    >>> change = {"processor": "p", "chamber": 3, "previous": 0, "status": 1, "start": "2026-12-05T10:00:00Z"}
    >>> board, events = on_status({}, change)
    >>> fold(events) == board
    True
    """
    kind, aid = msg.get("event"), str(msg.get("alarm_id") or "")
    current = alarms.get(aid)
    out = dict(alarms)
    if kind == "acknowledged":
        if current is not None and current.latched:
            out[aid] = replace(current, state="closed" if current.state == "cleared" else "acknowledged",
                               updated=msg["time"], acked_by=msg.get("by"), acked_at=msg["time"], note=msg.get("note"))
        return out
    if kind not in EVENTS or msg.get("chamber") is None:
        return out
    reasons = tuple(msg.get("reasons") or ())
    if current is None:
        current = Alarm(aid, str(msg.get("processor") or ""), int(msg["chamber"]), msg.get("state") or "active",
                        msg.get("severity"), msg.get("status"), reasons, msg["time"], msg["time"])
    out[aid] = replace(current, state=msg.get("state") or current.state, severity=msg.get("severity"),
                       status=msg.get("status"), reasons=reasons or current.reasons, updated=msg["time"],
                       repeats=int(msg.get("repeats") or 0),
                       clears=current.clears + (kind == "cleared"))
    return out


def fold(events: Iterable[Mapping], alarms: Mapping[str, Alarm] | None = None, closed: bool = False
         ) -> dict[str, Alarm]:
    """Alarms from their events in order (each ``event_id`` once); ``closed`` keeps the closed ones.

    >>> change = {"processor": "p", "chamber": 3, "previous": 0, "status": 1, "start": "2026-12-05T10:00:00Z"}
    >>> _, events = on_status({}, change)
    >>> [a.state for a in fold(events + events).values()]
    ['active']
    """
    out = dict(alarms or {})
    seen: set[str | None] = set()
    for msg in events:
        eid = msg.get("event_id")
        if eid in seen:
            continue
        seen.add(eid)
        out = apply(out, msg)
    return out if closed else {k: a for k, a in out.items() if a.open}


def open_alarms(board: Board) -> list[Alarm]:
    """The open alarms, latched ones first, then by severity (errors first), newest first.

    >>> open_alarms({})
    []
    """
    return sorted((a for a in board.values() if a.open),
                  key=lambda a: (_ORDER[a.state] > 1, -_rank(a.severity), -utc_seconds(a.updated)))


def ordered(alarms: Iterable[Alarm]) -> list[Alarm]:
    """Alarms for a list: active, then cleared (both waiting for an acknowledgement), acknowledged, closed; newest
    first in each.

    >>> ordered([])
    []
    """
    return sorted(alarms, key=lambda a: (_ORDER[a.state], -utc_seconds(a.updated)))
