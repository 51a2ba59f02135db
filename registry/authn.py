"""Who is calling: RFC 9421 request signatures checked against member keys, nonces remembered.

The nonce table is shared by every worker and host (it is in the database), so a captured
request cannot be replayed against another worker within the replay window.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crypto import httpsig
from crypto.errors import RequestSignatureError
from registry.errors import Forbidden, NotAuthenticated
from registry.models import Institution, MemberKey, Operator, RequestNonce
from registry.settings import Settings


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
    """Verify the request signature, the key's state, the member's state and the nonce."""
    keys: dict[str, MemberKey] = {}

    def lookup(keyid: str) -> bytes | None:
        key = session.scalar(select(MemberKey).where(MemberKey.keyid == keyid))
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
    _consume_nonce(session, settings, verified, now)
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
        operator = session.scalar(select(Operator).where(Operator.keyid == keyid))
        if operator is None:
            return None
        found[keyid] = operator
        return operator.public_key

    verified = _verify(settings, lookup, method, url, headers, body, now)
    operator = found[verified.keyid]
    if operator.revoked_at is not None and now >= operator.revoked_at:
        raise NotAuthenticated("the signing key is revoked", code="key_revoked")
    _consume_nonce(session, settings, verified, now)
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


def _consume_nonce(
    session: Session, settings: Settings, verified: httpsig.VerifiedRequest, now: dt.datetime
) -> None:
    window = settings.replay_window_seconds + settings.clock_skew_seconds
    expires = dt.datetime.fromtimestamp(verified.created, dt.UTC) + dt.timedelta(seconds=window)
    try:
        with session.begin_nested():
            session.add(
                RequestNonce(keyid=verified.keyid, nonce=verified.nonce, expires_at=expires)
            )
    except IntegrityError:
        raise NotAuthenticated(
            "this request signature was already used (replay)", code="request_replayed"
        ) from None
    if secrets.randbelow(100) == 0:
        purge_nonces(session, now)


def purge_nonces(session: Session, now: dt.datetime) -> int:
    """Forget nonces whose replay window has passed; their requests are refused as stale anyway."""
    result = session.execute(delete(RequestNonce).where(RequestNonce.expires_at < now))
    return int(getattr(result, "rowcount", 0) or 0)
