"""Who is calling: RFC 9421 request signatures checked against member keys, nonces remembered.

The nonce table is shared by every worker and host (it is in the database), so a captured
request cannot be replayed against another worker within the replay window.

The nonce is written in the session's open transaction, so it commits with the request's own
work: one transaction (one commit, one fsync) per request instead of two. Authentication only
remembers it (:func:`expect_nonce`); the HTTP layer writes it (:func:`write_nonce`) right
after authentication, or at the first write of a view that prepares its work first. A writer
whose work is one statement may write it in that statement instead (:func:`member_nonce_guard`):
report intake does so on PostgreSQL.

A request whose work is rolled back (a refusal) would lose its nonce with it;
:func:`settle_nonce`, called once the request is answered, records it again in a transaction
of its own, so a refused request is consumed too and a captured copy of it cannot be replayed
later.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import (
    Insert,
    String,
    Table,
    bindparam,
    delete,
    event,
    insert,
    inspect,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction, joinedload, make_transient_to_detached

from crypto import httpsig
from crypto.errors import RequestSignatureError
from registry.db import begin_read, end_read
from registry.errors import Forbidden, NotAuthenticated
from registry.models import (
    Institution,
    MemberKey,
    MemberStatus,
    Operator,
    RequestNonce,
    UTCDateTime,
)
from registry.prepared import Prepared
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
_NONCES = cast(Table, RequestNonce.__table__)
_INSERT_NONCE = insert(_NONCES).values(
    keyid=bindparam("keyid"), nonce=bindparam("nonce"), expires_at=bindparam("expires_at")
)
# NOTE: a member's nonce is written only while its key is valid and its member active, checked
# in the same statement: this is what makes a revocation or suspension, committed by any
# worker or host, refuse the next request at once even when the key came from KnownKeys.
_INSERT_MEMBER_NONCE = (
    insert(_NONCES)
    .from_select(
        ["keyid", "nonce", "expires_at"],
        select(
            MemberKey.keyid,
            bindparam("nonce", type_=String()),
            bindparam("expires_at", type_=UTCDateTime()),
        )
        .join(Institution, Institution.id == MemberKey.institution_id)
        .where(
            MemberKey.keyid == bindparam("keyid"),
            MemberKey.not_before <= bindparam("now"),
            or_(MemberKey.not_after.is_(None), MemberKey.not_after > bindparam("now")),
            or_(MemberKey.revoked_at.is_(None), MemberKey.revoked_at > bindparam("now")),
            Institution.status == MemberStatus.ACTIVE.value,
        ),
    )
    .execution_options(preserve_rowcount=True)
)
_GUARD_MEMBER_NONCE = _INSERT_MEMBER_NONCE.returning(_NONCES.c.nonce)
_FRESH_MEMBER_KEY = _MEMBER_KEY.execution_options(populate_existing=True)
# Every signed request writes its nonce: on the driver's connection (registry.prepared).
_WRITE_NONCE = Prepared(_INSERT_NONCE)
_WRITE_MEMBER_NONCE = Prepared(_INSERT_MEMBER_NONCE)


def _columns(row: object) -> dict[str, object]:
    """The column values of a loaded ORM object (what a copy of it needs)."""
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


class KnownKeys:
    """Member keys this worker has found valid, so that a signed request needs no key look-up.

    A hint, never the authority: a member's nonce is written by ``_INSERT_MEMBER_NONCE``, which
    writes nothing unless the key is still valid and its member active, and the request is
    then refused from a fresh read (:func:`write_nonce`). Only keys found valid are kept, and a
    kept key that is no longer valid by its own dates is read again, so every refusal names
    what the database says now. Keys are immutable where it matters (the key id is derived from
    the public key), so a cached public key is never wrong, only possibly revoked.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self._keys: dict[str, MemberKey] = {}

    def get(self, keyid: str, now: dt.datetime) -> MemberKey | None:
        """A detached copy of the key (with its member), if kept and valid at ``now``."""
        key = self._keys.get(keyid)
        if key is not None and key.state_at(now) != "valid":
            self._keys.pop(keyid, None)  # (pop: safe should workers ever run threads)
            return None
        return key

    def keep(self, key: MemberKey) -> None:
        """Keep a copy of ``key`` and its member that no session ever holds (or expires)."""
        if len(self._keys) >= self.LIMIT:
            self._keys.clear()
        member = Institution(**_columns(key.institution))
        copy = MemberKey(**_columns(key), institution=member)
        make_transient_to_detached(member)
        make_transient_to_detached(copy)
        self._keys[key.keyid] = copy

    def forget(self, keyid: str) -> None:
        self._keys.pop(keyid, None)


class Caller:
    """The authenticated member and the key it signed with.

    :attr:`key` and :attr:`institution` belong to the request's session. A key this worker
    remembered (:class:`KnownKeys`) is a detached copy, merged into the session only when
    either is first asked for; :attr:`signing_key` and :attr:`member` hand out the copy as it
    is, for code that only reads their columns (the report view: intake reads the member's
    id and code). Merging costs about as much as the statement that writes the nonce.
    """

    def __init__(self, session: Session, key: MemberKey, *, attached: bool) -> None:
        self._session = session
        self._given = key
        self._attached = key if attached else None

    @property
    def key(self) -> MemberKey:
        if self._attached is None:
            self._attached = self._session.merge(self._given, load=False)
        return self._attached

    @property
    def institution(self) -> Institution:
        return self.key.institution

    @property
    def signing_key(self) -> MemberKey:
        """The key, read-only: perhaps a copy no session holds."""
        return self._given

    @property
    def member(self) -> Institution:
        """The member, read-only: perhaps a copy no session holds (columns only)."""
        return self._given.institution


def authenticate(
    session: Session,
    settings: Settings,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime,
    known: KnownKeys | None = None,
    reading: bool = False,
) -> Caller:
    """Verify the request signature, the key's state and the member's state.

    The nonce is left for :func:`write_nonce` (the caller decides when the request starts
    writing; see :func:`expect_nonce`), which also confirms the key and member are still
    valid. A key in ``known`` needs no look-up; with ``reading``, a look-up is made in a
    reader's transaction (``registry.db.begin_read``), ended before this returns.
    """
    keys: dict[str, MemberKey] = {}
    cached: set[str] = set()

    def lookup(keyid: str) -> bytes | None:
        kept = known.get(keyid, now) if known is not None else None
        if kept is not None:
            keys[keyid] = kept
            cached.add(keyid)
            return kept.public_key
        if reading:
            begin_read(session)
        # One statement for the key and its member (the member is needed right after).
        key = session.scalar(_MEMBER_KEY, {"keyid": keyid})
        if key is None:
            return None
        keys[keyid] = key
        return key.public_key

    verified = _verify(settings, lookup, method, url, headers, body, now)
    if reading and verified.keyid not in cached:
        end_read(session)
    key = keys[verified.keyid]
    _check_member_key(key, now)
    if known is not None and verified.keyid not in cached:
        known.keep(key)
    expect_nonce(session, settings, verified, now, member_key=True, known=known)
    # A copy from KnownKeys joins the session (as if loaded, no SQL) when a view asks for it.
    return Caller(session, key, attached=verified.keyid not in cached)


def _check_member_key(key: MemberKey, now: dt.datetime) -> None:
    """Refuse a key that is not valid at ``now`` or whose member is suspended."""
    state = key.state_at(now)
    if state != "valid":
        raise NotAuthenticated(f"the signing key is {state.replace('_', ' ')}", code=f"key_{state}")
    if not key.institution.is_active:
        raise Forbidden("the member is suspended", code="member_suspended")


def confirm_member_key(session: Session, keyid: str, now: dt.datetime) -> None:
    """Read the key and its member afresh and refuse what is no longer valid."""
    key = session.scalar(_FRESH_MEMBER_KEY, {"keyid": keyid})
    if key is None:
        raise NotAuthenticated("the keyid is not a registered key", code="request_unknown_key")
    _check_member_key(key, now)


def confirm_expected(session: Session) -> None:
    """Before answering a refusal to a request whose nonce is not written yet: is the caller
    still who it was? A key taken from :class:`KnownKeys` is read afresh here, so a revoked
    key or suspended member gets that refusal, not an answer about its request."""
    expected: ExpectedNonce | None = session.info.get(_EXPECTED)
    if expected is None or not expected.member_key or expected.confirmed:
        return
    if expected.known is not None:
        expected.known.forget(expected.keyid)
    begin_read(session)
    confirm_member_key(session, expected.keyid, expected.now)
    session.info[_EXPECTED] = replace(expected, confirmed=True)


def authenticate_operator(
    session: Session,
    settings: Settings,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime,
    reading: bool = False,
) -> Operator:
    """The same signature profile as members, checked against the operators' keys only.

    A member key never authenticates an operator request: the look-up does not see them.
    With ``reading``, the look-up is made in a reader's transaction, ended before this returns.
    """
    found: dict[str, Operator] = {}

    def lookup(keyid: str) -> bytes | None:
        if reading:
            begin_read(session)
        operator = session.scalar(_OPERATOR_KEY, {"keyid": keyid})
        if operator is None:
            return None
        found[keyid] = operator
        return operator.public_key

    verified = _verify(settings, lookup, method, url, headers, body, now)
    if reading:
        end_read(session)
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
    member_key: bool = False
    """A member's key: written only while the key is valid and the member active."""
    known: KnownKeys | None = None
    confirmed: bool = False
    """Read afresh and found valid by :func:`confirm_expected` (once is enough)."""


def expect_nonce(
    session: Session,
    settings: Settings,
    verified: httpsig.VerifiedRequest,
    now: dt.datetime,
    *,
    member_key: bool = False,
    known: KnownKeys | None = None,
) -> None:
    """Remember the request's nonce; :func:`write_nonce` writes it, or :func:`settle_nonce`.

    Writing it is the request's first write. Keeping it apart from authentication lets a
    request do its CPU work (verifying and validating a report) before it writes anything,
    which on SQLite means before it takes the database's one write lock.
    """
    window = settings.replay_window_seconds + settings.clock_skew_seconds
    expires = dt.datetime.fromtimestamp(verified.created, dt.UTC) + dt.timedelta(seconds=window)
    session.info[_EXPECTED] = ExpectedNonce(
        verified.keyid, verified.nonce, expires, now, member_key, known
    )


def pending_member_nonce(session: Session) -> ExpectedNonce | None:
    """The member nonce this request has still to write, if any: for a writer that writes it
    in its own statement (:func:`member_nonce_guard`) instead of :func:`write_nonce`."""
    expected: ExpectedNonce | None = session.info.get(_EXPECTED)
    return expected if expected is not None and expected.member_key else None


def member_nonce_guard(expected: ExpectedNonce) -> tuple[Insert, dict[str, Any]]:
    """The member nonce's INSERT with RETURNING, and its parameters: for one statement that
    writes the request's work only if this wrote a row, so a replay (a duplicate, raised as
    ``IntegrityError``), a revoked key or a suspended member writes nothing at all."""
    return _GUARD_MEMBER_NONCE, {
        "keyid": expected.keyid,
        "nonce": expected.nonce,
        "expires_at": expected.expires_at,
        "now": expected.now,
    }


def nonce_written_with(session: Session, expected: ExpectedNonce) -> None:
    """``expected`` was written and committed by the statement of :func:`member_nonce_guard`:
    nothing is left to write or settle for it."""
    if session.info.get(_EXPECTED) is expected:
        del session.info[_EXPECTED]
    transaction = session.get_transaction()
    assert transaction is not None
    session.info[_NONCE] = NonceUse(
        expected.keyid, expected.nonce, expected.expires_at, transaction, durable=True
    )
    if purge_due():
        purge_nonces(session, expected.now)


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
    (nothing else has been done in it yet). A member's nonce that is not written because its
    key or member is no longer valid is refused from a fresh read of both.
    """
    values = {"keyid": expected.keyid, "nonce": expected.nonce, "expires_at": expected.expires_at}
    try:
        if expected.member_key:
            written = _WRITE_MEMBER_NONCE.execute(
                session.connection(), {**values, "now": expected.now}
            )
            if written.rowcount != 1:
                if expected.known is not None:
                    expected.known.forget(expected.keyid)
                confirm_member_key(session, expected.keyid, expected.now)
                # NOTE: valid when read again, so the member was reinstated in between (a key
                # is never un-revoked): the statement saw it suspended, and that is the answer.
                raise Forbidden("the member is suspended", code="member_suspended")
        else:
            _WRITE_NONCE.execute(session.connection(), values)
    except IntegrityError:
        session.rollback()
        raise NotAuthenticated(
            "this request signature was already used (replay)", code="request_replayed"
        ) from None
    except BaseException:
        session.rollback()
        raise
    transaction = session.get_transaction()
    assert transaction is not None  # the insert has just begun it
    session.info[_NONCE] = NonceUse(
        expected.keyid, expected.nonce, expected.expires_at, transaction
    )
    if purge_due():
        purge_nonces(session, expected.now)


def purge_due() -> bool:
    """Whether this request also purges expired nonces: one in a hundred, so the table stays
    small without a request paying for it each time."""
    return secrets.randbelow(100) == 0


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
