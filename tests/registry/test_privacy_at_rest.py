"""No personal data in plaintext at rest: the raw database bytes hold none of it."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from factories import admit, national_id, payload, submit


def _variants(value: str) -> list[bytes]:
    """The forms a leaked value could take in raw bytes."""
    return [value.encode("utf-8"), value.encode("utf-16-le"), value.encode("utf-16-be")]


def _raw_database_bytes(engine: Engine) -> bytes:
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database or "")
        wal = path.with_name(path.name + "-wal")
        assert path.exists()
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))
        paths = conn.execute(
            text(
                "SELECT pg_relation_filepath(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('public', 'pg_toast') AND c.relkind IN ('r', 't', 'i') "
                "AND pg_relation_filepath(c.oid) IS NOT NULL"
            )
        ).scalars()
        chunks = [
            conn.execute(
                text(
                    "SELECT pg_read_binary_file(CAST(:p AS text), 0, "
                    "coalesce((pg_stat_file(CAST(:p AS text), true)).size, 0), true)"
                ),
                {"p": p},
            ).scalar()
            or b""
            for p in paths
        ]
    return b"".join(bytes(c) for c in chunks)


def test_after_submissions_no_id_name_phone_address_or_account_is_in_the_raw_bytes(
    client: FlaskClient, session: Session, engine: Engine
) -> None:
    bank = admit(session, "BANKA")
    people = []
    for i in range(1, 21):
        doc = payload(bank, account_ref=f"ACCT-{i:04d}-SECRET")
        doc["borrower"] = {
            "national_id": national_id(100 + i),
            "name": f"测试姓名{i:02d}",
            "phone": f"+86139{i:08d}",
            "address": f"上海市浦东新区秘密路{i}号",
        }
        assert submit(client, bank, doc).status_code == 201
        people.append(doc)
    raw = _raw_database_bytes(engine)
    assert len(raw) > 0
    assert b"BANKA" in raw  # the scan sees the rows at all
    for doc in people:
        borrower = doc["borrower"]
        for value in (
            borrower["national_id"],
            borrower["name"],
            borrower["phone"],
            borrower["address"],
            doc["account_ref"],
        ):
            for form in _variants(value):
                assert form not in raw, "personal data found in plaintext at rest"
