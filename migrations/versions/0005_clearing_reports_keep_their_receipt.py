"""A report that cleared its record keeps its receipt (no record, no envelope) for resends.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 17:39:39.480642
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOTE: on SQLite this copies the table; nothing references reports, so no cascade fires.
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.alter_column('delinquency_id', existing_type=sa.INTEGER(), nullable=True)


def downgrade() -> None:
    # The idempotency rows of clearing reports cannot exist without a record before 0005.
    op.execute("DELETE FROM reports WHERE delinquency_id IS NULL")
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.alter_column('delinquency_id', existing_type=sa.INTEGER(), nullable=False)
