"""References that clearing deletes through become ON DELETE RESTRICT (PostgreSQL).

Every reference to a data key (eight tables) and the record's reference to its borrower. A row
still using a key or a borrower keeps it from being deleted either way. With the default NO
ACTION, PostgreSQL's check first looks for another row with the same id (one that could stand
in for the deleted one) and only then for a referencing row; RESTRICT allows no stand-in and
skips that look-up: about half of the time clearing spent in the sixteen key checks per cleared
record (two keys each), and in the borrower check.

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

# (table, column, referred table)
REFERENCES = (
    ('borrowers', 'data_key_id', 'data_keys'),
    ('delinquencies', 'data_key_id', 'data_keys'),
    ('clearance_certificates', 'data_key_id', 'data_keys'),
    ('inquiries', 'data_key_id', 'data_keys'),
    ('disputes', 'data_key_id', 'data_keys'),
    ('borrower_statements', 'data_key_id', 'data_keys'),
    ('notifications', 'data_key_id', 'data_keys'),
    ('borrower_enrolments', 'data_key_id', 'data_keys'),
    ('delinquencies', 'borrower_id', 'borrowers'),
)


def _refer(ondelete: str | None) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    # NOTE: adding a foreign key checks every existing row (an indexed join) under a lock that
    # blocks writes to both tables; on a large registry run this in a quiet window, like 0006.
    for table, column, referred in REFERENCES:
        name = op.f(f'fk_{table}_{column}_{referred}')
        op.drop_constraint(name, table, type_='foreignkey')
        op.create_foreign_key(name, table, referred, [column], ['id'], ondelete=ondelete)


def upgrade() -> None:
    _refer('RESTRICT')


def downgrade() -> None:
    _refer(None)
