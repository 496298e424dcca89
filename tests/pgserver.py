"""A private PostgreSQL server for fault tests: started in a temporary directory, stopped and restarted at will.

The server runs from the PostgreSQL binaries of the machine (``/usr/lib/postgresql/*/bin`` or ``PATH``)
on a free loopback port, with trust authentication for the ``postgres`` user. PostgreSQL refuses to
run as root, so as root it runs as the ``postgres`` system user (``runuser``); the data directory is
owned by that user. Tests skip, with the reason, only when the binaries are absent.

>>> server = PgServer.create()                                      # doctest: +SKIP
>>> server.start(); server.url                                      # doctest: +SKIP
'postgresql+psycopg://postgres@127.0.0.1:41234/postgres'
>>> server.stop(); server.start(); server.destroy()                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    """The directory with ``initdb``/``pg_ctl`` (the newest installed version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One private PostgreSQL instance (data directory, port, log) that a test can stop and start."""

    def __init__(self, bin_dir: Path, root: Path, port: int, user: str | None):
        self.bin_dir, self.root, self.port, self.user = bin_dir, root, port, user
        self.data = root / "data"
        self.logfile = root / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the server's ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls) -> PgServer:
        """initdb a new cluster in a temporary directory on a free port (not started)."""
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
                                    "or on PATH")
        user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as e:
                raise FileNotFoundError("running as root needs a 'postgres' system user to run PostgreSQL") from e
            user = "postgres"
        root = Path(tempfile.mkdtemp(prefix="dtlive-pg-"))
        if user is not None:
            shutil.chown(root, user)
        server = cls(bin_dir, root, _free_port(), user)
        server._run("initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--no-sync", "--no-instructions")
        return server

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
        return out

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                   "-c full_page_writes=off -c synchronous_commit=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w",
                  "-t", str(int(timeout)), "start", timeout=timeout + 10)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clients are disconnected; ``immediate``: like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        """Whether the server accepts TCP connections on its port."""
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def wait_down(self, timeout: float = 15.0) -> None:
        """Wait until the port refuses connections."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on port {self.port} still answers")
            time.sleep(0.1)

    def destroy(self) -> None:
        """Stop the server if it runs and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self, name: str) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as c:
                c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL server for the session (skipped only when PostgreSQL is not installed)."""
    try:
        server = PgServer.create()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def pg_db(pg_server):
    """A fresh database on the private server, and the server (a test may stop it; it is restarted after)."""
    url = pg_server.new_database(f"dtlive_{uuid.uuid4().hex[:10]}")
    yield url, pg_server
    if not pg_server.running():
        pg_server.start()
