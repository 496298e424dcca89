"""Alembic environment of the ledger, run by :func:`dtlive.storage.ledger.upgrade` (no alembic.ini needed).

The caller hands over an open connection in ``config.attributes["connection"]`` (already in a
transaction holding the database's write lock); otherwise ``sqlalchemy.url`` is used.
"""

from __future__ import annotations

from typing import Any

from alembic import context


def run_migrations() -> None:
    """Run the migrations Alembic was asked for, online or offline (SQL script)."""
    from dtlive.storage.ledger import VERSION_TABLE, Base, make_engine

    config = context.config
    opts: dict[str, Any] = {"target_metadata": Base.metadata, "version_table": VERSION_TABLE, "compare_type": True}
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **opts)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_online(connection, opts)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("the ledger migrations need an open connection or a sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.execution_options(dtlive_write=True).begin() as conn:
            _run_online(conn, opts)
    finally:
        engine.dispose()


def _run_online(connection, opts: dict) -> None:
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite", **opts)
    with context.begin_transaction():
        context.run_migrations()


if hasattr(context, "config"):  # run by Alembic; a plain import (pytest's doctest collection) does nothing
    run_migrations()
