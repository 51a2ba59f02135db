"""References to a data key are checked once per statement, not once per row (PostgreSQL).

Eight tables refer to ``data_keys``. As foreign keys, every deleted key ran eight look-ups, one
per referring table, each a query of its own in the server (about 4.5 us each): clearing a
record deletes two keys, so 16 of the 23 checks a cleared record cost, about 70 us of the
server's 130. Here the eight foreign keys become triggers that check a whole statement at once:

- ``data_keys``, after a DELETE: no row of the eight tables refers to any deleted key (one
  indexed join per table against the statement's deleted rows, which are all in one
  statement-level trigger's transition table), else ``foreign_key_violation``. Refused outside
  READ COMMITTED (the registry's only isolation level): the foreign key's check also sees rows
  committed after a repeatable-read transaction's snapshot, which a query in a trigger cannot.
- each referring table, after an INSERT: every key its new rows name exists, and is locked
  ``FOR KEY SHARE`` as the foreign key would lock it, so a concurrent delete of that key waits
  for this transaction and then sees the new row (or this one sees the key gone and fails);
  after an UPDATE of ``data_key_id`` to another key, the same for that row.
- ``data_keys``: its ids never change, and ``TRUNCATE`` is refused while a row refers to it.

Same guarantee, same error class (``IntegrityError``): a key still used cannot be deleted, and
no row can name a key that does not exist. SQLite keeps its foreign keys (its checks run in
process, without a query each).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 03:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFERRING = (
    "borrowers",
    "delinquencies",
    "clearance_certificates",
    "inquiries",
    "disputes",
    "borrower_statements",
    "notifications",
    "borrower_enrolments",
)
"""Every table with a ``data_key_id`` referring to ``data_keys.id`` (see 0007)."""


def _constraint(table: str) -> str:
    return f"fk_{table}_data_key_id_data_keys"


def _still_used(alias: str) -> str:
    return "\n        OR ".join(
        f"EXISTS (SELECT FROM {table} t JOIN {alias} g ON t.data_key_id = g.id)"
        for table in REFERRING
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # NOTE: dropping and creating triggers takes locks that block writes to these tables;
    # quick, but run it in a quiet window like 0006 and 0007.
    for table in REFERRING:
        op.drop_constraint(_constraint(table), table, type_="foreignkey")
    op.execute(
        f"""
CREATE FUNCTION registry_data_keys_unused() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'data keys are deleted in READ COMMITTED transactions only'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF {_still_used("gone")} THEN
        RAISE EXCEPTION 'delete on table "data_keys" violates a reference to a deleted key'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$
"""
    )
    op.execute(
        """
CREATE TRIGGER data_keys_unused AFTER DELETE ON data_keys
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION registry_data_keys_unused()
"""
    )
    op.execute(
        """
CREATE FUNCTION registry_data_keys_exist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One query: each named key is locked as the foreign key's check locks it (a key deleted
    -- meanwhile comes back as no row); any new row whose key is not there fails the statement.
    IF EXISTS (
        SELECT FROM added a
        LEFT JOIN LATERAL (
            SELECT k.id FROM data_keys k WHERE k.id = a.data_key_id FOR KEY SHARE OF k
        ) kept ON true
        WHERE a.data_key_id IS NOT NULL AND kept.id IS NULL
    ) THEN
        RAISE EXCEPTION 'insert on table "%" names a data key that does not exist', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$
"""
    )
    op.execute(
        """
CREATE FUNCTION registry_data_key_exists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM data_keys k WHERE k.id = NEW.data_key_id FOR KEY SHARE OF k;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'update on table "%" names a data key that does not exist', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$
"""
    )
    op.execute(
        """
CREATE FUNCTION registry_data_keys_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a data key''s id never changes' USING ERRCODE = 'foreign_key_violation';
END $$
"""
    )
    op.execute(
        """
CREATE TRIGGER data_keys_fixed BEFORE UPDATE OF id ON data_keys
FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION registry_data_keys_fixed()
"""
    )
    every_table = "\n        OR ".join(f"EXISTS (SELECT FROM {table})" for table in REFERRING)
    op.execute(
        f"""
CREATE FUNCTION registry_data_keys_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {every_table} THEN
        RAISE EXCEPTION 'cannot truncate data_keys while rows refer to it'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$
"""
    )
    op.execute(
        """
CREATE TRIGGER data_keys_kept BEFORE TRUNCATE ON data_keys
FOR EACH STATEMENT EXECUTE FUNCTION registry_data_keys_kept()
"""
    )
    for table in REFERRING:
        op.execute(
            f"""
CREATE TRIGGER {table}_data_keys_exist AFTER INSERT ON {table}
REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION registry_data_keys_exist()
"""
        )
        op.execute(
            f"""
CREATE TRIGGER {table}_data_key_exists AFTER UPDATE OF data_key_id ON {table}
FOR EACH ROW WHEN (NEW.data_key_id IS NOT NULL AND NEW.data_key_id IS DISTINCT FROM OLD.data_key_id)
EXECUTE FUNCTION registry_data_key_exists()
"""
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in REFERRING:
        op.execute(f"DROP TRIGGER {table}_data_key_exists ON {table}")
        op.execute(f"DROP TRIGGER {table}_data_keys_exist ON {table}")
    op.execute("DROP TRIGGER data_keys_kept ON data_keys")
    op.execute("DROP TRIGGER data_keys_fixed ON data_keys")
    op.execute("DROP TRIGGER data_keys_unused ON data_keys")
    for function in ("kept", "fixed", "unused", "exist"):
        op.execute(f"DROP FUNCTION registry_data_keys_{function}()")
    op.execute("DROP FUNCTION registry_data_key_exists()")
    # NOTE: adding the foreign keys back checks every existing row; see 0007.
    for table in REFERRING:
        op.create_foreign_key(
            _constraint(table), table, "data_keys", ["data_key_id"], ["id"], ondelete="RESTRICT"
        )
