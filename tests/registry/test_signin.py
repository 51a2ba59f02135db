"""Sign-in codes, enrolment, rate limits and borrower sessions, on the domain alone."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from borrowers import index_of, seed
from click.testing import CliRunner
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from factories import Member, admit, national_id
from registry import borrower_sessions, notify, signin, signin_limits
from registry.borrower_sessions import Timeouts
from registry.cli import cli
from registry.errors import RateLimited, ValidationFailed
from registry.models import BorrowerEnrolment, BorrowerSession, SigninCode, SigninCounter
from registry.secrets import KeyMaterial, load_key_material
from registry.settings import Settings

NOW = dt.datetime.now(dt.UTC)
ALICE = national_id(1)
TIMEOUTS = Timeouts(idle=dt.timedelta(minutes=15), absolute=dt.timedelta(hours=8))


@pytest.fixture
def material(settings: Settings) -> KeyMaterial:
    return load_key_material(settings)


@pytest.fixture
def bank(session: Session) -> Member:
    return admit(session, "BANKA")


def code_sent(session: Session, material: KeyMaterial, to: str | None = "+8613800138000") -> str:
    found = [m for m in notify.outbox(session, material, NOW) if m.to == to]
    return found[-1].params["code"]


def ask(session: Session, material: KeyMaterial, nid: str = ALICE, client: str = "c1") -> None:
    signin.request_code(session, material, national_id=nid, client=client, now=NOW)


def check(
    session: Session, material: KeyMaterial, code: str, nid: str = ALICE, when: dt.datetime = NOW
) -> bytes | None:
    return signin.verify(session, material, national_id=nid, code=code, client="c1", now=when)


def test_codes_are_stored_hashed_and_bound_to_the_person(
    session: Session, material: KeyMaterial, bank: Member
) -> None:
    seed(session, material, bank)
    ask(session, material)
    code = code_sent(session, material)
    assert re.fullmatch(r"\d{6}", code)
    [row] = session.scalars(select(SigninCode))
    assert code.encode() not in row.code_hash and len(row.code_hash) == 32
    assert check(session, material, code, nid=national_id(2)) is None
    assert check(session, material, code) == index_of(material, ALICE)
    assert check(session, material, code) is None, "a code works once"


def test_an_unknown_id_costs_the_same_work_and_gets_no_message_out(
    session: Session, material: KeyMaterial
) -> None:
    ask(session, material, nid=national_id(7))
    assert session.scalar(select(func.count()).select_from(SigninCode)) == 1
    [message] = notify.outbox(session, material, NOW)
    assert message.to is None and message.state == notify.NO_DESTINATION


def test_wrong_guesses_count_against_every_live_code(
    session: Session, material: KeyMaterial, bank: Member
) -> None:
    seed(session, material, bank)
    ask(session, material)
    first = code_sent(session, material)
    ask(session, material)
    second = code_sent(session, material)
    wrong = next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in (first, second))
    for _ in range(signin.MAX_ATTEMPTS):
        assert check(session, material, wrong) is None
    assert check(session, material, first) is None
    assert check(session, material, second) is None


def test_a_code_expires(session: Session, material: KeyMaterial, bank: Member) -> None:
    seed(session, material, bank)
    ask(session, material)
    code = code_sent(session, material)
    later = NOW + signin.CODE_TTL
    assert check(session, material, code, when=later) is None


def test_a_malformed_id_is_refused_by_rule(session: Session, material: KeyMaterial) -> None:
    with pytest.raises(ValidationFailed) as refused:
        ask(session, material, nid="110101199003070")
    assert [e.rule for e in refused.value.errors] == ["gb11643_length"]


def test_requests_are_limited_per_id_and_per_client(
    session: Session, material: KeyMaterial
) -> None:
    for _ in range(signin_limits.CODES_PER_ID.maximum):
        ask(session, material, client="c-alice")
    with pytest.raises(RateLimited) as limited:
        ask(session, material, client="another")
    assert 0 < limited.value.retry_after <= 3600
    session.rollback()
    for serial in range(10, 10 + signin_limits.CODES_PER_CLIENT.maximum):
        ask(session, material, nid=national_id(serial), client="c-many")
    with pytest.raises(RateLimited):
        ask(session, material, nid=national_id(99), client="c-many")


def test_limits_are_shared_by_workers_and_keep_no_ids_or_addresses(
    engine: Engine, material: KeyMaterial
) -> None:
    """Two sessions (two workers) count in the same rows; the rows hold keyed hashes only."""
    limit = signin_limits.VERIFICATIONS_PER_CLIENT
    for n in range(limit.maximum):
        with Session(engine) as worker, worker.begin():
            signin_limits.hit(worker, material, limit, "203.0.113.7", NOW + dt.timedelta(seconds=n))
    with Session(engine) as worker, worker.begin(), pytest.raises(RateLimited):
        signin_limits.hit(worker, material, limit, "203.0.113.7", NOW + dt.timedelta(minutes=1))
    with Session(engine) as worker, worker.begin():
        # A new window starts after the old one ends.
        signin_limits.hit(worker, material, limit, "203.0.113.7", NOW + dt.timedelta(hours=1))
        [row] = worker.scalars(select(SigninCounter))
        assert b"203.0.113.7" not in row.subject and row.count == 1


def test_enrolment_gives_a_code_and_a_phone(
    session: Session, material: KeyMaterial, bank: Member
) -> None:
    seed(session, material, bank, phone="+8613900000001")
    code = signin.enrol(session, material, national_id=ALICE, phone="+8613700000009", now=NOW)
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    [enrolment] = session.scalars(select(BorrowerEnrolment))
    assert enrolment.phone_ct is not None and b"13700000009" not in enrolment.phone_ct
    # Later codes go to the phone given in person, not the one a member reported.
    ask(session, material)
    assert code_sent(session, material, to="+8613700000009")
    # The enrolment code works, in any case and with or without hyphens, for three days.
    later = NOW + dt.timedelta(days=2)
    assert check(session, material, code.replace("-", "").lower(), when=later) is not None
    with pytest.raises(ValidationFailed):
        signin.enrol(session, material, national_id=ALICE, phone="call me", now=NOW)


def test_purge_forgets_spent_and_expired_codes_and_old_counters(
    session: Session, material: KeyMaterial
) -> None:
    ask(session, material)
    signin.enrol(session, material, national_id=ALICE, phone=None, now=NOW)
    assert signin.purge(session, NOW + dt.timedelta(minutes=11)) == 1  # the SMS code
    assert session.scalar(select(func.count()).select_from(SigninCode)) == 1
    # Then the enrolment code, and the two counters whose hour ended.
    assert signin.purge(session, NOW + signin.ENROLMENT_TTL) == 1 + 2
    assert session.scalar(select(func.count()).select_from(SigninCounter)) == 0


def test_sessions_idle_out_and_time_out(session: Session) -> None:
    who = b"\x01" * 32
    token = borrower_sessions.start(
        session, borrower_index=who, kind=borrower_sessions.API, timeouts=TIMEOUTS, now=NOW
    )
    [row] = session.scalars(select(BorrowerSession))
    assert token.encode() not in row.token_hash

    def resume(at: dt.datetime, kind: str = borrower_sessions.API) -> BorrowerSession | None:
        return borrower_sessions.resume(session, token=token, kind=kind, timeouts=TIMEOUTS, now=at)

    assert resume(NOW, borrower_sessions.BROWSER) is None, "an API token is no cookie"
    when = NOW
    while when + dt.timedelta(minutes=14) < NOW + TIMEOUTS.absolute:
        when += dt.timedelta(minutes=14)
        assert resume(when) is not None
    assert resume(NOW + TIMEOUTS.absolute) is None, "absolute timeout despite activity"
    assert session.scalar(select(func.count()).select_from(BorrowerSession)) == 0

    token = borrower_sessions.start(
        session, borrower_index=who, kind=borrower_sessions.API, timeouts=TIMEOUTS, now=NOW
    )
    assert resume(NOW + TIMEOUTS.idle) is None, "idle timeout"


def test_csrf_tokens_belong_to_their_session() -> None:
    one, two = "token-one", "token-two"
    assert borrower_sessions.csrf_ok(one, borrower_sessions.csrf_token(one))
    assert not borrower_sessions.csrf_ok(one, borrower_sessions.csrf_token(two))
    assert not borrower_sessions.csrf_ok(one, None)
    assert not borrower_sessions.csrf_ok(one, "")


def test_the_cli_enrols_and_the_code_signs_in(
    session: Session, material: KeyMaterial, settings: Settings, database_url: str, engine: Engine
) -> None:
    env = {
        "REGISTRY_INSTANCE": str(Path(settings.instance_path)),
        "REGISTRY_DATABASE_URL": database_url,
    }
    result = CliRunner().invoke(cli, ["enrol", ALICE], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    code = result.output.strip()
    assert ALICE not in result.output
    with Session(engine) as other, other.begin():
        assert check(other, material, code) == index_of(material, ALICE)
    prompted = CliRunner().invoke(cli, ["enrol", "-"], env=env, input=f"{ALICE}\n")
    assert prompted.exit_code == 0 and ALICE not in prompted.output
    refused = CliRunner().invoke(cli, ["enrol", "123"], env=env)
    assert refused.exit_code != 0 and "national ID is not valid" in refused.output


def test_the_sweep_forgets_dead_codes_sessions_and_messages(
    session: Session, material: KeyMaterial, engine: Engine, settings: Settings
) -> None:
    from sqlalchemy.orm import sessionmaker

    from registry import portal_housekeeping
    from registry.models import Notification

    ask(session, material)
    borrower_sessions.start(
        session,
        borrower_index=b"\x02" * 32,
        kind=borrower_sessions.BROWSER,
        timeouts=TIMEOUTS,
        now=NOW,
    )
    session.commit()
    sessions = sessionmaker(bind=engine)
    assert str(portal_housekeeping.sweep(sessions, settings, NOW)).count("=0") == 3
    later = NOW + dt.timedelta(hours=2)
    chores = portal_housekeeping.sweep(sessions, settings, later)
    assert (chores.codes_and_counters, chores.sessions, chores.notifications) == (1 + 2, 1, 1)
    for model in (SigninCode, SigninCounter, BorrowerSession, Notification):
        assert session.scalar(select(func.count()).select_from(model)) == 0
