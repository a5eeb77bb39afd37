"""Runs mirrored to experiment trackers (issue 32): a run's tracker choices, and how far each tracker has it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("trackers", sa.JSON, nullable=True))
    op.create_table(
        "tracker_mirrors",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tracker", sa.String(16), nullable=False),
        sa.Column("mirror_key", sa.String(64), nullable=False),
        sa.Column("remote_id", sa.String(200), nullable=True),
        sa.Column("url", sa.String(1000), nullable=True),
        sa.Column("sent_seq", sa.BigInteger, nullable=False),
        sa.Column("files_sent", sa.Boolean, nullable=False),
        sa.Column("finished", sa.Boolean, nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "tracker", name="uq_tracker_mirrors_run_tracker"),
    )


def downgrade() -> None:
    op.drop_table("tracker_mirrors")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("trackers")
