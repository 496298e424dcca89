"""Find or start the whole dtlive stack (broker, emulator, processor, recorder, alert listener) from Python.

``ensure_stack()`` reuses what is already running and starts only what is missing:
the embedded broker (unless ``DTLIVE_BOOTSTRAP`` points at a real Kafka), then, when no
fresh window has been published lately, ``dtlive process``, ``dtlive record``,
``dtlive alerts listen`` and a simulated ``dtlive emulate`` as background processes. Their pids
and logs live in the state directory, so a second notebook finds the same stack, not a new one.

The embedded broker keeps every message in memory, and each fetch it answers costs more the more batches are
stored: it suits demos and notebook sessions; for a long shift point ``DTLIVE_BOOTSTRAP`` at a real Kafka, or
restart the stack between runs (benchmarks/README.md, "Broker soak", has the figures).

>>> stack = ensure_stack(rate=1000)        # doctest: +SKIP
>>> stack.bootstrap                        # doctest: +SKIP
'127.0.0.1:9092'
>>> stack.stop()    # stops only what this call started  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dtlive.broker import _pid_alive, _state_lock, default_state_dir, find_running
from dtlive.config import load_config


@dataclass
class Stack:
    """Where the stack runs and which of its processes this call started."""

    bootstrap: str
    started: dict[str, int] = field(default_factory=dict)  # name -> pid
    reused: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the processes this call started (SIGINT first: the processor commits and exits)."""
        for name in ("emulator", "alerts", "processor", "recorder", "broker"):
            pid = self.started.pop(name, None)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _spawn(name: str, args: list[str], state_dir: Path, env: dict) -> tuple[int, str]:
    log = state_dir / f"stack-{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dtlive.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc.pid, str(log)


def _recorded(state_dir: Path) -> dict[str, int]:
    path = state_dir / "stack.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in pids.items() if isinstance(v, int) and _pid_alive(v)}


def fresh_windows(bootstrap: str, topic: str, within_s: float = 10.0) -> bool:
    """True when the newest window on ``topic`` ended less than ``within_s`` seconds ago."""
    from dtlive.messages import utc_seconds
    from dtlive.results import read_messages

    msgs = read_messages(bootstrap, topic, last=1, timeout=3)
    return bool(msgs) and time.time() - utc_seconds(msgs[-1]["window"].get("end")) < within_s


def ensure_stack(rate: float = 1000.0, fmt: str = "daq64", state_dir: str | None = None,
                 wait_for_window_s: float = 15.0) -> Stack:
    """Reuse or start the broker, the processor and a simulated emulator; wait for the first window."""
    cfg = load_config({})
    directory = default_state_dir(state_dir)
    env = {**os.environ, "DTLIVE_STATE_DIR": str(directory)}
    with _state_lock(directory):
        stack = Stack(bootstrap=cfg.bootstrap or find_running(directory) or "")
        if not stack.bootstrap:
            from dtlive.broker import EmbeddedBroker

            broker = EmbeddedBroker(state_dir=directory, stop_at_exit=False).start()
            stack.bootstrap = broker.bootstrap
            stack.started["broker"] = broker._proc.pid
            stack.logs["broker"] = str(broker.log_path)
        else:
            stack.reused.append("broker")
        env["DTLIVE_BOOTSTRAP"] = stack.bootstrap
        running = _recorded(directory)
        if "processor" in running or fresh_windows(stack.bootstrap, cfg.monitor_topic):
            stack.reused += ["processor", "recorder", "alerts", "emulator"]
        else:
            from dtlive.kafka import ensure_topics

            ensure_topics(cfg, stack.bootstrap, [cfg.hits_topic])
            for name, args in (("processor", ["process"]), ("recorder", ["record"]), ("alerts", ["alerts", "listen"]),
                               ("emulator", ["emulate", "--simulate", "--rate", str(rate), "--format", fmt])):
                stack.started[name], stack.logs[name] = _spawn(name, args, directory, env)
            (directory / "stack.json").write_text(json.dumps({**running, **stack.started}))
    deadline = time.monotonic() + wait_for_window_s
    while "processor" in stack.started and time.monotonic() < deadline:
        if fresh_windows(stack.bootstrap, cfg.monitor_topic, within_s=60):
            break
        time.sleep(0.5)
    return stack
