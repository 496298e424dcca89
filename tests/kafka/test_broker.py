"""The embedded Tansu broker, against the real binary (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from dtlive.kafka import broker as brk
from dtlive.kafka.broker import BrokerError, EmbeddedBroker, create_topics, ensure_broker, find_running

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_gone(pid: int, wait_s: float = 5) -> bool:
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z":
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def brokers():
    """Collects brokers started by a test and always stops them."""
    started: list[EmbeddedBroker] = []
    yield started
    for b in started:
        b.stop()


@pytest.fixture
def listening_socket():
    """A plain socket listening on a loopback port (stands in for 'someone else uses the port')."""
    socks = []

    def make(port: int = 0) -> socket.socket | None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            return None  # already in use by someone else: just as good
        s.listen()
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close()


def _roundtrip(bootstrap: str, topic: str) -> bytes:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=b"hello-dt", key=b"k")
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])  # assign(): no slow group join on Tansu
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                return msg.value()
        raise AssertionError("message not consumed")
    finally:
        consumer.close()


def test_start_roundtrip_state_and_stop(tmp_path, brokers):
    port = _free_port()
    b = EmbeddedBroker(port=port, state_dir=tmp_path)
    brokers.append(b)
    t0 = time.monotonic()
    assert b.start() is b
    startup = time.monotonic() - t0
    assert startup < 10
    assert b.bootstrap == f"127.0.0.1:{port}"
    assert b.running and b.pid

    create_topics(b.bootstrap, ["t.roundtrip"])
    assert _roundtrip(b.bootstrap, "t.roundtrip") == b"hello-dt"

    state = json.loads((tmp_path / f"broker-{port}.json").read_text())
    assert state["pid"] == b.pid
    assert state["bootstrap"] == b.bootstrap
    assert state["started_at"].endswith("+00:00")
    assert Path(state["log"]).exists()
    assert find_running(tmp_path) == b.bootstrap
    assert ensure_broker(tmp_path) == (b.bootstrap, None)  # reused, not owned

    pid = b.pid
    b.stop()
    assert not b.running
    assert _pid_gone(pid)
    assert not list(tmp_path.glob("broker-*.json"))
    assert find_running(tmp_path) is None
    b.stop()  # idempotent


def test_context_manager_and_ensure_broker_starts_one(tmp_path, monkeypatch, brokers):
    monkeypatch.setattr(brk, "DEFAULT_PORT", _free_port())
    monkeypatch.setenv("DTLIVE_STATE_DIR", str(tmp_path))  # no state_dir argument: the env var decides
    bootstrap, owned = ensure_broker()
    assert owned is not None
    brokers.append(owned)
    assert bootstrap == f"127.0.0.1:{brk.DEFAULT_PORT}"
    assert find_running() == bootstrap
    owned.stop()
    assert find_running() is None

    with EmbeddedBroker(state_dir=tmp_path) as b:
        brokers.append(b)
        assert AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=5).cluster_id == b.cluster_id
        pid = b.pid
    assert _pid_gone(pid)


def test_default_port_taken_picks_another(tmp_path, monkeypatch, brokers):
    monkeypatch.setattr(brk, "DEFAULT_PORT", _free_port())
    first = EmbeddedBroker(state_dir=tmp_path).start()
    brokers.append(first)
    assert first.port == brk.DEFAULT_PORT
    second = EmbeddedBroker(state_dir=tmp_path).start()
    brokers.append(second)
    assert second.port != first.port
    assert second.running and first.running
    # both really answer, each as itself
    for b in (first, second):
        assert AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=5).cluster_id == b.cluster_id
    assert len(brk.running_brokers(tmp_path)) == 2


def test_real_default_port_in_use_picks_another(tmp_path, listening_socket, brokers):
    listening_socket(brk.DEFAULT_PORT)  # occupy 9092 (or it is already in use)
    b = EmbeddedBroker(state_dir=tmp_path).start()
    brokers.append(b)
    assert b.port != brk.DEFAULT_PORT


def test_explicit_taken_port_is_an_error(tmp_path, listening_socket, brokers):
    port = _free_port()
    assert listening_socket(port) is not None
    b = EmbeddedBroker(port=port, state_dir=tmp_path)
    brokers.append(b)
    with pytest.raises(BrokerError, match=f"port {port} .*already in use"):
        b.start()
    assert not b.running
    assert not list(tmp_path.glob("broker-*.json"))


def test_explicit_port_of_running_broker_names_it(tmp_path, brokers):
    first = EmbeddedBroker(port=_free_port(), state_dir=tmp_path).start()
    brokers.append(first)
    clash = EmbeddedBroker(port=first.port, state_dir=tmp_path)
    brokers.append(clash)
    with pytest.raises(BrokerError, match=f"already running at {first.bootstrap}"):
        clash.start()
    assert first.running


def test_broker_losing_bind_race_is_reported(tmp_path, listening_socket, brokers):
    """Tansu itself exits (with status 0!) when its port is taken; start() must say so, not hang."""
    port = _free_port()
    b = EmbeddedBroker(port=port, state_dir=tmp_path)
    brokers.append(b)
    b.requested_port = None  # skip the pre-check by making the port look automatic ...
    sock = listening_socket(port)
    assert sock is not None
    b._spawn(brk.broker_binary(), port)  # ... and spawn straight onto the taken port
    with pytest.raises(brk._PortTaken):
        b._wait_ready(time.monotonic() + 10)
    assert "AddrInUse" in b.log_tail(200)
    assert not b.running


def test_non_loopback_host_refused(tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedBroker(host="0.0.0.0", state_dir=tmp_path)
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedBroker(host="example.org", state_dir=tmp_path)


def test_stale_state_files_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "broker-45678.json"
    stale.write_text(json.dumps({"pid": dead.pid, "bootstrap": "127.0.0.1:45678", "started_at": "x", "log": "x"}))
    corrupt = tmp_path / "broker-45679.json"
    corrupt.write_text("{not json")
    # alive pid, but not a Tansu process (pid reused): stale too
    reused = tmp_path / "broker-45680.json"
    reused.write_text(json.dumps({"pid": os.getpid(), "bootstrap": "127.0.0.1:45680", "started_at": "x", "log": "x"}))
    assert find_running(tmp_path) is None
    assert not stale.exists() and not corrupt.exists() and not reused.exists()


def test_create_topics_idempotent_multi_partition(tmp_path, brokers):
    b = EmbeddedBroker(port=_free_port(), state_dir=tmp_path).start()
    brokers.append(b)
    suffix = uuid.uuid4().hex[:6]
    topics = {f"dt.hits.{suffix}": 4, f"dt.monitor.{suffix}": 1}
    assert sorted(create_topics(b.bootstrap, topics)) == sorted(topics)
    assert create_topics(b.bootstrap, topics) == []  # idempotent
    assert create_topics(b.bootstrap, [f"dt.hits.{suffix}", f"other.{suffix}"], config={"client.id": "t"}) == [
        f"other.{suffix}"
    ]
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=5)
    assert len(md.topics[f"dt.hits.{suffix}"].partitions) == 4
    assert len(md.topics[f"dt.monitor.{suffix}"].partitions) == 1
    assert len(md.topics[f"other.{suffix}"].partitions) == 1
    # produce to the last partition of the multi-partition topic
    p = Producer({"bootstrap.servers": b.bootstrap})
    p.produce(f"dt.hits.{suffix}", b"x", partition=3)
    assert p.flush(10) == 0
    with pytest.raises(ValueError, match="invalid Kafka topic name"):
        create_topics(b.bootstrap, ["bad name!"])
    with pytest.raises(ValueError, match="partitions"):
        create_topics(b.bootstrap, {"zero": 0})


def test_create_topics_unreachable_is_clear():
    port = _free_port()
    with pytest.raises(BrokerError, match="cannot reach"):
        create_topics(f"127.0.0.1:{port}", ["x"], config={"log_level": 0}, timeout=1)


def test_stop_running_stops_recorded_broker(tmp_path, brokers):
    b = EmbeddedBroker(port=_free_port(), state_dir=tmp_path, stop_at_exit=False).start()
    brokers.append(b)
    assert brk.stop_running(tmp_path) == [b.bootstrap]
    assert _pid_gone(b.pid)
    assert find_running(tmp_path) is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_foreground_until_signal(tmp_path, sig, capsys):
    port = _free_port()
    code = (
        "import sys; from dtlive.kafka.broker import run_foreground; "
        f"sys.exit(run_foreground(port={port}, state_dir={str(tmp_path)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"listening on 127.0.0.1:{port}" in line
        assert find_running(tmp_path) == f"127.0.0.1:{port}"
        pid = json.loads((tmp_path / f"broker-{port}.json").read_text())["pid"]

        # a second foreground broker without --port is refused while one is recorded and running
        assert brk.run_foreground(state_dir=tmp_path) == 1
        assert f"already running at 127.0.0.1:{port}" in capsys.readouterr().out

        proc.send_signal(sig)
        assert proc.wait(15) == 0
        assert _pid_gone(pid)
        assert not list(tmp_path.glob("broker-*.json"))
        assert not list(tmp_path.glob("broker-*.log"))  # clean stop: log removed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_broker_stopped_when_python_exits(tmp_path):
    code = (
        "from dtlive.kafka.broker import EmbeddedBroker; "
        f"b = EmbeddedBroker(port={_free_port()}, state_dir={str(tmp_path)!r}).start(); print(b.pid, flush=True)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert _pid_gone(int(out.stdout.split()[0]))
    assert not list(tmp_path.glob("broker-*.json"))


def _fake_binary(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-broker"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_broker_exiting_at_startup_reports_log(tmp_path, monkeypatch, brokers):
    monkeypatch.setenv("CALF_TANSU_BIN", _fake_binary(tmp_path, "echo 'boom: bad flag' >&2; exit 3"))
    b = EmbeddedBroker(port=_free_port(), state_dir=tmp_path)
    brokers.append(b)
    with pytest.raises(BrokerError, match=r"exited during startup \(status 3\)[\s\S]*boom: bad flag"):
        b.start()


def test_broker_not_answering_times_out(tmp_path, monkeypatch, brokers):
    monkeypatch.setenv("CALF_TANSU_BIN", _fake_binary(tmp_path, "echo 'hanging'; exec sleep 30"))
    b = EmbeddedBroker(port=_free_port(), state_dir=tmp_path)
    brokers.append(b)
    t0 = time.monotonic()
    with pytest.raises(BrokerError, match=r"did not answer[\s\S]*hanging"):
        b.start(wait_s=0.5)
    assert time.monotonic() - t0 < 5
    assert not b.running  # the hung process was killed
