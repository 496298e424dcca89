"""Chamber-status alarm events: every raised, escalated, repeated, cleared and acknowledged event of an alarm,
append-only (the database refuses UPDATE and DELETE, as for the task state history), each event id once.

Revision ID: 0004_alarms
Revises: 0003_window_run_key
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_alarms"
down_revision = "0003_window_run_key"
branch_labels = None
depends_on = None

TABLE = "alarm_events"
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")  # frozen copy of the type


def upgrade() -> None:
    def text(name: str, nullable: bool = True) -> sa.Column:
        return sa.Column(name, sa.String(), nullable=nullable)

    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        text("event_id", False),
        text("alarm_id", False),
        text("event", False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        text("processor"),
        sa.Column("chamber", sa.BigInteger(), nullable=True),
        text("severity"),
        sa.Column("status", sa.BigInteger(), nullable=True),
        text("by"),
        sa.Column("message", JSON, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{TABLE}")),
        sa.UniqueConstraint("event_id", name=op.f(f"uq_{TABLE}_event_id")),
    )
    op.create_index(op.f(f"ix_{TABLE}_alarm_id"), TABLE, ["alarm_id"])
    op.create_index(op.f(f"ix_{TABLE}_at"), TABLE, ["at"])
    if op.get_context().dialect.name == "postgresql":  # dtlive_refuse_change() is made by revision 0001
        op.execute(f"CREATE TRIGGER {TABLE}_no_change BEFORE UPDATE OR DELETE ON {TABLE} FOR EACH ROW "
                   "EXECUTE FUNCTION dtlive_refuse_change()")
        op.execute(f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} FOR EACH STATEMENT "
                   "EXECUTE FUNCTION dtlive_refuse_change()")
    elif op.get_context().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {TABLE}_no_{verb.lower()} BEFORE {verb} ON {TABLE} BEGIN "
                       f"SELECT RAISE(ABORT, '{TABLE} is append-only: {verb} refused'); END")


def downgrade() -> None:
    op.drop_table(TABLE)  # its indexes and triggers go with it
