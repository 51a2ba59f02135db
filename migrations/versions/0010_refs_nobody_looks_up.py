"""Drop the unique indexes on refs that no query looks up alone: data keys, borrowers, records
and clearance certificates.

These refs are random 128-bit names, part of the associated data that binds a ciphertext or a
wrapped key to its row. Rows are found by id or blind index; a record is found by its ref only
within its borrower's file, through the borrower's index. Each of these indexes cost a random
B-tree page on every insert and every delete: clearing 3,000 records (each with its borrower)
wrote 12,450 pages to SQLite's WAL, and 5,100 of them were these indexes' pages.

On SQLite this rebuilds the four tables (``registry.db.upgrade_to_head`` runs migrations with
foreign keys off and checks them all before it commits).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 05:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNLOOKED = ("data_keys", "borrowers", "delinquencies", "clearance_certificates")
"""The tables whose ``ref`` loses its unique index."""


def upgrade() -> None:
    for table in UNLOOKED:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"uq_{table}_ref", type_="unique")


def downgrade() -> None:
    for table in UNLOOKED:
        with op.batch_alter_table(table) as batch:
            batch.create_unique_constraint(f"uq_{table}_ref", ["ref"])
