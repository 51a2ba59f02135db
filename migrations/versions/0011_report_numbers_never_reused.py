"""On SQLite a report's number (``reports.id``, the receipts' ``log_index``) is never given
twice: the table becomes ``AUTOINCREMENT``.

A new report was numbered one past the largest stored, so clearing the record of the newest
report (its reports are deleted with it) gave that number again to the next report, and two
receipts then named the same log index. SQLite keeps an ``AUTOINCREMENT`` table's largest
number ever used in ``sqlite_sequence``; ``registry.bulk`` numbers reports from there. Numbers
already given twice before this migration cannot be told apart afterwards. PostgreSQL numbers
reports from a sequence, which never goes back: nothing changes there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 06:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(*, autoincrement: bool) -> None:
    """Copy ``reports`` into a table made with or without ``AUTOINCREMENT`` (SQLite only)."""
    with op.batch_alter_table(
        "reports", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # The copy inserts every row with its id, which sets sqlite_sequence to the largest.
        _rebuild(autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(autoincrement=False)
        op.execute("DELETE FROM sqlite_sequence WHERE name = 'reports'")
