"""Find or start the whole dtlive stack (broker, emulator, processor, recorder, alert listener) from Python.

``ensure_stack()`` reuses what is already running and starts only what is missing:
the embedded broker (unless ``DTLIVE_BOOTSTRAP`` points at a real Kafka), then ``dtlive process``,
``dtlive record``, ``dtlive alerts listen`` and a simulated ``dtlive emulate`` as background processes.
Their pids, command lines and logs live in the state directory (``stack.json``), so a second notebook
finds the same stack, not a new one. A recorded service counts as running only when its pid is alive
and still is that service (same command line, same start time); one that is not is started again and
named in :attr:`Stack.restarted`. ``dtlive stop`` (:func:`stop_stack`) stops what was recorded.

The embedded broker keeps every message in memory, and each fetch it answers costs more the more batches are
stored: it suits demos and notebook sessions; for a long shift point ``DTLIVE_BOOTSTRAP`` at a real Kafka, or
restart the stack between runs (benchmarks/README.md, "Broker soak", has the figures).

>>> stack = ensure_stack(rate=1000)        # doctest: +SKIP
>>> stack.bootstrap                        # doctest: +SKIP
'127.0.0.1:9092'
>>> stack.stop()    # stops only what this call started  # doctest: +SKIP
>>> stop_stack()    # stops everything recorded in the state directory  # doctest: +SKIP
[Stopped(name='emulator', pid=4242, how='SIGTERM'), ...]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtlive.config import load_config
from dtlive.kafka.broker import default_state_dir, find_running, state_lock
from dtlive.service import extras
from dtlive.service.processes import pid_alive

log = logging.getLogger(__name__)

RECORD = "stack.json"
STOP_ORDER = ("emulator", "alerts", "processor", "recorder", "broker")  # the data source first, the broker last
SERVICE_ARGS = {"processor": ["process"], "recorder": ["record"], "alerts": ["alerts", "listen"],
                "emulator": ["emulate"]}  # how a service's command line names it (the emulator's options vary)
SERVICE_EXTRAS = {"recorder": "ledger", "alerts": "alerts"}  # services that need more than the core (pyproject.toml)


@dataclass
class Stack:
    """Where the stack runs and which of its processes this call started (``restarted``: found dead, started).

    >>> import subprocess
    >>> daq = subprocess.Popen(["sleep", "60"])  # stands for a service this call started
    >>> stack = Stack("127.0.0.1:9092", started={"emulator": daq.pid}, reused=["broker", "processor"])
    >>> stack.stop(timeout=5)  # only what it started; the reused services keep running
    >>> stack.started, pid_alive(daq.pid)
    ({}, False)
    """

    bootstrap: str
    started: dict[str, int] = field(default_factory=dict)  # name -> pid
    reused: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)  # name -> why not started (its extra is not installed)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the processes this call started (SIGTERM first: the services commit and exit)."""
        for name in STOP_ORDER:
            pid = self.started.pop(name, None)
            if pid is not None:
                stop_process(pid, timeout)


@dataclass(frozen=True)
class Stopped:
    """What :func:`stop_stack` did to one recorded service: ``how`` is SIGTERM, SIGKILL or ``not running``.

    >>> print(Stopped("processor", 4242, "SIGTERM"))
    processor: stopped pid 4242 (SIGTERM)
    >>> print(Stopped("recorder", 4243, "not running (its pid now runs something else)"))
    recorder: pid 4243 was not running (its pid now runs something else) (record removed)
    """

    name: str
    pid: int
    how: str

    def __str__(self) -> str:
        if self.how.startswith("not running"):
            return f"{self.name}: pid {self.pid} was {self.how} (record removed)"
        return f"{self.name}: stopped pid {self.pid} ({self.how})"


# ------------------------------------------------------------------------------------------- process identity


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, pgrp, session, ..., starttime at index 19), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_identity(pid: int) -> dict[str, Any] | None:
    """``{"cmdline": [...], "start": ticks}`` of a live process (from /proc), or None when it cannot be read.

    >>> proc = subprocess.Popen(["sleep", "60"])
    >>> _ = _identity_of_new(proc.pid)  # until it has exec'd: a process still exec'ing shows an empty command line
    >>> process_identity(proc.pid)["cmdline"]
    ['sleep', '60']
    >>> proc.kill(); proc.wait()
    -9
    >>> process_identity(2**22 + 1) is None  # above the kernel's largest pid: no such process
    True
    """
    stat = _stat_fields(pid)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if stat is None or len(stat) < 20:
        return None
    return {"cmdline": [a.decode(errors="replace") for a in argv if a], "start": int(stat[19])}


def _identity_of_new(pid: int, timeout: float = 5.0) -> dict[str, Any] | None:
    """:func:`process_identity` of a process just started: its command line is empty while it still execs."""
    deadline = time.monotonic() + timeout
    ident = process_identity(pid)
    while ident is not None and not ident["cmdline"] and time.monotonic() < deadline:
        time.sleep(0.01)
        ident = process_identity(pid)
    return ident


def _has_run(argv: list[str], run: list[str]) -> bool:
    return any(argv[i:i + len(run)] == run for i in range(len(argv)))


def is_service(name: str, pid: int, identity: dict[str, Any] | None = None) -> bool:
    """True when ``pid`` is alive and is the recorded dtlive service ``name``.

    With a recorded ``identity`` (what :func:`ensure_stack` writes) the command line and the start time
    must match; without one (pids recorded by the hub's service runner) the command line must be a
    ``python -m dtlive`` command running that service. Where /proc cannot be read, a live pid is trusted.

    >>> is_service("processor", os.getpid(), {"cmdline": ["not", "this"], "start": 0})
    False
    """
    if not pid_alive(pid):
        return False
    now = process_identity(pid)
    if now is None:
        return True
    if identity:
        return now["cmdline"] == identity.get("cmdline") and now["start"] == identity.get("start")
    if name == "broker":
        return any("tansu" in a for a in now["cmdline"])
    runner = "dtlive" in now["cmdline"] or "dtlive.deploy.hub" in now["cmdline"]  # the hub's runner, before its exec
    return runner and _has_run(now["cmdline"], SERVICE_ARGS.get(name, [name]))


def _group_left(pgid: int, since: int | None) -> list[int]:
    """Live processes of session/group ``pgid`` started at or after ``since`` (e.g. a killed listener's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat_fields(int(entry.name))
        if stat is None or len(stat) < 20 or stat[0] == "Z":
            continue
        if int(stat[2]) == pgid and int(stat[3]) == pgid and (since is None or int(stat[19]) >= since):
            found.append(int(entry.name))
    return found


def sweep_group(pgid: int, since: int | None) -> int:
    """SIGKILL what is left of a dead or stopped service's session (e.g. the workers of a killed listener).

    Only processes started at or after ``since`` (the service's recorded start) are touched; without it,
    nothing is. Returns how many were killed.

    >>> proc = subprocess.Popen(["sleep", "60"], start_new_session=True)  # leads a session of its own
    >>> sweep_group(proc.pid, None)  # without the service's start time nothing is touched
    0
    >>> sweep_group(proc.pid, process_identity(proc.pid)["start"]), pid_alive(proc.pid)
    (1, False)
    """
    if since is None:
        return 0
    left = _group_left(pgid, since)
    for child in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 5.0  # a killed process takes a moment to exit (freeing its memory)
    while any(pid_alive(p) for p in left) and time.monotonic() < deadline:
        for p in left:
            _reap(p)
        time.sleep(0.02)
    return len(left)


def stop_process(pid: int, timeout: float = 10.0, since: int | None = None) -> str:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL it and what is left of its process group.

    The group (the services run as session leaders) is swept only for processes started at or after
    ``since`` (the leader's recorded start), so a recycled group id is never touched. Returns ``"SIGTERM"``
    when it stopped in time, else ``"SIGKILL"``.

    >>> stop_process(subprocess.Popen(["sleep", "60"]).pid, timeout=5)
    'SIGTERM'
    >>> stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; echo ready; exec sleep 60"], stdout=subprocess.PIPE)
    >>> stubborn.stdout.readline()
    b'ready\\n'
    >>> stop_process(stubborn.pid, timeout=0.2), pid_alive(stubborn.pid)
    ('SIGKILL', False)
    >>> stubborn.stdout.close()
    """
    how = "SIGTERM"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        how = "SIGKILL"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    left = sweep_group(pid, since)
    if left and how == "SIGTERM":
        how = f"SIGTERM; {left} leftover process(es) of its group killed"
    end = time.monotonic() + 5.0
    while pid_alive(pid) and time.monotonic() < end:
        _reap(pid)
        time.sleep(0.02)
    return how


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # our own child (started by this process): no zombie left


# ------------------------------------------------------------------------------------------------- the record


def read_record(state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``stack.json`` of the state directory: ``{name: pid, ..., "identity": {name: {...}}, "bootstrap": ...}``.

    >>> import tempfile
    >>> state = Path(tempfile.mkdtemp())
    >>> read_record(state)  # nothing recorded
    {}
    >>> _ = (state / RECORD).write_text('{"processor": 4242, "bootstrap": "127.0.0.1:9092"}')
    >>> read_record(state)["processor"]
    4242
    """
    try:
        data = json.loads((default_state_dir(state_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pids(record: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in record.items() if isinstance(v, int) and not isinstance(v, bool)}


def _write_record(directory: Path, record: dict[str, Any]) -> None:
    path = directory / RECORD
    if not _pids(record):
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _running(record: dict[str, Any]) -> dict[str, int]:
    identity = given if isinstance(given := record.get("identity"), dict) else {}
    return {name: pid for name, pid in _pids(record).items() if is_service(name, pid, identity.get(name))}


def _spawn(name: str, args: list[str], state_dir: Path, env: dict) -> tuple[int, str]:
    log_path = state_dir / f"stack-{name}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dtlive", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc.pid, str(log_path)


def fresh_windows(bootstrap: str, topic: str, within_s: float = 10.0) -> bool:
    """True when the newest window on ``topic`` ended less than ``within_s`` seconds ago.

    >>> fresh_windows("127.0.0.1:9092", "dt.monitor", within_s=10)  # a processor is publishing  # doctest: +SKIP
    True
    """
    from dtlive.core.messages import utc_seconds
    from dtlive.kafka.results import read_messages

    msgs = read_messages(bootstrap, topic, last=1, timeout=3)
    return bool(msgs) and time.time() - utc_seconds(msgs[-1]["window"].get("end")) < within_s


# --------------------------------------------------------------------------------------------- start / stop


def ensure_stack(rate: float = 1000.0, fmt: str = "daq64", state_dir: str | None = None,
                 wait_for_window_s: float = 15.0) -> Stack:
    """Reuse or start the broker, the processor, the recorder, the alert listener and a simulated emulator.

    Each recorded service is checked (alive, and still that service); what is not running is started
    (``restarted`` names those that were recorded but found gone, each also logged as a warning). The recorder and
    the alert listener need the ``ledger`` and ``alerts`` extras: without them they are not started, and ``left_out``
    says so in one line each (also logged). A new
    broker (the recorded one died) gets new services too: the old ones talked to the broker that is gone.
    No simulated DAQ is added to a running stack started elsewhere (the hub's). When nothing is recorded but fresh
    windows arrive, a stack started elsewhere (``dtlive demo``) runs: its processor is reused, nothing
    is started. Waits up to ``wait_for_window_s`` for the first window when a processor was started.

    >>> stack = ensure_stack(rate=1000)   # doctest: +SKIP
    >>> stack.bootstrap                    # doctest: +SKIP
    '127.0.0.1:9092'
    """
    cfg = load_config({})
    directory = default_state_dir(state_dir)
    env = {**os.environ, "DTLIVE_STATE_DIR": str(directory)}
    with state_lock(directory):
        record = read_record(directory)
        idents = given if isinstance(given := record.get("identity"), dict) else {}
        stack = Stack(bootstrap=cfg.bootstrap or find_running(directory) or "")
        running = _running(record)
        why: dict[str, str] = {}  # name -> why a recorded service is started again
        if not stack.bootstrap:
            from dtlive.kafka.broker import EmbeddedBroker

            if "broker" in running:  # alive but not answering: replaced
                stop_process(running.pop("broker"), timeout=5, since=(idents.get("broker") or {}).get("start"))
                why["broker"] = "did not answer"
            broker = EmbeddedBroker(state_dir=directory, stop_at_exit=False).start()
            assert broker.pid is not None, "started"
            stack.bootstrap = broker.bootstrap
            stack.started["broker"] = broker.pid
            stack.logs["broker"] = str(broker.log_path)
            if "broker" in record:
                stack.restarted.append("broker")
                log.warning("dtlive stack: broker (pid %s) %s; started again as pid %s at %s", record["broker"],
                            why.get("broker", "was not running"), broker.pid, stack.bootstrap)
        else:
            stack.reused.append("broker")
        if record.get("bootstrap") and (record["bootstrap"] != stack.bootstrap or "broker" in stack.started):
            # they talk to a broker that is gone (a new one has no topics, even at the same address)
            for name in STOP_ORDER[:-1]:
                if name in running:
                    stop_process(running.pop(name), timeout=5, since=(idents.get(name) or {}).get("start"))
                    why[name] = f"used the broker at {record['bootstrap']}, which is gone"
        env["DTLIVE_BOOTSTRAP"] = stack.bootstrap
        recorded = set(_pids(record)) - {"broker"}
        if not running and "broker" in stack.reused and fresh_windows(stack.bootstrap, cfg.monitor_topic):
            stack.reused.append("processor")  # a stack not recorded here (dtlive demo) publishes windows
            return stack
        missing = [name for name in SERVICE_ARGS if name not in running]
        if missing:
            from dtlive.kafka.clients import ensure_topics

            ensure_topics(cfg, stack.bootstrap, [cfg.hits_topic])
        args = {**SERVICE_ARGS, "emulator": ["emulate", "--simulate", "--rate", str(rate), "--format", fmt]}
        identity = {k: v for k, v in idents.items() if k in running}
        for name in SERVICE_ARGS:
            if name in running:
                stack.reused.append(name)
                continue
            if name == "emulator" and name not in recorded and "processor" in running \
                    and fresh_windows(stack.bootstrap, cfg.monitor_topic):
                continue  # a stack of the hub's fed by a real DAQ: no simulated data on top of it
            absent = extras.missing(SERVICE_EXTRAS[name]) if name in SERVICE_EXTRAS else []
            if absent:  # it would only exit saying so, again at every call
                err = extras.MissingExtra(SERVICE_EXTRAS[name], " ".join(["dtlive", *args[name]]), absent)
                stack.left_out[name] = str(err)
                log.warning("dtlive stack: %s not started: %s", name, stack.left_out[name])
                continue
            if name in recorded:  # what a dead service left (a killed listener's workers) goes first
                sweep_group(record[name], (idents.get(name) or {}).get("start"))
            stack.started[name], stack.logs[name] = _spawn(name, args[name], directory, env)
            identity[name] = _identity_of_new(stack.started[name])
            if name in recorded:
                stack.restarted.append(name)
                log.warning("dtlive stack: %s (pid %s) %s; started again as pid %s (log %s)",
                            name, record[name], why.get(name, "was not running"), stack.started[name],
                            stack.logs[name])
        if "broker" in stack.started:
            identity["broker"] = _identity_of_new(stack.started["broker"])
        _write_record(directory, {**running, **stack.started, "bootstrap": stack.bootstrap,
                                  "identity": {k: v for k, v in identity.items() if v}})
    deadline = time.monotonic() + wait_for_window_s
    while "processor" in stack.started and time.monotonic() < deadline:
        if fresh_windows(stack.bootstrap, cfg.monitor_topic, within_s=60):
            break
        time.sleep(0.5)
    return stack


def stop_stack(state_dir: str | os.PathLike[str] | None = None, timeout: float = 10.0) -> list[Stopped]:
    """Stop every service recorded in the state directory (emulator first, broker last) and clear the record.

    Each is sent SIGTERM and given ``timeout`` seconds, then killed (with what is left of its process
    group). A recorded pid that is no longer that service is not signalled, only dropped from the record.

    >>> import tempfile
    >>> stop_stack(tempfile.mkdtemp())
    []
    """
    directory = default_state_dir(state_dir)
    done: list[Stopped] = []
    with state_lock(directory):
        record = read_record(directory)
        identity = given if isinstance(given := record.get("identity"), dict) else {}
        pids = _pids(record)
        for name in sorted(pids, key=lambda n: (STOP_ORDER.index(n) if n in STOP_ORDER else 0, n)):
            pid, ident = pids[name], identity.get(name)
            if not is_service(name, pid, ident):
                left = sweep_group(pid, (ident or {}).get("start"))
                done.append(Stopped(name, pid, f"not running; {left} leftover process(es) of its group killed"
                                    if left else "not running"))
                continue
            done.append(Stopped(name, pid, stop_process(pid, timeout, since=(ident or {}).get("start"))))
            if name == "broker":
                _forget_broker(directory, pid)
        (directory / RECORD).unlink(missing_ok=True)
    return done


def _forget_broker(directory: Path, pid: int) -> None:
    for path in directory.glob("broker-*.json"):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == pid:
                path.unlink()
