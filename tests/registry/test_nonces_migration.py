"""Migration 0012: on SQLite the nonces live in their primary key (``WITHOUT ROWID``), and the
nonces remembered before it are still refused after it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import Engine, Table, create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from conftest import migrate
from registry.db import make_engine, upgrade_to_head
from registry.models import Base
from registry.settings import Settings

pytestmark = pytest.mark.sqlite_only

NONCES = cast(Table, Base.metadata.tables["request_nonces"])
LATER = dt.datetime(2026, 11, 24, 9, 5, tzinfo=dt.UTC)


def nonce(n: int) -> dict[str, object]:
    return {"keyid": "k" * 32, "nonce": f"nonce-before-0012-{n:04d}", "expires_at": LATER}


def schema(engine: Engine) -> str:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT sql FROM sqlite_schema WHERE name = 'request_nonces'"))
        return str(found.scalar_one())


def test_nonces_are_kept_in_their_key_and_still_refused_after_the_migration(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'nonces.db'}"
    plain = create_engine(url)
    migrate(plain, "upgrade", "0011")
    with plain.begin() as conn:
        conn.execute(insert(NONCES), [nonce(1), nonce(2)])
    assert "WITHOUT ROWID" not in schema(plain)
    plain.dispose()
    engine = make_engine(Settings(instance_path=tmp_path, database_url=url))
    try:
        upgrade_to_head(engine)
        assert "WITHOUT ROWID" in schema(engine)
        with engine.connect() as conn:
            assert set(conn.scalars(select(NONCES.c.nonce))) == {
                "nonce-before-0012-0001",
                "nonce-before-0012-0002",
            }
            indexes = conn.execute(text("PRAGMA index_list('request_nonces')")).all()
            assert "ix_request_nonces_expires_at" in {row[1] for row in indexes}
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(NONCES), nonce(1))  # a replay of a request made before
    finally:
        engine.dispose()
    migrate(create_engine(url), "downgrade", "0011")
    plain = create_engine(url)
    assert "WITHOUT ROWID" not in schema(plain)
    with plain.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM request_nonces")) == 2
    plain.dispose()
