"""Record the worker's host and process id, and index runs by status and creation time.

The host and pid let reconcile tell at once that a run's worker died on this machine (kill -9, out of memory)
instead of waiting for its RQ heartbeat to expire; the indexes serve the dashboard's filters and the
reconcile scan of queued and running rows.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("worker_host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("worker_pid", sa.Integer(), nullable=True))
        batch.create_index("ix_runs_status", ["status"])
        batch.create_index("ix_runs_created_at", ["created_at"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_created_at")
        batch.drop_index("ix_runs_status")
        batch.drop_column("worker_pid")
        batch.drop_column("worker_host")
