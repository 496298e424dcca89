"""Initial ledger schema: processing runs, windows and their inputs, data-quality periods, detector runs,
annotations, tags and the append-only task state history (with triggers refusing UPDATE/DELETE).

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the model types (a migration must not change when dtlive.storage.ledger does).
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(), nullable=nullable)


def _big(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


APPEND_ONLY = ("task_states",)


def upgrade() -> None:
    op.create_table(
        "processing_runs",
        _str("run_id"),
        _str("kind"),
        _str("status"),
        _str("processor", True),
        sa.Column("config", JSON, nullable=True),
        _str("config_hash", True),
        sa.Column("inputs", JSON, nullable=True),
        _str("host", True),
        _str("dtlive_version", True),
        _str("git_commit", True),
        _time("started_at"),
        _time("stopped_at", True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_processing_runs")),
    )
    for col in ("config_hash", "kind", "processor", "started_at"):
        op.create_index(op.f(f"ix_processing_runs_{col}"), "processing_runs", [col])

    op.create_table(
        "windows",
        _id(),
        _str("processor"),
        _big("window_id"),
        _str("run_id", True),
        _big("first_orbit"),
        _big("last_orbit"),
        _time("start_time", True),
        _time("end_time", True),
        sa.Column("orbit_epoch", sa.Float(), nullable=True),
        _big("total_hits"),
        sa.Column("hits_per_chamber", JSON, nullable=True),
        _big("rows"),
        _big("rejected"),
        sa.Column("rejected_by_reason", JSON, nullable=True),
        _big("late_hits"),
        _big("ancillary"),
        _big("special_channel_hits"),
        _str("config_hash", True),
        _str("dtlive_version", True),
        _str("host", True),
        _str("result_topic"),
        sa.Column("result_partition", sa.Integer(), nullable=False),
        _big("result_offset"),
        sa.Column("provenance", JSON, nullable=True),
        _time("recorded_at"),
        sa.ForeignKeyConstraint(["run_id"], ["processing_runs.run_id"], name=op.f("fk_windows_run_id_processing_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_windows")),
        sa.UniqueConstraint("processor", "window_id", name=op.f("uq_windows_processor_window_id")),
    )
    op.create_index(op.f("ix_windows_run_id"), "windows", ["run_id"])
    op.create_index(op.f("ix_windows_start_time"), "windows", ["start_time"])

    op.create_table(
        "window_inputs",
        _id(),
        sa.Column("window_pk", sa.Integer(), nullable=False),
        _str("topic"),
        sa.Column("partition", sa.Integer(), nullable=False),
        _big("first_offset"),
        _big("last_offset"),
        sa.ForeignKeyConstraint(
            ["window_pk"], ["windows.id"], name=op.f("fk_window_inputs_window_pk_windows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_window_inputs")),
    )
    op.create_index(op.f("ix_window_inputs_window_pk"), "window_inputs", ["window_pk"])

    op.create_table(
        "dq_periods",
        _id(),
        _str("kind"),
        _time("start_time"),
        _time("end_time", True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        _str("who", True),
        sa.Column("detail", JSON, nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dq_periods")),
    )
    op.create_index(op.f("ix_dq_periods_kind"), "dq_periods", ["kind"])
    op.create_index(op.f("ix_dq_periods_start_time"), "dq_periods", ["start_time"])

    op.create_table(
        "detector_runs",
        _id(),
        _time("start_time"),
        _time("end_time", True),
        _big("first_orbit"),
        _big("last_orbit", True),
        sa.Column("meta", JSON, nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detector_runs")),
    )
    op.create_index(op.f("ix_detector_runs_start_time"), "detector_runs", ["start_time"])

    op.create_table(
        "annotations",
        _id(),
        _str("target"),
        _str("target_id"),
        sa.Column("text", sa.Text(), nullable=False),
        _str("who", True),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotations")),
    )
    op.create_index("ix_annotations_target", "annotations", ["target", "target_id"])

    op.create_table(
        "tags",
        _id(),
        _str("target"),
        _str("target_id"),
        _str("tag"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("target", "target_id", "tag", name=op.f("uq_tags_target_target_id_tag")),
    )
    op.create_index(op.f("ix_tags_tag"), "tags", ["tag"])

    op.create_table(
        "task_states",
        _id(),
        _str("task_id"),
        _str("task_kind", True),
        _str("state"),
        sa.Column("detail", JSON, nullable=True),
        _time("at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_states")),
    )
    op.create_index("ix_task_states_task_at", "task_states", ["task_id", "at"])
    op.create_index(op.f("ix_task_states_task_kind"), "task_states", ["task_kind"])

    for table in APPEND_ONLY:
        _create_append_only_triggers(table)


def _create_append_only_triggers(table: str) -> None:
    """The database itself refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL) on ``table``."""
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION dtlive_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' refused', "
            "ERRCODE = 'restrict_violation'; END $$"  # no '%': it would need escaping in offline (--sql) scripts
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION dtlive_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION dtlive_refuse_change()"
        )


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    for table in APPEND_ONLY:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        elif dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS dtlive_refuse_change()")
    for table in ("task_states", "tags", "annotations", "detector_runs", "dq_periods", "window_inputs", "windows",
                  "processing_runs"):
        op.drop_table(table)  # their indexes go with them
