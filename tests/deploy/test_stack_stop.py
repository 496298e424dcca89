"""A stack started by ``ensure_stack()`` is checked, repaired and stopped (real embedded broker, real services).

* a recorded pid counts as running only while it is that service (command line and start time);
* kill -9 of a service: the next ``ensure_stack()`` starts it again, says so, and clears what it left;
* ``dtlive stop`` stops everything recorded, one line per service, and leaves no process behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dtlive.deploy.stack import STOP_ORDER, ensure_stack, is_service, process_identity, read_record, stop_stack

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a service and what it started, e.g. the listener's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] != "Z" and int(stat[3]) == sid:
                found.append(int(entry.name))
    return found


def wait_until(cond, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(every)
    return cond()


@pytest.fixture
def stack_env(tmp_path, monkeypatch):
    """Own state directory (so ensure_stack starts its own embedded broker), topics, ledger, history."""
    tag = uuid.uuid4().hex[:8]
    state = tmp_path / "state"
    state.mkdir()
    env = {"DTLIVE_STATE_DIR": str(state), "DTLIVE_HITS_TOPIC": f"st-hits-{tag}",
           "DTLIVE_MONITOR_TOPIC": f"st-monitor-{tag}", "DTLIVE_REJECTED_TOPIC": f"st-rejected-{tag}",
           "DTLIVE_GROUP_ID": f"st-proc-{tag}", "DTLIVE_QUALITY_TOPIC": f"st-quality-{tag}",
           "DTLIVE_ANALYSES_TOPIC": f"st-analyses-{tag}", "DTLIVE_ALERTS_GROUP_ID": f"st-alerts-{tag}",
           "DTLIVE_ALERTS_REJECTED_TOPIC": f"st-alerts-rejected-{tag}", "DTLIVE_ARTIFACTS": str(tmp_path / "artifacts"),
           "DTLIVE_DB": f"sqlite:///{tmp_path / 'ledger.sqlite'}", "DTLIVE_HISTORY": str(tmp_path / "history")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DTLIVE_BOOTSTRAP", raising=False)
    monkeypatch.delenv("DTLIVE_CONFIG", raising=False)
    yield state
    stop_stack(state, timeout=5)  # whatever a failed test left


def test_a_live_pid_that_is_not_the_service_is_not_running(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert is_service("processor", sleeper.pid) is False  # alive, but not `dtlive process`
        assert wait_until(lambda: (process_identity(sleeper.pid) or {}).get("cmdline"), 5)  # exec done
        ident = process_identity(sleeper.pid)
        assert ident and ident["cmdline"] == ["sleep", "60"]
        assert is_service("processor", sleeper.pid, ident) is True  # recorded as such: it is that process
        assert is_service("processor", sleeper.pid, {**ident, "start": ident["start"] - 1}) is False  # recycled pid
        (tmp_path / "stack.json").write_text(json.dumps({"processor": sleeper.pid}))
        assert [str(s) for s in stop_stack(tmp_path)] == [f"processor: pid {sleeper.pid} was not running "
                                                          "(record removed)"]
        assert sleeper.poll() is None, "stop_stack signalled a process that is not a dtlive service"
        assert not (tmp_path / "stack.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_pid_recorded_without_identity_must_run_that_dtlive_service():
    """The hub's service runner records bare pids: then the command line must be ``python -m dtlive`` with the
    service."""
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dtlive", "record"])
    try:
        assert wait_until(lambda: (process_identity(fake.pid) or {}).get("cmdline"), 5)
        assert is_service("recorder", fake.pid) is True
        assert is_service("processor", fake.pid) is False
        assert is_service("broker", fake.pid) is False
    finally:
        fake.kill()
        fake.wait()
    assert is_service("recorder", fake.pid) is False  # gone


@pytest.mark.kafka
@pytest.mark.slow
def test_killed_service_is_restarted_and_dtlive_stop_leaves_nothing(stack_env, caplog):
    state = stack_env
    first = ensure_stack(rate=200, wait_for_window_s=60)
    assert sorted(first.started) == sorted(STOP_ORDER), first
    assert first.reused == [] and first.restarted == []
    record = read_record(state)
    assert {n: record[n] for n in STOP_ORDER} == first.started
    down = {n: (record["identity"][n], process_identity(record[n]), _stat(record[n]),
                Path(first.logs[n]).read_text()[-1500:]) for n in STOP_ORDER
            if not is_service(n, record[n], record["identity"][n])}
    assert not down, down
    # the listener runs its analyses in worker processes of its own session
    listener = first.started["alerts"]
    assert wait_until(lambda: len(session(listener)) > 1, 60), "the listener started no workers"
    listener_session = session(listener)

    os.kill(listener, signal.SIGKILL)
    assert wait_until(lambda: not alive(listener), 10)
    assert [p for p in listener_session if p != listener and alive(p)], "its workers outlive a kill -9"

    with caplog.at_level(logging.WARNING, logger="dtlive.deploy.stack"):
        second = ensure_stack(rate=200, wait_for_window_s=60)
    assert second.restarted == ["alerts"], second
    assert sorted(second.started) == ["alerts"]
    assert sorted(second.reused) == sorted(set(STOP_ORDER) - {"alerts"})
    assert second.bootstrap == first.bootstrap
    assert f"alerts (pid {listener}) was not running; started again as pid {second.started['alerts']}" in caplog.text
    assert wait_until(lambda: not [p for p in listener_session if alive(p)], 10), \
        f"what the killed listener left is still running: {[p for p in listener_session if alive(p)]}"
    assert is_service("alerts", second.started["alerts"], read_record(state)["identity"]["alerts"])

    # a third call finds everything running
    third = ensure_stack(rate=200, wait_for_window_s=0)
    assert third.started == {} and third.restarted == [] and sorted(third.reused) == sorted(STOP_ORDER)

    record = read_record(state)
    services = {n: record[n] for n in STOP_ORDER}
    everything = {p for pid in services.values() for p in session(pid)} | set(services.values())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "dtlive", "stop", "--timeout", "15s"], env=env,
                         capture_output=True, text=True, timeout=180)
    took = time.monotonic() - t0
    print(out.stdout, out.stderr, f"dtlive stop took {took:.1f} s")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == list(STOP_ORDER), lines  # one line each, in order
    for name, pid in services.items():
        assert any(line.startswith(f"dtlive stop: {name}: stopped pid {pid} (") for line in lines), lines
    assert wait_until(lambda: not [p for p in everything if alive(p)], 10), [p for p in everything if alive(p)]
    assert not (state / "stack.json").exists()
    assert not list(state.glob("broker-*.json")), "the broker's record was left"

    again = subprocess.run([sys.executable, "-m", "dtlive", "stop"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and "nothing to stop" in again.stderr and again.stdout == ""


def test_stop_help_explains():
    out = subprocess.run([sys.executable, "-m", "dtlive", "stop", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "ensure_stack()" in text and "SIGTERM" in text and "SIGKILL" in text and "--timeout" in text


@pytest.mark.kafka
@pytest.mark.slow
def test_killed_broker_gives_a_new_broker_and_services_that_use_it(stack_env, caplog):
    state = stack_env
    first = ensure_stack(rate=200, wait_for_window_s=60)
    old = {n: first.started[n] for n in STOP_ORDER}
    os.kill(old["broker"], signal.SIGKILL)
    assert wait_until(lambda: not alive(old["broker"]), 10)

    with caplog.at_level(logging.WARNING, logger="dtlive.deploy.stack"):
        second = ensure_stack(rate=200, wait_for_window_s=60)
    assert sorted(second.restarted) == sorted(STOP_ORDER), second  # the services used the broker that is gone
    assert second.reused == [] and sorted(second.started) == sorted(STOP_ORDER)
    assert f"broker (pid {old['broker']}) was not running; started again as pid {second.started['broker']}" \
        in caplog.text
    assert f"processor (pid {old['processor']}) used the broker at {first.bootstrap}, which is gone" in caplog.text
    assert wait_until(lambda: not [p for p in old.values() if alive(p)], 10), "a service of the old broker runs on"
    record = read_record(state)
    assert record["bootstrap"] == second.bootstrap
    assert all(is_service(n, record[n], record["identity"][n]) for n in STOP_ORDER)

    stopped = stop_stack(state)
    assert [s.name for s in stopped] == list(STOP_ORDER) and all(s.how.startswith("SIG") for s in stopped), stopped
    assert wait_until(lambda: not [p for p in second.started.values() if alive(p)], 10)
