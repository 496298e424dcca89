"""The alarm panel: open chamber-status alarms from the alarm topic, each with an Acknowledge button.

:class:`AlarmPanel` follows ``alarm_topic`` (:class:`dtlive.ui.live.ResultsFeed`, from the topic's start so that
every open alarm is known), folds the ``dtlive.alarm/1`` events into alarms (:func:`dtlive.core.alarms.fold`) and
shows the open ones newest first: severity colour, chamber, state, the first reason and when it was raised (UTC,
to the second). "Acknowledge" publishes the acknowledgement on the alarm topic under the name typed in "Your
name" (the recorder then records it in the ledger and the alarm closes once the chamber is ok).

>>> from dtlive.core.alarms import on_status
>>> panel = AlarmPanel(bootstrap="127.0.0.1:1", start=False)
>>> _, events = on_status({}, {"processor": "p", "chamber": 2, "status": 4, "reasons": ["64 dead channels"],
...                            "start": "2026-12-05T10:00:00Z"})
>>> panel.add_events(events)
>>> len(panel.shown()), "64 dead channels" in panel.rows.children[0].children[0].value
(1, True)
"""

from __future__ import annotations

import getpass
import html
import os
import threading
import time
from typing import TYPE_CHECKING

import ipywidgets as W

from dtlive.core.alarms import Alarm, ack_request, apply
from dtlive.core.messages import utc_seconds

if TYPE_CHECKING:
    from dtlive.kafka.alarms import AlarmPublisher

SEVERITY_COLORS = {"error": "#c62828", "warning": "#f9a825", None: "#757575"}
MAX_ROWS = 20  # alarms shown at once (the title counts the others); rows are made once and reused


def alarm_html(alarm: Alarm) -> str:
    """One alarm as a line of HTML: severity badge, chamber, state, raised time (UTC, seconds), first reason.

    >>> a = Alarm("a1", "p", 2, "active", "error", 4, ("dead <all>",), "2026-12-05T10:00:00.000Z",
    ...           "2026-12-05T10:00:00.000Z")
    >>> text = alarm_html(a)
    >>> "data-alarm='a1'" in text, ">ERROR</b> chamber 2" in text, "10:00:00 UTC, NOT ACKNOWLEDGED" in text
    (True, True, True)
    """
    color = SEVERITY_COLORS.get(alarm.severity, SEVERITY_COLORS[None])
    when = alarm.raised[:19].replace("T", " ")
    state = {"active": "NOT ACKNOWLEDGED", "cleared": "ok again, NOT ACKNOWLEDGED",
             "acknowledged": f"acknowledged by {alarm.acked_by}"}.get(alarm.state, alarm.state)
    repeats = f", {alarm.repeats} repeats" if alarm.repeats else ""
    reason = alarm.reasons[0] if alarm.reasons else f"status {alarm.status}"
    return (f"<span class='dtlive-alarm-line' data-alarm='{html.escape(alarm.id)}' data-state='{alarm.state}' "
            f"style='font-family:sans-serif'><b style='background:{color};color:white;padding:0 6px;"
            f"border-radius:3px'>{(alarm.severity or 'info').upper()}</b> chamber {alarm.chamber} "
            f"<span style='color:#555'>{when} UTC, {html.escape(state)}{repeats} [{html.escape(alarm.id)}]</span> "
            f"{html.escape(reason)}</span>")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return ""


class AlarmPanel(W.VBox):
    """Open alarms with an Acknowledge button each (see the module docstring).

    ``bootstrap``: the broker (default: as the dashboard finds it); ``topic``: the alarm topic (default the
    configured one); ``by``: the name acknowledgements are given under (default ``JUPYTERHUB_USER`` or the login
    name; the panel's "Your name" box changes it); ``start``: follow the topic now.

    >>> panel = AlarmPanel(bootstrap="127.0.0.1:1", by="alice", start=False)
    >>> panel.name.value, panel.shown(), "0 open" in panel.title.value
    ('alice', [], True)
    """

    def __init__(self, bootstrap: str | None = None, topic: str | None = None, by: str | None = None,
                 start: bool = True):
        from dtlive.config import load_config
        from dtlive.kafka.alarms import parse_alarm
        from dtlive.ui.live import ResultsFeed

        self.cfg = load_config({"alarm_topic": topic} if topic else {})
        if bootstrap is None:
            from dtlive.kafka.clients import NoBrokerError, resolve_bootstrap

            try:
                bootstrap, _ = resolve_bootstrap(self.cfg)
            except NoBrokerError:
                bootstrap = "127.0.0.1:9092"
        self.bootstrap = bootstrap
        self.alarms: dict[str, Alarm] = {}
        self._seen: set[str | None] = set()
        self._lock = threading.RLock()
        self._publisher: AlarmPublisher | None = None
        self.title = W.HTML()
        self.name = W.Text(value=by or os.environ.get("JUPYTERHUB_USER") or _login(),
                           description="Your name", layout=W.Layout(width="260px"))
        self.message = W.HTML()
        self._ids: list[str | None] = [None] * MAX_ROWS  # the alarm each row shows
        self._lines = [W.HTML() for _ in range(MAX_ROWS)]
        self._buttons = [W.Button(description="Acknowledge", button_style="warning", layout=W.Layout(width="120px"))
                         for _ in range(MAX_ROWS)]
        rows = []
        for i, (line, button) in enumerate(zip(self._lines, self._buttons)):
            button.add_class("dtlive-alarm-ack")
            button.on_click(lambda _b, i=i: (aid := self._ids[i]) and self.acknowledge(aid))
            row = W.HBox([line, button], layout=W.Layout(display="none"))
            row.add_class("dtlive-alarm")
            rows.append(row)
        self.rows = W.VBox(rows)  # made here, in the kernel's thread; the feed's thread only sets their values
        super().__init__([W.HBox([self.title, self.name, self.message]), self.rows])
        self.add_class("dtlive-alarm-panel")
        self._render()
        self.feed = ResultsFeed(bootstrap, self.add_events, topic=self.cfg.alarm_topic, backfill=100_000,
                                kafka=self.cfg.kafka, parse=parse_alarm)
        if start:
            self.feed.start()

    def add_events(self, events: list[dict]) -> None:
        """Fold ``dtlive.alarm/1`` events (each ``event_id`` once) and redraw when an alarm changed."""
        with self._lock:
            before = dict(self.alarms)
            for e in events:
                if e.get("event_id") in self._seen:
                    continue
                self._seen.add(e.get("event_id"))
                self.alarms = apply(self.alarms, e)
            if self.alarms != before:
                self._render()

    def shown(self) -> list[Alarm]:
        """The open alarms, newest first."""
        return sorted((a for a in self.alarms.values() if a.open), key=lambda a: -utc_seconds(a.raised))

    def acknowledge(self, alarm_id: str) -> dict | None:
        """Publish the acknowledgement of ``alarm_id`` under the name in "Your name"; return it (None: refused)."""
        by = self.name.value.strip()
        with self._lock:
            alarm = self.alarms.get(alarm_id)
        if not by:
            self.message.value = "<span style='color:#c62828'>type your name to acknowledge</span>"
            return None
        if alarm is None or not alarm.latched:
            return None
        msg = ack_request(alarm, by, None, time.time())
        if self._publisher is None:
            from dtlive.kafka.alarms import AlarmPublisher

            self._publisher = AlarmPublisher(self.cfg, self.bootstrap)
        if self._publisher.publish([msg]) != 1:
            self.message.value = "<span style='color:#c62828'>not acknowledged: the broker did not answer</span>"
            return None
        self.message.value = ""
        self.add_events([msg])
        return msg

    def _render(self) -> None:
        shown = self.shown()
        waiting = sum(a.latched for a in shown)
        more = f" ({len(shown) - MAX_ROWS} older not shown)" if len(shown) > MAX_ROWS else ""
        self.title.value = (f"<b class='dtlive-alarm-title' data-waiting='{waiting}'>Alarms</b>: "
                            + (f"{waiting} waiting for an acknowledgement, " if waiting else "")
                            + f"{len(shown)} open{more}")
        for i, row in enumerate(self.rows.children):
            alarm = shown[i] if i < len(shown) else None
            self._ids[i] = alarm.id if alarm else None
            if alarm is not None:
                self._lines[i].value = alarm_html(alarm)
                self._buttons[i].disabled = not alarm.latched
            row.layout.display = "flex" if alarm else "none"

    def close(self) -> None:
        """Stop following the topic."""
        self.feed.stop()
        super().close()
