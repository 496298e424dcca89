"""Windows are keyed by processor, processing run and window id, and remember which broker their result was on.

A processor that starts a new series after a broker lost its topics publishes window ids again (partial windows
of the same orbits); keyed by run as well, they never collide with the old ones. ``result_cluster`` (the broker's
cluster id) tells where a result offset belongs: a restarted broker counts offsets from 0 again.

Revision ID: 0003_window_run_key
Revises: 0002_run_process
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_window_run_key"
down_revision = "0002_run_process"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("windows") as batch:
        batch.drop_constraint("uq_windows_processor_window_id", type_="unique")
        batch.create_unique_constraint("uq_windows_processor_run_id_window_id", ["processor", "run_id", "window_id"])
        batch.add_column(sa.Column("result_cluster", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("windows") as batch:
        batch.drop_column("result_cluster")
        batch.drop_constraint("uq_windows_processor_run_id_window_id", type_="unique")
        batch.create_unique_constraint("uq_windows_processor_window_id", ["processor", "window_id"])
