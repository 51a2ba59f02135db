"""Index every column that references data_keys, so destroying a data key is cheap.

Without these indexes each DELETE FROM data_keys scans all eight referencing tables to check
the foreign keys, which made clearing slower the more records the registry holds.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:12:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    'borrowers',
    'delinquencies',
    'clearance_certificates',
    'inquiries',
    'disputes',
    'borrower_statements',
    'notifications',
    'borrower_enrolments',
)


def upgrade() -> None:
    # NOTE: a plain CREATE INDEX (inside the migration's transaction) blocks writes to the
    # table while it builds; on a large PostgreSQL registry run this in a quiet window.
    for table in TABLES:
        op.create_index(op.f(f'ix_{table}_data_key_id'), table, ['data_key_id'], unique=False)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_index(op.f(f'ix_{table}_data_key_id'), table_name=table)
