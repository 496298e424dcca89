"""Process faults against the real broker: two processors with one identity, and a restart right after kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from contracts import read_messages
from waiting import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def windows(bootstrap: str) -> list[dict]:
    return read_messages(bootstrap, "dt.monitor", timeout=3)


def test_a_second_processor_with_the_same_identity_refuses_and_the_first_goes_on(own_broker, services):
    first = services.start("first", "process", "--no-ledger")
    services.start("emulate", "emulate", "--simulate", "--rate", "1000")
    wait_for(lambda: len(windows(own_broker.bootstrap)) >= 2, 180,
             lambda: f"the first windows:\n{services.log('first')[-2000:]}")
    second = subprocess.run([sys.executable, "-m", "dtlive", "--bootstrap", own_broker.bootstrap, "process",
                             "--no-ledger"], env=services.env, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert "already running" in second.stderr and "Traceback" not in second.stderr, second.stderr[-2000:]
    published = len(windows(own_broker.bootstrap))
    wait_for(lambda: len(windows(own_broker.bootstrap)) >= published + 2, 60, "more windows from the first")
    assert first.poll() is None
    assert "fenced" not in services.log("first")
    ids = [m["window"]["id"] for m in windows(own_broker.bootstrap)]
    assert len(ids) == len(set(ids))


def test_a_processor_killed_9_can_be_restarted_at_once(own_broker, services):
    first = services.start("first", "process", "--no-ledger")
    services.start("emulate", "emulate", "--simulate", "--rate", "1000")
    wait_for(lambda: len(windows(own_broker.bootstrap)) >= 2, 180, "the first windows")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    again = services.start("again", "process", "--no-ledger")  # its heartbeat is still fresh, its pid is gone
    published = len(windows(own_broker.bootstrap))
    wait_for(lambda: len(windows(own_broker.bootstrap)) >= published + 2, 120,
             lambda: f"windows from the restarted processor:\n{services.log('again')[-2000:]}")
    assert again.poll() is None
    ids = [m["window"]["id"] for m in windows(own_broker.bootstrap)]
    assert len(ids) == len(set(ids))


def test_a_simulated_daq_killed_9_and_restarted_goes_on_where_the_clock_is(own_broker, services):
    """Its orbit counter follows the wall clock, so the restarted emulator's hits are never late."""
    services.start("process", "process", "--no-ledger")
    first = services.start("emulate", "emulate", "--simulate", "--rate", "1000")
    wait_for(lambda: len(windows(own_broker.bootstrap)) >= 2, 180, "the first windows")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    published = len(windows(own_broker.bootstrap))
    services.start("again", "emulate", "--simulate", "--rate", "1000")
    msgs = wait_for(lambda: len(windows(own_broker.bootstrap)) >= published + 3 and windows(own_broker.bootstrap),
                    120, "windows from the restarted emulator")
    assert sum(m["counts"]["late_hits"] for m in msgs) == 0
    ids = [m["window"]["id"] for m in msgs]
    assert ids == sorted(set(ids))
