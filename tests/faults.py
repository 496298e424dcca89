"""Fault injection helpers: a broker of the test's own (stall, restart) and `dtlive` services run as subprocesses,
as users run them, with their logs in files; everything is ended at the end of the test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from dtlive.kafka.broker import EmbeddedBroker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnBroker:
    """A broker only this test uses, which it may stall and restart (on the same port, empty, as a real
    restart of the embedded broker is)."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.port = free_port()
        self.broker = EmbeddedBroker(port=self.port, state_dir=state_dir).start()

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def pause(self) -> None:
        os.kill(self.broker.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.broker.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.broker.stop()
        self.broker = EmbeddedBroker(port=self.port, state_dir=self.state_dir).start()

    def partitions(self) -> dict[str, int]:
        topics = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10).topics
        return {name: len(t.partitions) for name, t in topics.items()}

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, TypeError):
            self.resume()
        self.broker.stop()


@pytest.fixture
def own_broker(tmp_path):
    b = OwnBroker(tmp_path / "broker")
    yield b
    b.close()


class Services:
    """`dtlive` subprocesses with their stderr in files; all are ended at the end of the test."""

    def __init__(self, bootstrap: str, tmp_path: Path):
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "DTLIVE_DB": f"sqlite:///{tmp_path / 'ledger.sqlite'}",
                    "DTLIVE_HISTORY": str(tmp_path / "history"), "DTLIVE_STATE_DIR": str(tmp_path / "state")}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        err = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "dtlive", "--bootstrap", self.bootstrap, *args],
                                            env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str, within_s: float = 8.0) -> tuple[int, float]:
        """SIGTERM one service; its exit status and how long it took to exit."""
        proc = self.procs[name]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(within_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{name} did not stop within {within_s} s of SIGTERM:\n{self.log(name)[-2000:]}")
        return proc.returncode, time.monotonic() - started

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def services(own_broker, tmp_path):
    s = Services(own_broker.bootstrap, tmp_path)
    yield s
    s.close()
