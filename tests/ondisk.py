"""What the database has on disk, read as raw bytes, for the at-rest privacy tests."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from registry.db import checkpoint_wal

_RELATIONS = (
    "SELECT pg_relation_filepath(c.oid) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname IN ('public', 'pg_toast') AND c.relkind IN ('r', 't', 'i') "
    "AND pg_relation_filepath(c.oid) IS NOT NULL"
)
_READ = (
    "SELECT pg_read_binary_file(CAST(:p AS text), 0, "
    "coalesce((pg_stat_file(CAST(:p AS text), true)).size, 0), true)"
)


def database_bytes(engine: Engine, *, checkpoint: bool = True) -> bytes:
    """SQLite: the file and its WAL (after a checkpoint unless told otherwise).

    PostgreSQL: every table, TOAST and index file of the database, after a CHECKPOINT.
    """
    if engine.dialect.name == "sqlite":
        if checkpoint:
            checkpoint_wal(engine)
        path = Path(engine.url.database or "")
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))
        paths = list(conn.execute(text(_RELATIONS)).scalars())
        return b"".join(bytes(conn.execute(text(_READ), {"p": p}).scalar() or b"") for p in paths)
