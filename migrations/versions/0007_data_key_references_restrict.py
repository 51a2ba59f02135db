"""References to data keys become ON DELETE RESTRICT (PostgreSQL), so destroying a key is cheaper.

A row still using a key keeps it from being deleted either way. With the default NO ACTION,
PostgreSQL's check of each of the eight referencing tables first looks for another key row with
the same id (one that could stand in for the deleted one) and only then for a referencing row;
RESTRICT allows no stand-in and skips that look-up, about half the time clearing spent in the
sixteen checks per cleared record (two keys each).

SQLite keeps NO ACTION: it cannot change a foreign key in place, and rebuilding a table that
others reference (borrowers, delinquencies) drops the old copy, which fires their ON DELETE
CASCADE while foreign keys are on. There both actions refuse the same deletes at the same cost.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 01:10:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
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


def _refer(ondelete: str | None) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    # NOTE: adding a foreign key checks every existing row (an indexed join since 0006) under a
    # lock that blocks writes to the table and to data_keys; on a large registry run this in a
    # quiet window, like 0006.
    for table in TABLES:
        name = op.f(f'fk_{table}_data_key_id_data_keys')
        op.drop_constraint(name, table, type_='foreignkey')
        op.create_foreign_key(
            name, table, 'data_keys', ['data_key_id'], ['id'], ondelete=ondelete
        )


def upgrade() -> None:
    _refer('RESTRICT')


def downgrade() -> None:
    _refer(None)
