"""Certification: the judged lumi blocks with the status of each chamber, and people's good/bad overrides
(append-only: triggers refuse UPDATE and DELETE, and TRUNCATE on PostgreSQL).

Revision ID: 0005_certification
Revises: 0004_alarms
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_certification"
down_revision = "0004_alarms"
branch_labels = None
depends_on = None

# Frozen copies of the model types (a migration must not change when dtlive.storage.ledger does).
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
OVERRIDES = "certification_overrides"


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "lumi_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("processor", sa.String(), nullable=False),
        sa.Column("first_window", sa.BigInteger(), nullable=False),
        sa.Column("last_window", sa.BigInteger(), nullable=False),
        sa.Column("windows", sa.BigInteger(), nullable=False),
        _time("start_time"),
        _time("end_time"),
        sa.Column("statuses", JSON, nullable=False),
        sa.Column("detail", JSON, nullable=True),
        _time("recorded_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lumi_blocks")),
        sa.UniqueConstraint("processor", "start_time", "first_window",
                            name=op.f("uq_lumi_blocks_processor_start_time_first_window")),
    )
    op.create_index(op.f("ix_lumi_blocks_start_time"), "lumi_blocks", ["start_time"])

    op.create_table(
        OVERRIDES,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("good", sa.Boolean(), nullable=False),
        sa.Column("chamber", sa.Integer(), nullable=True),
        sa.Column("detector_run", sa.Integer(), nullable=True),
        _time("start_time", True),
        _time("end_time", True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("who", sa.String(), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{OVERRIDES}")),
    )
    op.create_index(op.f(f"ix_{OVERRIDES}_created_at"), OVERRIDES, ["created_at"])

    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {OVERRIDES}_no_{action.lower()} BEFORE {action} ON {OVERRIDES} "
                       f"BEGIN SELECT RAISE(ABORT, '{OVERRIDES} is append-only: {action} refused'); END")
    elif dialect == "postgresql":  # dtlive_refuse_change() comes with the first revision
        op.execute(f"CREATE TRIGGER {OVERRIDES}_no_change BEFORE UPDATE OR DELETE ON {OVERRIDES} "
                   "FOR EACH ROW EXECUTE FUNCTION dtlive_refuse_change()")
        op.execute(f"CREATE TRIGGER {OVERRIDES}_no_truncate BEFORE TRUNCATE ON {OVERRIDES} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION dtlive_refuse_change()")


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {OVERRIDES}_no_update")
        op.execute(f"DROP TRIGGER IF EXISTS {OVERRIDES}_no_delete")
    elif dialect == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {OVERRIDES}_no_change ON {OVERRIDES}")
        op.execute(f"DROP TRIGGER IF EXISTS {OVERRIDES}_no_truncate ON {OVERRIDES}")
    op.drop_table(OVERRIDES)  # its index goes with it
    op.drop_table("lumi_blocks")
