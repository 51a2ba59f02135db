"""The borrower's own statement: one per target, replaced on set, shredded when it goes."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from factories import Member, admit, national_id, payload, submit
from registry import statements
from registry.errors import NotFound, ValidationFailed
from registry.models import BorrowerStatement, DataKey, Delinquency
from registry.secrets import KeyMaterial, load_key_material
from registry.settings import Settings

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TODAY = dt.datetime.now(dt.UTC).date()


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def material(settings: Settings) -> KeyMaterial:
    return load_key_material(settings)


def open_record(
    client: FlaskClient, session: Session, bank: Member, person: int = 1, account: str = "CARD-1"
) -> tuple[dict[str, Any], str]:
    doc = payload(bank, account_ref=account)
    doc["borrower"]["national_id"] = national_id(person)
    assert submit(client, bank, doc).status_code == 201
    session.expire_all()
    ref = session.scalar(select(Delinquency.ref).order_by(Delinquency.id.desc()).limit(1))
    session.commit()
    assert ref is not None
    return doc, ref


def index_of(material: KeyMaterial, person: int = 1) -> bytes:
    return material.blind_index.digest("national_id", national_id(person))


def rule_of(exc: pytest.ExceptionInfo[ValidationFailed]) -> tuple[str, str]:
    [error] = exc.value.errors
    return error.field, error.rule


def key_refs(session: Session) -> set[str]:
    session.commit()  # a fresh snapshot: the app committed in its own session
    refs = set(session.scalars(select(DataKey.ref)))
    session.commit()
    return refs


def test_statements_on_the_file_and_on_a_record_are_listed_and_encrypted(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    who = index_of(material)
    statements.set_statement(
        session, material, borrower_index=who, record_ref=record, text="已于三月还清", now=NOW
    )
    statements.set_statement(
        session, material, borrower_index=who, record_ref=None, text=" 我对记录有异议 ", now=NOW
    )
    session.commit()
    listed = statements.list_for_borrower(session, material, who)
    assert [(s["record_id"], s["institution"], s["text"]) for s in listed] == [
        (None, None, "我对记录有异议"),
        (record, "BANKA", "已于三月还清"),
    ]
    assert listed[0]["created_at"] == "2026-03-01T12:00:00Z"
    for row in session.scalars(select(BorrowerStatement)):
        assert "还清".encode() not in row.text_ct and "异议".encode() not in row.text_ct


def test_setting_again_replaces_and_destroys_the_old_key(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    who = index_of(material)
    first = statements.set_statement(
        session, material, borrower_index=who, record_ref=record, text="first", now=NOW
    )
    old_key = first.data_key.ref
    session.commit()
    statements.set_statement(
        session, material, borrower_index=who, record_ref=record, text="second", now=NOW
    )
    session.commit()
    rows = session.scalars(select(BorrowerStatement)).all()
    assert len(rows) == 1 and rows[0].data_key.ref != old_key
    assert old_key not in key_refs(session)
    assert [s["text"] for s in statements.list_for_borrower(session, material, who)] == ["second"]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "not_empty"),
        ("   ", "not_empty"),
        ("x" * 201, "max_length"),
        ("line\nbreak", "no_control_characters"),
        ("bell\x07", "no_control_characters"),
        ("abc\u202egnp.exe", "no_control_characters"),
        ("\u2066isolate", "no_control_characters"),
        (None, "required"),
        (42, "type_string"),
    ],
)
def test_text_rules(
    client: FlaskClient,
    session: Session,
    bank: Member,
    material: KeyMaterial,
    text: Any,
    rule: str,
) -> None:
    open_record(client, session, bank)
    with pytest.raises(ValidationFailed) as caught:
        statements.set_statement(
            session,
            material,
            borrower_index=index_of(material),
            record_ref=None,
            text=text,
            now=NOW,
        )
    assert rule_of(caught) == ("text", rule)
    assert "gnp" not in caught.value.detail  # the text itself is never echoed
    session.rollback()
    assert session.scalar(select(func.count()).select_from(BorrowerStatement)) == 0


def test_two_hundred_characters_of_any_script_are_accepted(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    open_record(client, session, bank)
    text = "债" * statements.MAX_LENGTH
    statements.set_statement(
        session, material, borrower_index=index_of(material), record_ref=None, text=text, now=NOW
    )
    session.commit()
    assert statements.list_for_borrower(session, material, index_of(material))[0]["text"] == text


def test_another_persons_record_is_indistinguishable_from_a_missing_one(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, mine = open_record(client, session, bank, person=1, account="MINE-1")
    _, theirs = open_record(client, session, bank, person=2, account="THEIRS-1")
    refused = []
    for ref in (theirs, "0" * 32):
        with pytest.raises(NotFound) as caught:
            statements.set_statement(
                session,
                material,
                borrower_index=index_of(material, 1),
                record_ref=ref,
                text="not mine",
                now=NOW,
            )
        refused.append((caught.value.code, caught.value.detail))
        session.rollback()
    assert refused[0] == refused[1] == ("record_not_found", "no such record in your file")
    with pytest.raises(NotFound) as caught:
        statements.set_statement(
            session,
            material,
            borrower_index=index_of(material, 3),
            record_ref=None,
            text="x",
            now=NOW,
        )
    assert caught.value.code == "file_not_found"
    session.rollback()
    assert mine


@pytest.mark.parametrize("ref", ["\x00" * 32, "' OR 1=1 --", "A" * 32])
def test_a_record_reference_of_the_wrong_shape_is_not_found(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial, ref: str
) -> None:
    open_record(client, session, bank)
    who = index_of(material)
    with pytest.raises(NotFound) as caught:
        statements.set_statement(
            session, material, borrower_index=who, record_ref=ref, text="x", now=NOW
        )
    assert caught.value.code == "record_not_found"
    session.rollback()
    with pytest.raises(NotFound):
        statements.remove_statement(session, borrower_index=who, record_ref=ref)


def test_removing_destroys_the_row_and_its_key(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    open_record(client, session, bank)
    who = index_of(material)
    row = statements.set_statement(
        session, material, borrower_index=who, record_ref=None, text="hello", now=NOW
    )
    key = row.data_key.ref
    session.commit()
    statements.remove_statement(session, borrower_index=who, record_ref=None)
    session.commit()
    assert session.scalar(select(func.count()).select_from(BorrowerStatement)) == 0
    assert key not in key_refs(session)
    with pytest.raises(NotFound) as caught:
        statements.remove_statement(session, borrower_index=who, record_ref=None)
    assert caught.value.code == "statement_not_found"


def test_an_inquiry_gets_the_file_statement_and_only_the_shown_records(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, shown = open_record(client, session, bank, account="SHOWN-1")
    _, hidden = open_record(client, session, bank, account="HIDDEN-1")
    _, other = open_record(client, session, bank, person=2, account="OTHER-1")
    who = index_of(material)
    for ref, text in ((shown, "on shown"), (hidden, "on hidden"), (None, "on file")):
        statements.set_statement(
            session, material, borrower_index=who, record_ref=ref, text=text, now=NOW
        )
    statements.set_statement(
        session,
        material,
        borrower_index=index_of(material, 2),
        record_ref=other,
        text="someone else",
        now=NOW,
    )
    session.commit()
    ids = {ref: id_ for ref, id_ in session.execute(select(Delinquency.ref, Delinquency.id))}
    file_text, per_record = statements.statements_for_inquiry(
        session, material, who, [ids[shown], ids[other]]
    )
    assert file_text == "on file"
    assert per_record == {ids[shown]: "on shown"}
    assert statements.statements_for_inquiry(session, material, index_of(material, 9), []) == (
        None,
        {},
    )


def test_clearing_shreds_the_record_statement_and_with_the_last_record_the_file_statement(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    first_doc, first = open_record(client, session, bank, account="ONE-1")
    second_doc, second = open_record(client, session, bank, account="TWO-2")
    who = index_of(material)
    keys = {}
    for ref in (first, second, None):
        row = statements.set_statement(
            session, material, borrower_index=who, record_ref=ref, text=f"on {ref}", now=NOW
        )
        keys[ref] = row.data_key.ref
    session.commit()

    def settle(doc: dict[str, Any]) -> None:
        body = {k: doc[k] for k in ("version", "institution", "account_ref")}
        body.update(
            report_id=f"{doc['report_id']}-s",
            kind="settle",
            sequence=2,
            settlement={"type": "paid_in_full", "date": TODAY.isoformat()},
        )
        assert submit(client, bank, body).status_code == 201

    settle(first_doc)
    remaining = key_refs(session)
    assert keys[first] not in remaining and {keys[second], keys[None]} <= remaining
    assert [s["text"] for s in statements.list_for_borrower(session, material, who)] == [
        "on None",
        f"on {second}",
    ]
    settle(second_doc)
    remaining = key_refs(session)
    assert remaining.isdisjoint(keys.values())
    assert session.scalar(select(func.count()).select_from(BorrowerStatement)) == 0


def test_two_sets_at_once_leave_one_statement(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial, engine: Engine
) -> None:
    _, record = open_record(client, session, bank)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    who = index_of(material)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run(target: str | None, text: str) -> None:
        try:
            barrier.wait()
            with sessions() as s, s.begin():
                statements.set_statement(
                    s, material, borrower_index=who, record_ref=target, text=text, now=NOW
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(target, f"text {i}"))
        for i, target in enumerate((record, record, None, None))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    session.expire_all()
    rows = session.scalars(select(BorrowerStatement)).all()
    assert sorted(r.delinquency_id is None for r in rows) == [False, True]
    assert len(key_refs(session) & {r.data_key.ref for r in rows}) == 2
