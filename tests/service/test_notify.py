"""Alarm notifications through apprise to a real HTTP server on loopback (apprise's json:// service): what is
sent, the rate limit with the held-back events summarised, and an unreachable service that stops nothing."""

from __future__ import annotations

import pytest
from webhook import Hook

from dtlive.core.alarms import on_status
from dtlive.core.messages import iso_utc
from dtlive.service.notify import Notifier


@pytest.fixture
def hook(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    h = Hook()
    yield h
    h.close()


def raised(chamber: int, t: float = 0.0) -> dict:
    _, (msg,) = on_status({}, {"processor": "p", "chamber": chamber, "previous": 0, "status": 4, "label": "bad",
                               "reasons": ["dead_channels: 64 dead"], "start": iso_utc(1_764_928_800 + t)})
    return msg


def test_notifications_reach_the_service_at_most_n_per_period_and_the_rest_are_summarised(hook):
    now = [1000.0]
    n = Notifier([f"json://127.0.0.1:{hook.port}/alarms"], limit=2, minutes=1, clock=lambda: now[0])
    try:
        sent = [n.send(raised(c % 4, c)) for c in range(5)]
        assert sent == [True, True, False, False, False]
        repeat = {**raised(0), "event": "repeated", "notify": False}
        assert n.send(repeat) is False and n.budget.held == 3  # repeats are never sent, nor counted
        assert not n.tick()  # the budget is used up for this minute
        posts = hook.wait(2)
        assert len(posts) == 2 and posts[0]["path"] == "/alarms"
        assert posts[0]["title"] == "dtlive ERROR: chamber 0 alarm raised"
        assert "status 4 (bad)" in posts[0]["message"] and "dtlive alarms ack" in posts[0]["message"]
        assert posts[0]["type"] == "failure"
        now[0] += 61
        assert n.tick()  # the minute is over: the summary goes out on its own
        posts = hook.wait(3)
        assert "3 more alarm events held back" in posts[2]["message"] and "(3 raised)" in posts[2]["message"]
        assert n.send(raised(1, 99))  # one more within the new minute's budget, no summary left to add
        posts = hook.wait(4)
        assert "held back" not in posts[3]["message"]
    finally:
        n.close()
    assert (n.queued, n.delivered, n.failed) == (4, 4, 0)


def test_a_summary_rides_on_the_next_notification_once_the_budget_allows(hook):
    now = [0.0]
    n = Notifier([f"json://127.0.0.1:{hook.port}/"], limit=1, minutes=10, clock=lambda: now[0])
    try:
        assert n.send(raised(0)) and not n.send(raised(1)) and not n.send(raised(2))
        now[0] += 601
        assert n.send(raised(3))
        posts = hook.wait(2)
        assert "chamber 3" in posts[1]["title"] and "2 more alarm events held back" in posts[1]["message"]
    finally:
        n.close()


def test_an_unreachable_service_is_counted_and_stops_nothing(hook):
    port = hook.port
    hook.close()  # nothing listens there any more
    n = Notifier([f"json://127.0.0.1:{port}/"], limit=5, minutes=1)
    assert n.send(raised(0))
    n.close()
    assert n.delivered == 0 and n.failed == 1
