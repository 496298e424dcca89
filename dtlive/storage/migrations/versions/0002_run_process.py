"""Processing runs keep their process id and a heartbeat, so a run whose process is gone can be shown as died.

Revision ID: 0002_run_process
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_run_process"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("processing_runs") as batch:
        batch.add_column(sa.Column("pid", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("processing_runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("pid")
