"""Disputes: filed by the borrower, answered by the member in time, or the record is suppressed."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from factories import Member, admit, national_id, payload, submit
from registry import disputes, notify, statements
from registry.clearing import Clearer
from registry.errors import Conflict, NotFound, ValidationFailed
from registry.models import DataKey, Delinquency, Dispute, Notification, Tombstone
from registry.policy import Policy
from registry.secrets import KeyMaterial, load_key_material
from registry.settings import Settings

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DUE = NOW + dt.timedelta(days=20)
TODAY = NOW.date()
POLICY = Policy()


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


@pytest.fixture
def other(session: Session) -> Member:
    return admit(session, "BANKB")


@pytest.fixture
def material(settings: Settings) -> KeyMaterial:
    return load_key_material(settings)


def sessions_for(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def open_record(
    client: FlaskClient, session: Session, bank: Member, person: int = 1, account: str = "CARD-1"
) -> tuple[dict[str, Any], str]:
    doc = payload(bank, account_ref=account)
    doc["borrower"]["national_id"] = national_id(person)
    assert submit(client, bank, doc).status_code == 201
    session.commit()
    ref = session.scalar(select(Delinquency.ref).order_by(Delinquency.id.desc()).limit(1))
    session.commit()
    assert ref is not None
    return doc, ref


def later(doc: dict[str, Any], kind: str, sequence: int, **body: Any) -> dict[str, Any]:
    head = {k: doc[k] for k in ("version", "institution", "account_ref")}
    return {
        **head,
        "report_id": f"{doc['report_id']}-{sequence}",
        "kind": kind,
        "sequence": sequence,
        **body,
    }


def index_of(material: KeyMaterial, person: int = 1) -> bytes:
    return material.blind_index.digest("national_id", national_id(person))


def file(
    session: Session,
    material: KeyMaterial,
    record: str,
    *,
    person: int = 1,
    reason: str = "wrong_amount",
    text: str = "金额不对",
    now: dt.datetime = NOW,
) -> Dispute:
    dispute = disputes.file_dispute(
        session,
        material,
        POLICY,
        borrower_index=index_of(material, person),
        record_ref=record,
        reason=reason,
        text=text,
        now=now,
    )
    session.commit()
    return dispute


def answer(
    session: Session,
    material: KeyMaterial,
    member: Member,
    ref: str,
    how: Any,
    note: str | None = None,
    now: dt.datetime = NOW,
) -> Dispute:
    institution = _institution_id(session, member)
    done = disputes.answer(
        session,
        material,
        institution_id=institution,
        dispute_ref=ref,
        answer=how,
        note=note,
        now=now,
    )
    session.commit()
    return done


def _institution_id(session: Session, member: Member) -> int:
    from registry.members import get

    return get(session, member.code).id


def messages(session: Session, material: KeyMaterial) -> list[tuple[str, str, dict[str, str]]]:
    """Every queued message: (audience, template, params), decrypted where sealed."""
    fresh(session)
    found = notify.outbox(session, material, NOW)
    session.commit()
    return [(m.audience, m.template, dict(m.params)) for m in found]


def fresh(session: Session) -> None:
    """End the test session's snapshot and forget loaded rows: the app wrote in its own."""
    session.commit()
    session.expire_all()


def borrower_view(session: Session, material: KeyMaterial, person: int = 1) -> list[dict[str, Any]]:
    fresh(session)
    return disputes.list_for_borrower(session, material, index_of(material, person))


def record_row(session: Session, ref: str) -> Delinquency | None:
    fresh(session)
    row = session.scalar(select(Delinquency).where(Delinquency.ref == ref))
    session.commit()
    return row


def rule_of(caught: pytest.ExceptionInfo[ValidationFailed]) -> tuple[str, str]:
    [error] = caught.value.errors
    return error.field, error.rule


# --- filing ---------------------------------------------------------------------------------


def test_filing_opens_a_dispute_due_in_twenty_days_and_tells_both_sides(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    dispute = file(session, material, record, text="我已经还清了\n请核实")
    assert (dispute.status, dispute.reason, dispute.due_at) == ("open", "wrong_amount", DUE)
    assert dispute.text_ct is not None and "还清".encode() not in dispute.text_ct
    [listed] = borrower_view(session, material)
    assert listed == {
        "ref": dispute.ref,
        "record_id": record,
        "institution": "BANKA",
        "reason": "wrong_amount",
        "text": "我已经还清了\n请核实",
        "status": "open",
        "answer": None,
        "answer_note": None,
        "filed_at": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "due_at": DUE.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "answered_at": None,
    }
    sent = messages(session, material)
    assert ("member", "dispute_filed") in {(a, t) for a, t, _ in sent}
    member_params = next(p for a, t, p in sent if a == "member")
    assert member_params == {
        "dispute": dispute.ref,
        "record": record,
        "due": DUE.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    borrower_params = next(p for a, t, p in sent if a == "borrower")
    assert borrower_params["record"] == "BANKA ****RD-1"
    member_row = session.scalars(select(Notification).where(Notification.audience == "member"))
    plain = member_row.one().message or ""
    for secret in (national_id(1), "张三", "13800138000", "还清", "10000"):
        assert secret not in plain


@pytest.mark.parametrize(
    ("reason", "text", "field", "rule"),
    [
        ("bogus", "x", "reason", "one_of"),
        ("other", "", "text", "not_empty"),
        ("wrong_amount", "x" * 1001, "text", "max_length"),
        ("wrong_amount", "tab\tinside", "text", "no_control_characters"),
        ("wrong_amount", "rtl\u202eoverride", "text", "no_control_characters"),
    ],
)
def test_filing_rules(
    client: FlaskClient,
    session: Session,
    bank: Member,
    material: KeyMaterial,
    reason: str,
    text: str,
    field: str,
    rule: str,
) -> None:
    _, record = open_record(client, session, bank)
    with pytest.raises(ValidationFailed) as caught:
        file(session, material, record, reason=reason, text=text)
    assert rule_of(caught) == (field, rule)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Dispute)) == 0


def test_every_broken_rule_is_reported_at_once(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    with pytest.raises(ValidationFailed) as caught:
        file(session, material, record, reason="bogus", text="x" * 1001)
    assert {(e.field, e.rule) for e in caught.value.errors} == {
        ("reason", "one_of"),
        ("text", "max_length"),
    }


def test_every_reason_is_accepted_and_text_is_optional_except_for_other(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    for i, reason in enumerate(disputes.REASONS):
        _, record = open_record(client, session, bank, account=f"ACCT-{i}")
        text = "explained" if reason == "other" else ""
        assert file(session, material, record, reason=reason, text=text).reason == reason
    listed = borrower_view(session, material)
    assert sorted(d["reason"] for d in listed) == sorted(disputes.REASONS)
    assert {d["text"] for d in listed} == {None, "explained"}


def test_a_borrower_cannot_dispute_another_persons_record(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, theirs = open_record(client, session, bank, person=2)
    open_record(client, session, bank, person=1, account="MINE-1")
    answers = []
    for ref in (theirs, "f" * 32):
        with pytest.raises(NotFound) as caught:
            file(session, material, ref, person=1)
        answers.append((caught.value.code, caught.value.detail, caught.value.extra))
        session.rollback()
    assert answers[0] == answers[1]
    assert session.scalar(select(func.count()).select_from(Dispute)) == 0


@pytest.mark.parametrize("ref", ["\x00" * 32, "' OR 1=1 --", "A" * 32, "", "０" * 32])
def test_a_reference_of_the_wrong_shape_is_not_found(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial, ref: str
) -> None:
    open_record(client, session, bank)
    with pytest.raises(NotFound) as filed:
        file(session, material, ref)
    assert filed.value.code == "record_not_found"
    session.rollback()
    bank_id = _institution_id(session, bank)
    with pytest.raises(NotFound) as read:
        disputes.get_for_member(session, material, bank_id, ref)
    with pytest.raises(NotFound) as answered:
        answer(session, material, bank, ref, "withdraw")
    assert read.value.code == answered.value.code == "dispute_not_found"


def test_one_unanswered_dispute_per_record(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    first = file(session, material, record)
    with pytest.raises(Conflict) as caught:
        file(session, material, record, reason="wrong_dates")
    assert caught.value.code == "dispute_already_open"
    assert caught.value.extra == {"dispute_ref": first.ref}
    session.rollback()
    answer(session, material, bank, first.ref, "confirm", note="checked the ledger")
    second = file(session, material, record, reason="wrong_dates")
    assert second.status == "open"
    assert [d["status"] for d in borrower_view(session, material)] == ["open", "answered"]


# --- the member's side ----------------------------------------------------------------------


def test_a_member_lists_only_disputes_on_its_own_records(
    client: FlaskClient,
    session: Session,
    bank: Member,
    other: Member,
    material: KeyMaterial,
) -> None:
    _, mine = open_record(client, session, bank, account="LOAN-77-9876")
    _, theirs = open_record(client, session, other, account="OTHER-1")
    own = file(session, material, mine)
    file(session, material, theirs)
    bank_id = _institution_id(session, bank)
    [listed], _ = disputes.list_for_member(session, material, bank_id)
    assert listed["ref"] == own.ref and listed["record_id"] == mine
    assert listed["account_ref"] == "LOAN-77-9876"  # its own record: in full
    assert listed["text"] == "金额不对" and listed["suppressed"] is False
    assert not {"phone", "address", "name", "national_id"} & set(listed)
    assert "13800138000" not in json.dumps(listed, ensure_ascii=False)
    assert disputes.list_for_member(session, material, bank_id, status="answered")[0] == []
    assert len(disputes.list_for_member(session, material, bank_id, status="open")[0]) == 1
    with pytest.raises(ValidationFailed) as caught:
        disputes.list_for_member(session, material, bank_id, status="closed")
    assert rule_of(caught) == ("status", "one_of")
    with pytest.raises(NotFound):
        disputes.get_for_member(session, material, _institution_id(session, other), own.ref)


def test_confirm_needs_a_note_and_tells_the_borrower(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    dispute = file(session, material, record)
    for note, rule in ((None, "required"), ("  ", "not_empty"), ("x" * 1001, "max_length")):
        with pytest.raises(ValidationFailed) as caught:
            answer(session, material, bank, dispute.ref, "confirm", note=note)
        assert rule_of(caught) == ("note", rule)
        session.rollback()
    later_ = NOW + dt.timedelta(days=3)
    done = answer(session, material, bank, dispute.ref, "confirm", note="核对账单无误", now=later_)
    assert (done.status, done.answer, done.answered_at) == ("answered", "confirm", later_)
    assert done.answer_note_ct is not None and "账单".encode() not in done.answer_note_ct
    [listed] = borrower_view(session, material)
    assert (listed["answer"], listed["answer_note"]) == ("confirm", "核对账单无误")
    assert ("borrower", "dispute_answered", {"record": "BANKA ****RD-1", "answer": "confirm"}) in (
        messages(session, material)
    )
    with pytest.raises(Conflict) as again:
        answer(session, material, bank, dispute.ref, "confirm", note="twice")
    assert again.value.code == "dispute_already_answered"


def test_another_member_cannot_see_or_answer(
    client: FlaskClient, session: Session, bank: Member, other: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    dispute = file(session, material, record)
    outcomes = []
    for ref in (dispute.ref, "0" * 32):
        with pytest.raises(NotFound) as caught:
            answer(session, material, other, ref, "withdraw")
        outcomes.append((caught.value.code, caught.value.detail))
        session.rollback()
    assert outcomes[0] == outcomes[1] == ("dispute_not_found", "no such dispute on your records")
    assert record_row(session, record) is not None
    assert disputes.list_for_member(session, material, _institution_id(session, other))[0] == []


def test_a_members_disputes_come_a_page_at_a_time_in_due_order(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    """Pages follow ``(due_at, id)``, ties included; a dispute answered between two pages of
    the open ones moves none of the others out of its page; only cursors it gave are taken."""
    minutes = [0, 0, 1, 2, 2, 3]  # equal due times: ordered by id
    filed = []
    for n, minute in enumerate(minutes, start=1):
        _, record = open_record(client, session, bank, person=n, account=f"PAGE-{n}")
        filed.append(
            file(session, material, record, person=n, now=NOW + dt.timedelta(minutes=minute))
        )
    bank_id = _institution_id(session, bank)
    expected = [d.ref for d in sorted(filed, key=lambda d: (d.due_at, d.id))]
    everything, _ = disputes.list_for_member(session, material, bank_id)
    assert [d["ref"] for d in everything] == expected

    pages: list[list[str]] = []
    cursor = None
    while True:
        page, following = disputes.list_for_member(
            session, material, bank_id, status="open", after=cursor, limit=2
        )
        if not page:
            assert following == cursor  # an empty page hands the same cursor back
            break
        pages.append([d["ref"] for d in page])
        if len(pages) == 1:  # the first open dispute is answered before the next page
            answer(session, material, bank, page[0]["ref"], "confirm", note="checked")
        cursor = following
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [ref for page in pages for ref in page] == expected

    with pytest.raises(ValidationFailed) as caught:
        disputes.list_for_member(session, material, bank_id, after="not-a-cursor")
    assert rule_of(caught) == ("after", "cursor")
    with pytest.raises(ValidationFailed) as caught:
        disputes.list_for_member(session, material, bank_id, limit=501)
    assert rule_of(caught) == ("limit", "range")


def test_answer_correct_points_to_the_correct_report(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    dispute = file(session, material, record)
    with pytest.raises(ValidationFailed) as caught:
        answer(session, material, bank, dispute.ref, "correct")
    assert rule_of(caught) == ("answer", "correct_by_report")
    with pytest.raises(ValidationFailed) as bad:
        answer(session, material, bank, dispute.ref, "ignore")
    assert rule_of(bad) == ("answer", "one_of")


def test_a_correct_report_answers_the_dispute_and_an_update_does_not(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    doc, record = open_record(client, session, bank)
    dispute = file(session, material, record)
    update = {**payload(bank), **later(doc, "update", 2), "borrower": doc["borrower"]}
    assert submit(client, bank, update).status_code == 201
    assert borrower_view(session, material)[0]["status"] == "open"
    fixed = {
        **payload(bank),
        **later(doc, "correct", 3),
        "borrower": doc["borrower"],
        "overdue_principal": "12000.00",
    }
    assert submit(client, bank, fixed).status_code == 201
    [listed] = borrower_view(session, material)
    assert (listed["status"], listed["answer"]) == ("answered", "correct")
    assert listed["answered_at"] is not None
    assert ("borrower", "dispute_answered") in {(a, t) for a, t, _ in messages(session, material)}
    assert dispute.ref == listed["ref"]


def test_withdraw_clears_the_record_for_real_after_telling_the_borrower(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    dispute = file(session, material, record, reason="not_mine", text="这不是我的账户")
    row = statements.set_statement(
        session,
        material,
        borrower_index=index_of(material),
        record_ref=record,
        text="不是我",
        now=NOW,
    )
    session.commit()
    held = record_row(session, record)
    assert held is not None
    gone_keys = {dispute.data_key.ref, row.data_key.ref, held.data_key.ref}
    done = answer(session, material, bank, dispute.ref, "withdraw")
    assert (done.answer, done.status) == ("withdraw", "answered")
    assert record_row(session, record) is None
    assert session.scalar(select(func.count()).select_from(Dispute)) == 0
    assert session.scalars(select(Tombstone.reason)).all() == ["reported_in_error"]
    assert gone_keys.isdisjoint(set(session.scalars(select(DataKey.ref))))
    told = session.scalars(
        select(Notification).where(
            Notification.audience == "borrower", Notification.template == "dispute_answered"
        )
    ).one()
    # Queued while the record (and the phone on it) still existed.
    assert told.state == notify.PENDING
    [(_, _, params)] = [m for m in messages(session, material) if m[1] == "dispute_answered"]
    assert params == {"record": "BANKA ****RD-1", "answer": "withdraw"}
    text = next(m.text for m in notify.outbox(session, material, NOW) if m.ref == told.ref)
    for amount in ("10000", "150.00", "100.00"):
        assert amount not in text


# --- the deadline ---------------------------------------------------------------------------


def test_unanswered_by_the_deadline_the_record_is_suppressed_and_both_sides_told(
    client: FlaskClient,
    session: Session,
    bank: Member,
    material: KeyMaterial,
    engine: Engine,
    settings: Settings,
) -> None:
    _, record = open_record(client, session, bank)
    dispute = file(session, material, record)
    sessions = sessions_for(engine)
    assert disputes.expire_overdue(sessions, material, DUE - dt.timedelta(seconds=1)) == 0
    assert getattr(record_row(session, record), "suppressed_at", "gone") is None
    swept = Clearer(material, POLICY).sweep(sessions, DUE)
    assert swept.disputes_expired == 1
    row = record_row(session, record)
    assert row is not None and row.suppressed_at == DUE
    [listed] = borrower_view(session, material)
    assert listed["status"] == "expired"
    assert disputes.open_dispute_record_ids(session, [row.id]) == {row.id}
    expired = [(a, p) for a, t, p in messages(session, material) if t == "dispute_expired"]
    assert sorted(expired, key=lambda m: m[0]) == [
        ("borrower", {"record": "BANKA ****RD-1"}),
        ("member", {"dispute": dispute.ref, "record": record}),
    ]
    assert disputes.expire_overdue(sessions, material, DUE + dt.timedelta(days=1)) == 0
    assert Clearer(material, POLICY).sweep(sessions, DUE).disputes_expired == 0
    assert len(messages(session, material)) == 4  # filed x2, expired x2: nothing twice


def test_the_deadline_follows_the_policy(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, record = open_record(client, session, bank)
    dispute = disputes.file_dispute(
        session,
        material,
        Policy(dispute_response_days=30),
        borrower_index=index_of(material),
        record_ref=record,
        reason="already_paid",
        text="",
        now=NOW,
    )
    assert dispute.due_at == NOW + dt.timedelta(days=30)


@pytest.mark.parametrize("how", ["confirm", "correct_report"])
def test_any_answer_after_the_deadline_lifts_the_suppression(
    client: FlaskClient,
    session: Session,
    bank: Member,
    material: KeyMaterial,
    engine: Engine,
    how: str,
) -> None:
    doc, record = open_record(client, session, bank)
    dispute = file(session, material, record)
    assert disputes.expire_overdue(sessions_for(engine), material, DUE) == 1
    assert getattr(record_row(session, record), "suppressed_at", None) is not None
    if how == "confirm":
        answer(session, material, bank, dispute.ref, "confirm", note="verified late", now=DUE)
    else:
        fixed = {**payload(bank), **later(doc, "correct", 2), "borrower": doc["borrower"]}
        assert submit(client, bank, fixed).status_code == 201
    row = record_row(session, record)
    assert row is not None and row.suppressed_at is None
    assert disputes.open_dispute_record_ids(session, [row.id]) == set()
    [listed] = borrower_view(session, material)
    assert listed["status"] == "answered"


def test_two_sweeps_at_once_expire_each_dispute_once(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial, engine: Engine
) -> None:
    for i in range(9):
        _, record = open_record(client, session, bank, person=100 + i, account=f"ACCT-{i}")
        file(session, material, record, person=100 + i)
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            barrier.wait()
            results.append(disputes.expire_overdue(sessions_for(engine), material, DUE, batch=2))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(results) == 9
    session.commit()
    assert set(session.scalars(select(Dispute.status))) == {"expired"}
    assert (
        session.scalar(
            select(func.count()).select_from(Delinquency).where(Delinquency.suppressed_at.is_(None))
        )
        == 0
    )
    expired = [m for m in messages(session, material) if m[1] == "dispute_expired"]
    assert len(expired) == 18  # one to each side per dispute, none twice


def test_a_sweep_racing_an_answer_leaves_a_consistent_state(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial, engine: Engine
) -> None:
    _, record = open_record(client, session, bank)
    dispute = file(session, material, record)
    sessions = sessions_for(engine)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)
    bank_id = _institution_id(session, bank)
    session.commit()

    def sweep() -> None:
        try:
            barrier.wait()
            disputes.expire_overdue(sessions, material, DUE)
        except BaseException as exc:
            errors.append(exc)

    def respond() -> None:
        try:
            barrier.wait()
            with sessions() as s, s.begin():
                disputes.answer(
                    s,
                    material,
                    institution_id=bank_id,
                    dispute_ref=dispute.ref,
                    answer="confirm",
                    note="verified",
                    now=DUE,
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sweep), threading.Thread(target=respond)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    row = record_row(session, record)
    assert row is not None and row.suppressed_at is None  # answered last, or before the sweep
    [listed] = borrower_view(session, material)
    assert listed["status"] == "answered"


# --- clearing -------------------------------------------------------------------------------


def test_a_settled_record_takes_its_disputes_and_their_keys(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    doc, record = open_record(client, session, bank)
    first = file(session, material, record)
    answer(session, material, bank, first.ref, "confirm", note="ok")
    second = file(session, material, record, reason="already_paid", text="paid")
    keys = {first.data_key.ref, second.data_key.ref}
    settle = later(doc, "settle", 2, settlement={"type": "paid_in_full", "date": TODAY.isoformat()})
    assert submit(client, bank, settle).status_code == 201
    session.commit()
    assert session.scalar(select(func.count()).select_from(Dispute)) == 0
    assert keys.isdisjoint(set(session.scalars(select(DataKey.ref))))
    assert borrower_view(session, material) == []


def test_open_dispute_record_ids(
    client: FlaskClient, session: Session, bank: Member, material: KeyMaterial
) -> None:
    _, a = open_record(client, session, bank, account="A-1")
    _, b = open_record(client, session, bank, account="B-1")
    _, c = open_record(client, session, bank, account="C-1")
    file(session, material, a)
    answered = file(session, material, b)
    answer(session, material, bank, answered.ref, "confirm", note="fine")
    ids = {ref: id_ for ref, id_ in session.execute(select(Delinquency.ref, Delinquency.id))}
    assert disputes.open_dispute_record_ids(session, ids.values()) == {ids[a]}
    assert disputes.open_dispute_record_ids(session, [ids[c]]) == set()
    assert disputes.open_dispute_record_ids(session, []) == set()
    flagged = select(Delinquency.id).where(disputes.under_dispute(Delinquency.id))
    assert set(session.scalars(flagged)) == {ids[a]}  # the same rule as one SQL condition
