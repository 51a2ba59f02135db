"""Running totals of the scheduled sweeps (``sweep_totals``), for ``/metrics``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 02:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweep_totals",
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("cleared", sa.BigInteger(), nullable=False),
        sa.Column("sweeps", sa.BigInteger(), nullable=False),
        sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rule", name=op.f("pk_sweep_totals")),
    )


def downgrade() -> None:
    op.drop_table("sweep_totals")
