"""Ledger URLs, SQLAlchemy engines and the Alembic migrations shipped in ``dtlive/migrations``."""

from __future__ import annotations

import ast
import functools
import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from dtlive import __version__

MIGRATIONS_DIR = Path(__file__).parent.with_name("migrations")
VERSION_TABLE = "dtlive_alembic_version"  # not "alembic_version": the database may be shared with other apps
_PG_MIGRATION_LOCK = 0x64746C6976  # pg_advisory_xact_lock key serialising concurrent upgrades ("dtliv")

CONNECT_TIMEOUT_S = 5  # a database host that does not answer is reported within seconds, not minutes




def default_url() -> str:
    """``DTLIVE_DB`` if set, else a SQLite file ``ledger.sqlite`` in the user's dtlive data directory.

    >>> import os
    >>> old = os.environ.get("DTLIVE_DB")
    >>> os.environ["DTLIVE_DB"] = "postgresql://dq@db.example.org/dtlive"
    >>> default_url()
    'postgresql://dq@db.example.org/dtlive'
    >>> _ = os.environ.pop("DTLIVE_DB") if old is None else os.environ.update(DTLIVE_DB=old)
    """
    if os.environ.get("DTLIVE_DB"):
        return os.environ["DTLIVE_DB"]
    from platformdirs import user_data_dir

    path = Path(user_data_dir("dtlive")) / "ledger.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def normalize_url(url: str | URL) -> URL:
    """A SQLAlchemy URL; plain ``postgresql://`` gets the installed psycopg (3) driver.

    >>> normalize_url("postgresql://dq@db.example.org/dtlive").drivername, normalize_url("sqlite://").drivername
    ('postgresql+psycopg', 'sqlite')
    """
    url = make_url(url)
    return url.set(drivername="postgresql+psycopg") if url.drivername in ("postgres", "postgresql") else url


def _libpq_timeouts(driver: str) -> dict[str, Any]:
    """libpq options: give up connecting after a few seconds; notice a dead server instead of waiting forever."""
    options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 10,
                               "keepalives_interval": 5, "keepalives_count": 3}
    try:
        if driver == "psycopg":
            import psycopg

            version = psycopg.pq.version()
        else:
            import psycopg2.extensions

            version = psycopg2.extensions.libpq_version()
    except (ImportError, AttributeError):
        return options
    if version >= 120000:  # unacknowledged writes to a frozen server fail after 30 s (libpq 12+)
        options["tcp_user_timeout"] = 30_000
    return options


def make_engine(url: str | URL, busy_timeout_s: float = 30.0) -> Engine:
    """A SQLAlchemy engine for the ledger; SQLite gets WAL, a busy timeout, foreign keys and real BEGINs.

    Write transactions on SQLite start with ``BEGIN IMMEDIATE`` (execution option ``dtlive_write``) so
    concurrent writers queue on the busy timeout instead of failing on a lock upgrade.

    >>> engine = make_engine("sqlite://")  # one shared in-memory database
    >>> with engine.connect() as conn:
    ...     conn.exec_driver_sql("PRAGMA foreign_keys").scalar(), conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    (1, 30000)
    """
    url = normalize_url(url)
    if url.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg", "psycopg2"):
            connect_args = _libpq_timeouts(url.get_driver_name())
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": busy_timeout_s, "check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN; _begin below does
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not memory and cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                _set_wal(cur, busy_timeout_s)
            cur.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("dtlive_write") else "BEGIN")

    return engine


def _set_wal(cur, timeout_s: float) -> None:
    """Switch a SQLite file to WAL; while another process creates the file this can be refused as "locked"
    without the busy timeout being applied (SQLite's deadlock avoidance), so try again until ``timeout_s``."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def alembic_config(url: str | URL | None = None):
    """An Alembic ``Config`` for the ledger migrations shipped in ``dtlive/migrations`` (no alembic.ini).

    Developers make a new revision with
    ``alembic.command.revision(alembic_config(url), autogenerate=True, message="...")``.

    >>> cfg = alembic_config("sqlite:///ledger.sqlite")
    >>> Path(cfg.get_main_option("script_location")) == MIGRATIONS_DIR, cfg.get_main_option("sqlalchemy.url")
    (True, 'sqlite:///ledger.sqlite')
    """
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))  # ConfigParser interpolation
    return cfg


@functools.lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest migration revision shipped with this dtlive (:func:`newest_revision` of its migrations).

    >>> from alembic.script import ScriptDirectory
    >>> head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
    True
    """
    return newest_revision(MIGRATIONS_DIR / "versions")


def newest_revision(versions: Path) -> str | None:
    """The revision no other revises, read from the ``revision`` and ``down_revision`` of the migration files in
    ``versions`` (without importing Alembic: a service opening an up-to-date ledger needs nothing more).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a.py").write_text('revision = "a"\\ndown_revision = None\\n')
    >>> _ = (d / "b.py").write_text('revision: str = "b"\\ndown_revision = "a"\\n')
    >>> _ = (d / "c.py").write_text('revision = "c"\\ndown_revision = "a"\\n')
    >>> _ = (d / "m.py").write_text('revision = "m"\\ndown_revision = ("b", "c")\\n')  # a merge
    >>> newest_revision(d)
    'm'
    """
    revisions: set[str] = set()
    parents: set[str | None] = set()
    for path in versions.glob("*.py"):
        fields = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            fields.update({t.id: ast.literal_eval(value) for t in targets
                           if isinstance(t, ast.Name) and t.id in ("revision", "down_revision")})
        if "revision" in fields:
            revisions.add(fields["revision"])
            down = fields.get("down_revision")
            parents.update(down if isinstance(down, tuple | list) else [down])
    heads = revisions - parents
    if len(heads) > 1:
        raise RuntimeError(f"the ledger migrations have several heads: {sorted(heads)}")
    return heads.pop() if heads else None


def current_revision(engine: Engine) -> str | None:
    """The migration revision a database is at (None: empty).

    >>> engine = make_engine("sqlite://")
    >>> current_revision(engine) is None  # an empty database
    True
    >>> upgrade(engine, "0001")
    >>> current_revision(engine)
    '0001'
    """
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(found) > 1:
        raise RuntimeError(f"the ledger database is at several schema revisions at once: {sorted(found)}")
    return found[0] if found else None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """``alembic upgrade`` the database; idempotent and safe when several processes do it at once.

    The upgrade runs in one transaction that holds the database's write lock (SQLite ``BEGIN
    IMMEDIATE``; a PostgreSQL transaction-level advisory lock), so a second process waits, then
    finds the schema already at head.

    >>> engine = make_engine("sqlite://")
    >>> upgrade(engine); upgrade(engine)  # the second finds it at head already
    >>> current_revision(engine) == head_revision(), "processing_runs" in sa.inspect(engine).get_table_names()
    (True, True)
    """
    current, head = current_revision(engine), head_revision()
    if revision == "head" and current == head:
        return
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    cfg = alembic_config()
    if current is not None and current not in {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}:
        raise RuntimeError(f"the ledger database is at schema revision {current!r}, unknown to this dtlive "
                           f"{__version__} (newest: {head!r}); use a newer dtlive")
    with engine.execution_options(dtlive_write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, revision)
        except CommandError as e:
            raise RuntimeError(f"cannot migrate the ledger database to {revision!r}: {e}") from e


def downgrade(engine: Engine, revision: str = "base") -> None:
    """``alembic downgrade`` the database (``base`` drops every ledger table).

    >>> engine = make_engine("sqlite://")
    >>> upgrade(engine, "0001")
    >>> downgrade(engine)  # to base: every ledger table dropped
    >>> current_revision(engine), sa.inspect(engine).get_table_names()
    (None, ['dtlive_alembic_version'])
    """
    from alembic import command

    cfg = alembic_config()
    with engine.execution_options(dtlive_write=True).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
