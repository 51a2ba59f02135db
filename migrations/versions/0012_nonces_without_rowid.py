"""On SQLite ``request_nonces`` is stored in its primary key (``WITHOUT ROWID``).

Every signed request writes a nonce. In a rowid table that is three B-trees to change: the
table, the index SQLite keeps for the ``(keyid, nonce)`` key, and ``expires_at``'s index. Kept
in its key it is two, one page fewer for the write-ahead log at every request (an open wrote
17.8 pages). The nonces are copied, so a request made before the migration still cannot be
replayed after it. PostgreSQL has no rowid: nothing changes there.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(*, rowid: bool) -> None:
    """Copy ``request_nonces`` into a table made with or without a rowid (SQLite only)."""
    with op.batch_alter_table(
        "request_nonces", recreate="always", table_kwargs={"sqlite_with_rowid": rowid}
    ):
        pass


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(rowid=True)
