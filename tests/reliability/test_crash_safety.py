"""Crash safety: SIGKILL the whole server mid-stream; every receipt stands, nothing is half-stored.

A member streams signed reports (open, update, payment, and for some accounts a settlement that
clears the record) from several threads, retrying lost answers the way the client library does,
while another thread kills gunicorn (master and workers, SIGKILL) and restarts it. Some reports
are sent once and abandoned if their answer is lost. Afterwards, read straight from the
database:

- every report that got a receipt is stored exactly once, with the envelope digest and the very
  receipt bytes the member holds; a settlement's record is cleared, and only the settling
  report's receipt is kept (so that a resend still gets it);
- each account is exactly at its last acknowledged sequence (no lost or doubled update);
- an abandoned report is either wholly there (its receipt can be fetched and verifies) or
  wholly absent: no record, borrower or data key without the rows that must come with it;
- the database passes its own integrity check (SQLite), and the server's log holds no personal
  data and no secret.

Short form: 2 kills, about 100 reports. ``SOAK=1``: 6 kills, about 650 reports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask.testing import FlaskClient
from security.support import instance_secrets, leaks, raw_private, secret_forms
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from client.errors import RegistryError, TransportError
from client.http import RegistryClient
from client.receipts import verify_receipt
from factories import Member, admit, envelope, national_id, payload, post_envelope
from registry.db import make_engine
from registry.models import (
    Base,
    Borrower,
    DataKey,
    Delinquency,
    Institution,
    Report,
    Tombstone,
)
from registry.secrets import load_key_material
from registry.settings import Settings
from reliability.server import Registry

pytestmark = pytest.mark.e2e

SOAK = os.environ.get("SOAK") == "1"
ACCOUNTS = 150 if SOAK else 24
ABANDONED = 150 if SOAK else 16
KILLS = 6 if SOAK else 2
STREAMS = 3
DEADLINE = 240.0
BORROWERS = 17
MEMBER = "BANKA"
TODAY = dt.datetime.now(dt.UTC).date().isoformat()
PHONE = "+86139{:08d}"
NAMES = ("司马懿", "诸葛亮", "上官婉儿", "欧阳修")


# --- what the member sends ----------------------------------------------------------------------


def borrower(serial: int) -> dict[str, str]:
    return {
        "national_id": national_id(100 + serial),
        "name": NAMES[serial % len(NAMES)],
        "phone": PHONE.format(serial),
        "address": f"上海市黄浦区南京东路{serial}号",
    }


def script(account: int) -> list[dict[str, Any]]:
    """The reports of one account, in order; every third account is settled (and cleared)."""
    ref = f"CRASH-{account:04d}"
    person = borrower(account % BORROWERS)
    opened = payload(MEMBER, report_id=f"crash-{account:04d}-1", account_ref=ref, borrower=person)
    updated = {**opened, "report_id": f"crash-{account:04d}-2", "kind": "update", "sequence": 2}
    updated["overdue_interest"] = "120.00"
    head = {k: opened[k] for k in ("version", "institution", "account_ref")}
    paid = {
        **head,
        "report_id": f"crash-{account:04d}-3",
        "kind": "payment",
        "sequence": 3,
        "payment": {"amount": "100.00", "date": TODAY},
    }
    reports = [opened, updated, paid]
    if account % 3 == 0:
        settled = {
            **head,
            "report_id": f"crash-{account:04d}-4",
            "kind": "settle",
            "sequence": 4,
            "settlement": {"type": "paid_in_full", "date": TODAY},
        }
        reports.append(settled)
    return reports


@dataclass
class Sent:
    report_id: str
    account_ref: str
    sequence: int
    kind: str
    envelope: bytes
    receipt: bytes | None = None
    retried: bool = False


@dataclass
class Ledger:
    """What the member holds: every envelope it sent and the receipts it got back."""

    sent: list[Sent] = field(default_factory=list)
    abandoned: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def deliver(client: RegistryClient, item: Sent, *, once: bool) -> None:
    """Send until a receipt, as a bank would; ``once``: give up on the first lost answer."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            item.receipt = client.submit(item.envelope).receipt
            return
        except TransportError:
            pass
        except RegistryError as exc:
            if exc.status < 500 and exc.status != 429:
                raise
        item.retried = True
        if once:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{item.report_id}: no receipt within {DEADLINE:.0f} s")
        time.sleep(0.2)


def stream(registry: Registry, bank: Member, work: queue.Queue[list[Sent]], ledger: Ledger) -> None:
    client = RegistryClient(registry.url, bank.key, bank.keyid, retries=1, backoff=0.05, timeout=20)
    while True:
        try:
            items = work.get_nowait()
        except queue.Empty:
            return
        try:
            for item in items:
                once = item.account_ref.startswith("ABANDON")
                deliver(client, item, once=once)
                with ledger.lock:
                    ledger.answered += 1
                if once:
                    break
        except Exception as exc:
            with ledger.lock:
                ledger.errors.append(f"{items[0].account_ref}: {type(exc).__name__}: {exc}")


def killer(
    registry: Registry, ledger: Ledger, done: threading.Event, kills: list[float], total: int
) -> None:
    """Kill and restart the server at random points of the stream (by progress, not by clock,
    so that every kill lands mid-stream however fast or slow the machine is)."""
    rng = random.Random(int(os.environ.get("CRASH_SEED", "9421")))
    marks = sorted(int(total * rng.uniform(0.1, 0.9)) for _ in range(KILLS))
    for mark in marks:
        while ledger.answered < mark:
            if done.wait(0.01):
                return
        try:
            registry.kill()
            kills.append(time.monotonic())
            time.sleep(rng.uniform(0.0, 0.3))
            registry.start()
        except Exception as exc:  # reported by the test thread
            ledger.errors.append(f"killer: {type(exc).__name__}: {exc}")
            return


# --- what the database must hold ---------------------------------------------------------------


def account_index(settings: Settings, ref: str) -> bytes:
    material = load_key_material(settings)
    return material.blind_index.digest("account_ref", f"{MEMBER}\x00{ref}")


def orphans(engine: Engine) -> list[str]:
    """Rows that cannot exist on their own: the signs of a half-stored transaction."""
    found = []
    with Session(engine) as s:
        lonely_records = s.scalar(
            select(func.count())
            .select_from(Delinquency)
            .where(~select(Report.id).where(Report.delinquency_id == Delinquency.id).exists())
        )
        lonely_borrowers = s.scalar(
            select(func.count())
            .select_from(Borrower)
            .where(~select(Delinquency.id).where(Delinquency.borrower_id == Borrower.id).exists())
        )
        used = set()
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if any(fk.column.table.name == DataKey.__tablename__ for fk in column.foreign_keys):
                    used |= {v for v in s.scalars(select(column)) if v is not None}
        keys = set(s.scalars(select(DataKey.id)))
    if lonely_records:
        found.append(f"{lonely_records} records without any report")
    if lonely_borrowers:
        found.append(f"{lonely_borrowers} borrowers without any record")
    if keys - used:
        found.append(f"{len(keys - used)} data keys that protect nothing")
    return found


def check_database(registry: Registry, ledger: Ledger, registry_keys: Any) -> None:
    settings = Settings(
        instance_path=registry.home / "instance", database_url=registry.database_url
    )
    engine = make_engine(settings)
    try:
        with Session(engine) as s:
            member = s.scalar(select(Institution).where(Institution.code == MEMBER))
            assert member is not None
            rows = {
                r.report_id: r
                for r in s.scalars(select(Report).where(Report.institution_id == member.id))
            }
            ids = list(
                s.scalars(select(Report.report_id).where(Report.institution_id == member.id))
            )
            assert len(ids) == len(set(ids)), "a report id is stored twice"
            by_account: dict[str, list[Sent]] = {}
            for item in ledger.sent:
                by_account.setdefault(item.account_ref, []).append(item)
            for ref, items in by_account.items():
                index = account_index(settings, ref)
                record = s.scalar(select(Delinquency).where(Delinquency.account_index == index))
                last = items[-1]
                if last.kind == "settle":
                    assert record is None, f"{ref}: settled but still stored"
                    stone = s.scalar(select(Tombstone).where(Tombstone.account_index == index))
                    assert stone is not None and stone.last_sequence == last.sequence, ref
                    kept = [i for i in items if i.report_id in rows]
                    assert kept == [last], f"{ref}: reports of a cleared record kept"
                    row = rows[last.report_id]
                    assert row.delinquency_id is None and row.envelope_ct == b"", ref
                    assert row.receipt == last.receipt, f"{ref}: another receipt"
                    continue
                assert record is not None, f"{ref}: acknowledged record missing"
                assert record.sequence == last.sequence, f"{ref}: at {record.sequence}"
                for item in items:
                    row = rows.get(item.report_id)
                    assert row is not None, f"{item.report_id}: receipt but no report"
                    assert row.envelope_sha256 == hashlib.sha256(item.envelope).hexdigest()
                    assert row.receipt == item.receipt, f"{item.report_id}: another receipt"
                    assert row.delinquency_id == record.id
            for item in ledger.abandoned:
                index = account_index(settings, item.account_ref)
                record = s.scalar(select(Delinquency).where(Delinquency.account_index == index))
                row = rows.get(item.report_id)
                assert (record is None) == (row is None), f"{item.report_id}: half-stored"
                if row is not None:
                    assert row.envelope_sha256 == hashlib.sha256(item.envelope).hexdigest()
                    verify_receipt(row.receipt, registry_keys, envelope=item.envelope)
        assert orphans(engine) == []
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
                conn.rollback()
    finally:
        engine.dispose()


# --- the test ---------------------------------------------------------------------------------


def test_sigkill_mid_stream_loses_no_acknowledged_report_and_half_stores_nothing(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    key, keyid = registry.setup(MEMBER)[MEMBER]
    bank = Member(MEMBER, key, keyid)
    registry.start()
    ledger = Ledger()
    work: queue.Queue[list[Sent]] = queue.Queue()
    plans: list[list[Sent]] = []
    for account in range(ACCOUNTS):
        items = [
            Sent(r["report_id"], r["account_ref"], r["sequence"], r["kind"], envelope(bank, r))
            for r in script(account)
        ]
        plans.append(items)
        ledger.sent.extend(items)
    for n in range(ABANDONED):
        doc = payload(MEMBER, report_id=f"abandon-{n:04d}", account_ref=f"ABANDON-{n:04d}")
        doc["borrower"] = borrower(n % BORROWERS)
        item = Sent(doc["report_id"], doc["account_ref"], 1, "open", envelope(bank, doc))
        plans.append([item])
        ledger.abandoned.append(item)
    random.Random(7).shuffle(plans)
    for items in plans:
        work.put(items)

    done, kills = threading.Event(), []
    streams = [
        threading.Thread(target=stream, args=(registry, bank, work, ledger)) for _ in range(STREAMS)
    ]
    total = len(ledger.sent) + len(ledger.abandoned)
    chaos = threading.Thread(target=killer, args=(registry, ledger, done, kills, total))
    started = time.monotonic()
    for thread in [*streams, chaos]:
        thread.start()
    for thread in streams:
        thread.join(timeout=DEADLINE + 60)
    done.set()
    chaos.join(timeout=120)
    elapsed = time.monotonic() - started
    assert not any(t.is_alive() for t in [*streams, chaos]), "a thread hung"
    assert not ledger.errors, "\n".join(ledger.errors[:20])
    if registry.proc is None:
        registry.start()

    acknowledged = [i for i in ledger.sent if i.receipt is not None]
    retried = sum(i.retried for i in [*ledger.sent, *ledger.abandoned])
    stored_abandoned = sum(i.receipt is not None for i in ledger.abandoned)
    with capsys.disabled():
        print(
            f"\ncrash safety: {len(kills)} kills, {registry.starts} starts, {len(acknowledged)} "
            f"receipts, {retried} lost answers retried, {stored_abandoned}/{ABANDONED} abandoned "
            f"reports answered, {elapsed:.1f} s"
        )
    assert len(kills) == KILLS, "the stream ended before every kill: nothing was killed mid-way"
    assert retried > 0, "no request was in flight at any kill"
    assert all(i.receipt is not None for i in ledger.sent)

    client = RegistryClient(registry.url, key, keyid)
    registry_keys = client.registry_keys()
    for item in acknowledged:
        verify_receipt(item.receipt or b"", registry_keys, envelope=item.envelope)
    registry.stop()
    check_database(registry, ledger, registry_keys)
    needles = [value for person in map(borrower, range(BORROWERS)) for value in person.values()]
    needles += [*instance_secrets(registry.home / "instance"), *secret_forms(raw_private(key))]
    assert leaks([registry.log()], needles) == [], "the server's log"


def test_a_settlement_resent_after_its_answer_was_lost_gets_its_receipt(
    client: FlaskClient, session: Session
) -> None:
    bank = admit(session, MEMBER)
    opened = payload(bank, account_ref="RESEND-0001")
    assert post_envelope(client, bank, envelope(bank, opened)).status_code == 201
    settled = {k: opened[k] for k in ("version", "institution", "account_ref")}
    settled.update(
        report_id=f"{opened['report_id']}-2",
        kind="settle",
        sequence=2,
        settlement={"type": "paid_in_full", "date": TODAY},
    )
    raw = envelope(bank, settled)
    first = post_envelope(client, bank, raw)
    assert first.status_code == 201
    again = post_envelope(client, bank, raw)  # the bank never saw the first answer
    assert again.status_code == 200, again.get_data(as_text=True)
    assert again.get_data() == first.get_data()
