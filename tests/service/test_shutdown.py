"""A service that does not stop within its grace time after SIGTERM is ended, and says where it hung."""

from __future__ import annotations

import signal
import time

import pytest
from waiting import wait_for

from dtlive.service.shutdown import EXIT_NOT_STOPPED, StopOnSignal

pytestmark = pytest.mark.unit


def test_a_service_still_running_after_the_grace_time_is_ended_and_says_where_it_was(caplog):
    exits: list[int] = []
    asked: list[bool] = []
    with StopOnSignal(grace_s=0.3, exit=exits.append) as stop:
        stop.on_stop(lambda: asked.append(True))
        signal.raise_signal(signal.SIGTERM)
        wait_for(lambda: exits, 10, "the grace time to run out")  # the main thread "hangs" here
    assert asked == [True] and exits == [EXIT_NOT_STOPPED]
    said = [r.getMessage() for r in caplog.records if r.name == "dtlive.service.shutdown" and r.levelname == "ERROR"]
    assert len(said) == 1 and "did not stop within 0 s of SIGTERM" in said[0], said
    assert "in test_a_service_still_running_after_the_grace_time_is_ended_and_says_where_it_was" in said[0], said


def test_a_service_that_stops_in_time_is_not_ended():
    exits: list[int] = []
    with StopOnSignal(grace_s=0.3, exit=exits.append) as stop:
        stop.on_stop(lambda: None)
        signal.raise_signal(signal.SIGTERM)
        wait_for(lambda: stop.requested == "SIGTERM", 5, "the signal to be seen")
    time.sleep(0.6)  # twice the grace time: the timer was cancelled when the service stopped
    assert exits == []
