"""Telling people about alarms through apprise (e-mail, Mattermost, Slack, ntfy, a JSON webhook, ...), rate limited.

:class:`Notifier` takes ``dtlive.alarm/1`` events whose ``notify`` is true; at most ``limit`` notifications go
out per ``minutes`` (:class:`dtlive.core.ratelimit.Budget`), the others are counted by event and summarised in
one line in the next notification that goes out (or on their own by :meth:`Notifier.tick` once the budget
allows). Sending happens on a background thread, so a slow or unreachable notification service never holds up
the caller; a failed send is logged once per distinct reason and counted. ``urls`` are apprise URLs
(``mailto://``, ``mmosts://``, ``ntfy://``, ``json://host:port/path`` ...; see the apprise documentation).

>>> n = Notifier([], limit=2, minutes=1)   # no URL: nothing is sent, everything counted
>>> n.send({"event": "raised", "notify": True, "chamber": 2, "severity": "error"}), n.queued
(False, 0)
>>> n.close()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

from dtlive.core.ratelimit import Budget, summary

log = logging.getLogger(__name__)


def alarm_text(msg: dict) -> tuple[str, str]:
    """Title and body of a notification about one alarm event.

    >>> title, body = alarm_text({"event": "raised", "alarm_id": "a1", "chamber": 2, "severity": "error",
    ...                           "status": 4, "label": "bad", "reasons": ["dead_channels: 64 dead"],
    ...                           "time": "2026-12-05T10:00:00.000Z", "processor": "p"})
    >>> title
    'dtlive ERROR: chamber 2 alarm raised'
    >>> body.splitlines()[0]
    'chamber 2 (processor p) status 4 (bad) at 2026-12-05 10:00:00 UTC: dead_channels: 64 dead'
    """
    sev = (msg.get("severity") or "info").upper()
    title = f"dtlive {sev}: chamber {msg.get('chamber')} alarm {msg.get('event')}"
    when = str(msg.get("time") or "")[:19].replace("T", " ")
    reasons = msg.get("reasons") or []
    status = f"status {msg.get('status')}" + (f" ({msg['label']})" if msg.get("label") else "")
    body = (f"chamber {msg.get('chamber')} (processor {msg.get('processor') or '?'}) {status} at {when} UTC"
            + (f": {reasons[0]}" if reasons else "")
            + f"\nalarm {msg.get('alarm_id')}: acknowledge with `dtlive alarms ack {msg.get('alarm_id')} --by NAME`")
    return title, body


class Notifier:
    """Send notifying alarm events to apprise ``urls``, at most ``limit`` per ``minutes`` (module docstring).

    ``clock`` gives UNIX seconds (tests may step it).

    >>> n = Notifier(["json://127.0.0.1:9/"], limit=1, minutes=10)
    >>> n.send({"event": "repeated", "notify": False}), n.queued  # not a notifying event
    (False, 0)
    >>> n.close()
    """

    def __init__(self, urls: Iterable[str], limit: int = 10, minutes: float = 10.0,
                 clock: Callable[[], float] = time.time):
        self.urls = [u for u in urls if u]
        self.minutes = minutes
        self.budget = Budget(limit, minutes * 60.0)
        self.clock = clock
        self.queued = 0  # handed to the sending thread
        self.delivered = 0  # apprise said it was sent
        self.failed = 0
        self._reasons: set[str] = set()
        self._queue: queue.Queue = queue.Queue(maxsize=1000)
        self._thread: threading.Thread | None = None
        self._apprise = None
        if self.urls:
            import apprise

            self._apprise = apprise.Apprise()
            for url in self.urls:
                if not self._apprise.add(url):
                    log.warning("alarm notifications: apprise does not understand the URL %r; left out", url)
            self._thread = threading.Thread(target=self._work, name="alarm-notify", daemon=True)
            self._thread.start()

    def send(self, msg: dict) -> bool:
        """Queue a notification about ``msg`` when it is a notifying event within the budget; True when queued."""
        if not msg.get("notify") or self._apprise is None:
            return False
        if not self.budget.offer(self.clock(), str(msg.get("event"))):
            return False
        title, body = alarm_text(msg)
        if self.budget.held:
            body += "\n" + summary(self.budget.take_held(), self.minutes)
        return self._put(title, body, msg.get("severity"))

    def tick(self) -> bool:
        """Send the summary of what was held back once the budget allows; True when one was queued."""
        if self._apprise is None or not self.budget.held or not self.budget.ready(self.clock()):
            return False
        self.budget.offer(self.clock(), "summary")
        text = summary(self.budget.take_held(), self.minutes)
        return self._put("dtlive: alarm notifications held back", text, None)

    def _put(self, title: str, body: str, sev: str | None) -> bool:
        try:
            self._queue.put_nowait((title, body, sev))
        except queue.Full:
            log.warning("alarm notifications: 1000 waiting to be sent; this one is dropped: %s", title)
            return False
        self.queued += 1
        return True

    def _work(self) -> None:
        import apprise

        types = {"error": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING}
        assert self._apprise is not None  # the worker runs only with URLs to send to
        while True:
            item = self._queue.get()
            if item is None:
                return
            title, body, sev = item
            ok: apprise.AppriseResult | bool  # truthy when delivered
            try:
                ok = self._apprise.notify(title=title, body=body, notify_type=types.get(sev, apprise.NotifyType.INFO))
            except Exception as exc:  # noqa: BLE001 - a notification service never stops the alarms
                ok, reason = False, f"{type(exc).__name__}: {exc}"
            else:
                reason = "a notification service refused it or did not answer"
            if ok:
                self.delivered += 1
            else:
                self.failed += 1
                if reason not in self._reasons:
                    self._reasons.add(reason)
                    log.warning("alarm notifications: not delivered (%s); alarms go on to the alarm topic", reason)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (waiting at most ``timeout_s``), then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            self._thread = None
