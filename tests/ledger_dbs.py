"""The ledger's databases for tests: a SQLite file and a fresh schema on the local PostgreSQL (127.0.0.1:5432, trust
auth, database ``test``, or ``DTLIVE_TEST_PG``), each dropped afterwards. Unreachable PostgreSQL skips those tests,
except on CI (``CI`` set), where it fails them. Import the fixtures into a test file to use them."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("DTLIVE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_admin():
    """Autocommit engine on the local PostgreSQL and the schemas made this session (dropped at the end)."""
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as e:
        engine.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is required on CI: {e}")
        pytest.skip(f"PostgreSQL at {PG_URL} unreachable: {e}")
    schemas: list[str] = []
    yield engine, f"dtlive_test_{uuid.uuid4().hex[:8]}", schemas
    with engine.connect() as c:
        for schema in schemas:
            c.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    engine, prefix, schemas = request.getfixturevalue("pg_admin")
    schema = f"{prefix}_{len(schemas)}"
    schemas.append(schema)
    with engine.connect() as c:
        c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    with engine.connect() as c:
        c.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
