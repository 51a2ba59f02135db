"""Who is calling: RFC 9421 request signatures checked against member keys, nonces remembered.

The nonce table is shared by every worker and host (it is in the database), so a captured
request cannot be replayed against another worker within the replay window.

The nonce is written in the session's open transaction, so it commits with the request's own
work: one transaction (one commit, one fsync) per request instead of two. Authentication only
remembers it (:func:`expect_nonce`); the HTTP layer writes it (:func:`write_nonce`) right
after authentication, or at the first write of a view that prepares its work first.

A request whose work is rolled back (a refusal) would lose its nonce with it;
:func:`settle_nonce`, called once the request is answered, records it again in a transaction
of its own, so a refused request is consumed too and a captured copy of it cannot be replayed
later.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, delete, event, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction, joinedload

from crypto import httpsig
from crypto.errors import RequestSignatureError
from registry.errors import Forbidden, NotAuthenticated
from registry.models import Institution, MemberKey, Operator, RequestNonce
from registry.settings import Settings

# Built once: every signed request runs these two, and building them costs about as much as
# running them.
_MEMBER_KEY = (
    select(MemberKey)
    .options(joinedload(MemberKey.institution))
    .where(MemberKey.keyid == bindparam("keyid"))
)
_OPERATOR_KEY = select(Operator).where(Operator.keyid == bindparam("keyid"))
# NOTE: on the table, not the entity: an insert of an ORM entity goes through the ORM's bulk
# machinery, several times the cost of the statement itself.
_INSERT_NONCE = insert(cast(Table, RequestNonce.__table__)).values(
    keyid=bindparam("keyid"), nonce=bindparam("nonce"), expires_at=bindparam("expires_at")
)


@dataclass(frozen=True)
class Caller:
    institution: Institution
    key: MemberKey


def authenticate(
    session: Session,
    settings: Settings,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime,
) -> Caller:
    """Verify the request signature, the key's state and the member's state.

    The nonce is left for :func:`write_nonce` (the caller decides when the request starts
    writing; see :func:`expect_nonce`).
    """
    keys: dict[str, MemberKey] = {}

    def lookup(keyid: str) -> bytes | None:
        # One statement for the key and its member (the member is needed right after).
        key = session.scalar(_MEMBER_KEY, {"keyid": keyid})
        if key is None:
            return None
        keys[keyid] = key
        return key.public_key

    verified = _verify(settings, lookup, method, url, headers, body, now)
    key = keys[verified.keyid]
    state = key.state_at(now)
    if state != "valid":
        raise NotAuthenticated(f"the signing key is {state.replace('_', ' ')}", code=f"key_{state}")
    member = key.institution
    if not member.is_active:
        raise Forbidden("the member is suspended", code="member_suspended")
    expect_nonce(session, settings, verified, now)
    return Caller(institution=member, key=key)


def authenticate_operator(
    session: Session,
    settings: Settings,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime,
) -> Operator:
    """The same signature profile as members, checked against the operators' keys only.

    A member key never authenticates an operator request: the look-up does not see them.
    """
    found: dict[str, Operator] = {}

    def lookup(keyid: str) -> bytes | None:
        operator = session.scalar(_OPERATOR_KEY, {"keyid": keyid})
        if operator is None:
            return None
        found[keyid] = operator
        return operator.public_key

    verified = _verify(settings, lookup, method, url, headers, body, now)
    operator = found[verified.keyid]
    if operator.revoked_at is not None and now >= operator.revoked_at:
        raise NotAuthenticated("the signing key is revoked", code="key_revoked")
    expect_nonce(session, settings, verified, now)
    return operator


def _verify(
    settings: Settings,
    lookup: Callable[[str], bytes | None],
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime,
) -> httpsig.VerifiedRequest:
    try:
        return httpsig.verify_request(
            method=method,
            url=url,
            headers=headers,
            body=body,
            key_lookup=lookup,
            now=int(now.timestamp()),
            max_age=settings.replay_window_seconds,
            max_skew=settings.clock_skew_seconds,
        )
    except RequestSignatureError as exc:
        raise NotAuthenticated(exc.detail, code=f"request_{exc.reason}") from None


_NONCE = "registry.authn.nonce"
_EXPECTED = "registry.authn.expected_nonce"


@dataclass(frozen=True)
class ExpectedNonce:
    """A verified request's nonce that is still to be written (by :func:`write_nonce`)."""

    keyid: str
    nonce: str
    expires_at: dt.datetime
    now: dt.datetime


def expect_nonce(
    session: Session, settings: Settings, verified: httpsig.VerifiedRequest, now: dt.datetime
) -> None:
    """Remember the request's nonce; :func:`write_nonce` writes it, or :func:`settle_nonce`.

    Writing it is the request's first write. Keeping it apart from authentication lets a
    request do its CPU work (verifying and validating a report) before it writes anything,
    which on SQLite means before it takes the database's one write lock.
    """
    window = settings.replay_window_seconds + settings.clock_skew_seconds
    expires = dt.datetime.fromtimestamp(verified.created, dt.UTC) + dt.timedelta(seconds=window)
    session.info[_EXPECTED] = ExpectedNonce(verified.keyid, verified.nonce, expires, now)


def write_nonce(session: Session) -> None:
    """Write the expected nonce, if any, in the open transaction; a replay is refused here."""
    expected: ExpectedNonce | None = session.info.pop(_EXPECTED, None)
    if expected is not None:
        _insert_nonce(session, expected)


@dataclass
class NonceUse:
    """A nonce written in ``transaction``; ``durable`` once that transaction has committed."""

    keyid: str
    nonce: str
    expires_at: dt.datetime
    transaction: SessionTransaction
    durable: bool = False


def _insert_nonce(session: Session, expected: ExpectedNonce) -> None:
    """Write the nonce in the open transaction (the first statement of the request's work).

    No savepoint: a duplicate is a replay, and the whole transaction is then rolled back
    (nothing else has been done in it yet).
    """
    try:
        session.execute(
            _INSERT_NONCE,
            {"keyid": expected.keyid, "nonce": expected.nonce, "expires_at": expected.expires_at},
        )
    except IntegrityError:
        session.rollback()
        raise NotAuthenticated(
            "this request signature was already used (replay)", code="request_replayed"
        ) from None
    transaction = session.get_transaction()
    assert transaction is not None  # the insert has just begun it
    session.info[_NONCE] = NonceUse(
        expected.keyid, expected.nonce, expected.expires_at, transaction
    )
    if secrets.randbelow(100) == 0:
        purge_nonces(session, expected.now)


@event.listens_for(Session, "after_commit")
def _nonce_committed(session: Session) -> None:
    """The nonce is consumed for good once the transaction that wrote it commits."""
    use: NonceUse | None = session.info.get(_NONCE)
    if (
        use is not None
        and session.get_nested_transaction() is None
        and session.get_transaction() is use.transaction
    ):
        use.durable = True


def nonce_pending(session: Session) -> bool:
    """True while this session's request nonce has not been committed (or not yet written)."""
    if _EXPECTED in session.info:
        return True
    use: NonceUse | None = session.info.get(_NONCE)
    return use is not None and not use.durable


def settle_nonce(session: Session) -> None:
    """Make sure the request's nonce is committed, whatever became of the request's work.

    Called once the request is answered. When the work was rolled back (a refusal) or never
    committed (a read), whatever is still open is rolled back and the nonce is recorded in a
    transaction of its own. A duplicate here means a concurrent copy of the request recorded
    it in between: the nonce is consumed either way.
    """
    expected: ExpectedNonce | None = session.info.pop(_EXPECTED, None)
    use: NonceUse | None = session.info.pop(_NONCE, None)
    if expected is not None:
        keyid, nonce, expires_at = expected.keyid, expected.nonce, expected.expires_at
    elif use is not None and not use.durable:
        keyid, nonce, expires_at = use.keyid, use.nonce, use.expires_at
    else:
        return
    session.rollback()
    try:
        session.execute(_INSERT_NONCE, {"keyid": keyid, "nonce": nonce, "expires_at": expires_at})
        session.commit()
    except IntegrityError:
        session.rollback()


def purge_nonces(session: Session, now: dt.datetime) -> int:
    """Forget nonces whose replay window has passed; their requests are refused as stale anyway."""
    result = session.execute(delete(RequestNonce).where(RequestNonce.expires_at < now))
    return int(getattr(result, "rowcount", 0) or 0)
