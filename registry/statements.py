"""The borrower's own statement (本人声明, the FCRA consumer statement), shown beside the data.

A borrower may attach one short statement to the whole file and one to each of their records;
every inquirer sees it beside what it is attached to. Setting a statement again replaces it.
Each statement is encrypted under its own data key, destroyed when the statement is removed,
replaced, or cleared with its record (``registry.clearing``), so no older text survives in a
backup in readable form.

Functions here do not commit: the caller's transaction decides.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Exists, delete, exists, or_, select
from sqlalchemy.orm import Session

from registry.errors import FieldError, NotFound, ValidationFailed
from registry.models import Borrower, BorrowerStatement, DataKey, Delinquency
from registry.secrets import KeyMaterial
from registry.vault import Vault

MAX_LENGTH = 200
TABLE = "borrower_statements"

# NOTE: C0/C1 controls, line and paragraph separators, and the bidirectional formatting
# characters: the text is shown to every inquirer beside registry data, and a bidi override
# could make it display as something else (or imitate the registry's own wording).
_FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)

_REF = re.compile("[0-9a-f]{32}")


def clean_text(
    value: object,
    *,
    field: str,
    max_length: int,
    required: bool = True,
    newlines: bool = False,
) -> str | None:
    """``value`` trimmed and checked; ``None`` for an empty optional text.

    Raises ``ValidationFailed`` naming the field and the rule; never echoes the text.
    """
    if value is None:
        if required:
            raise _invalid(field, "required", "is required")
        return None
    if not isinstance(value, str):
        raise _invalid(field, "type_string", "must be a string")
    text = value.replace("\r\n", "\n").strip()
    if not text:
        if required:
            raise _invalid(field, "not_empty", "must not be empty")
        return None
    if len(text) > max_length:
        raise _invalid(field, "max_length", f"must be at most {max_length} characters")
    if _FORBIDDEN.search(text.replace("\n", "") if newlines else text):
        raise _invalid(
            field,
            "no_control_characters",
            "must not contain control or bidirectional formatting characters",
        )
    return text


def _invalid(field: str, rule: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field} {message}", errors=[FieldError(field, rule, message)])


def is_ref(value: object) -> bool:
    """A registry reference (32 lower-case hex digits), checked before it reaches a query.

    NOTE: PostgreSQL refuses a NUL byte in a string parameter with an error, not an empty
    result; anything else that is not a reference cannot name a row either.
    """
    return isinstance(value, str) and _REF.fullmatch(value) is not None


def timestamp(when: dt.datetime | None) -> str | None:
    """The registry's JSON form of an instant: UTC to the second, ``Z`` suffix."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def _borrower(session: Session, borrower_index: bytes, *, lock: bool = False) -> Borrower:
    """The borrower's row; a borrower without records has no file to attach a statement to."""
    query = select(Borrower).where(Borrower.id_index == borrower_index)
    if lock:
        query = query.with_for_update()
    found = session.scalar(query)
    if found is None:
        raise NotFound("there is no file for this borrower", code="file_not_found")
    return found


def own_record(
    session: Session, borrower_index: bytes, record_ref: str, *, lock: bool = False
) -> Delinquency:
    """One of the borrower's records; another person's record is indistinguishable from none."""
    if not is_ref(record_ref):
        raise NotFound("no such record in your file", code="record_not_found")
    query = (
        select(Delinquency)
        .join(Borrower, Borrower.id == Delinquency.borrower_id)
        .where(Delinquency.ref == record_ref, Borrower.id_index == borrower_index)
    )
    if lock:
        query = query.with_for_update(of=Delinquency)
    record = session.scalar(query)
    if record is None:
        raise NotFound("no such record in your file", code="record_not_found")
    return record


def _target(session: Session, borrower_index: bytes, record_ref: str | None) -> int | None:
    """The statement's target, locked so that two concurrent sets cannot both insert.

    NOTE: the lock is the record's row for a record statement (taken first, as intake and
    clearing take it) and the borrower's row for the file statement (which never waits for a
    record): the same order everywhere, so no deadlock with a clearing in progress.
    """
    if record_ref is None:
        _borrower(session, borrower_index, lock=True)
        return None
    return own_record(session, borrower_index, record_ref, lock=True).id


def _find(
    session: Session, borrower_index: bytes, record_id: int | None
) -> BorrowerStatement | None:
    target = (
        BorrowerStatement.delinquency_id.is_(None)
        if record_id is None
        else BorrowerStatement.delinquency_id == record_id
    )
    return session.scalar(
        select(BorrowerStatement).where(BorrowerStatement.borrower_index == borrower_index, target)
    )


def _destroy(session: Session, statement: BorrowerStatement) -> None:
    key_id = statement.data_key_id
    session.delete(statement)
    session.flush()
    session.execute(delete(DataKey).where(DataKey.id == key_id))


def set_statement(
    session: Session,
    material: KeyMaterial,
    *,
    borrower_index: bytes,
    record_ref: str | None,
    text: str,
    now: dt.datetime,
) -> BorrowerStatement:
    """Attach ``text`` to the whole file (``record_ref`` None) or to one record; replaces.

    The replaced statement's data key is destroyed; the new text gets a new key.
    """
    clean = clean_text(text, field="text", max_length=MAX_LENGTH)
    assert clean is not None
    record_id = _target(session, borrower_index, record_ref)
    old = _find(session, borrower_index, record_id)
    if old is not None:
        _destroy(session, old)
    vault = Vault(material.keyring)
    data_key, key = vault.new_key(session, now)
    ref = secrets.token_hex(16)
    statement = BorrowerStatement(
        ref=ref,
        borrower_index=borrower_index,
        delinquency_id=record_id,
        data_key=data_key,
        text_ct=vault.seal(key, TABLE, "text", ref, clean.encode()),
        created_at=now,
    )
    session.add(statement)
    session.flush()
    return statement


def remove_statement(session: Session, *, borrower_index: bytes, record_ref: str | None) -> None:
    """Remove the statement on the file or on one record, and destroy its data key."""
    record_id = _target(session, borrower_index, record_ref)
    statement = _find(session, borrower_index, record_id)
    if statement is None:
        raise NotFound("there is no such statement", code="statement_not_found")
    _destroy(session, statement)


def _text(vault: Vault, statement: BorrowerStatement) -> str:
    key = vault.open_key(statement.data_key)
    return vault.unseal(key, TABLE, "text", statement.ref, statement.text_ct).decode()


def list_for_borrower(
    session: Session, material: KeyMaterial, borrower_index: bytes
) -> list[dict[str, Any]]:
    """The borrower's statements, the file's first, as JSON-ready values."""
    vault = Vault(material.keyring)
    rows = session.execute(
        select(BorrowerStatement, Delinquency)
        .outerjoin(Delinquency, Delinquency.id == BorrowerStatement.delinquency_id)
        .where(BorrowerStatement.borrower_index == borrower_index)
        .order_by(BorrowerStatement.delinquency_id.is_not(None), BorrowerStatement.created_at)
    ).all()
    return [
        {
            "ref": statement.ref,
            "record_id": record.ref if record is not None else None,
            "institution": record.institution.code if record is not None else None,
            "text": _text(vault, statement),
            "created_at": timestamp(statement.created_at),
        }
        for statement, record in rows
    ]


def any_statement(borrower_index: bytes | ColumnElement[Any]) -> Exists:
    """Whether the borrower has any statement, file or record, as an SQL condition.

    Most borrowers have none: an inquiry asks this with its other look-ups and calls
    ``statements_for_inquiry`` only when the answer is yes.
    """
    return exists().where(BorrowerStatement.borrower_index == borrower_index)


def statements_for_inquiry(
    session: Session, material: KeyMaterial, borrower_index: bytes, record_ids: Collection[int]
) -> tuple[str | None, dict[int, str]]:
    """What an inquirer sees: the file's statement, and the statement of each shown record.

    Only statements on ``record_ids`` are decrypted: a suppressed or hidden record's statement
    is not opened for an inquiry that does not show the record.
    """
    vault = Vault(material.keyring)
    wanted = set(record_ids)
    file_text: str | None = None
    per_record: dict[int, str] = {}
    query = select(BorrowerStatement).where(
        BorrowerStatement.borrower_index == borrower_index,
        or_(
            BorrowerStatement.delinquency_id.is_(None),
            BorrowerStatement.delinquency_id.in_(wanted),
        ),
    )
    for statement in session.scalars(query):
        if statement.delinquency_id is None:
            file_text = _text(vault, statement)
        elif statement.delinquency_id in wanted:
            per_record[statement.delinquency_id] = _text(vault, statement)
    return file_text, per_record
