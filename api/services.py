"""What the views need from the domain, built once per app and kept in ``app.extensions``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from registry import authn
from registry.inquiries import Inquiries
from registry.intake import Intake
from registry.policy import Policy
from registry.secrets import KeyMaterial
from registry.settings import Settings

EXTENSION = "registry"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    material: KeyMaterial
    policy: Policy
    intake: Intake
    inquiries: Inquiries
    clock: Callable[[], dt.datetime] = utc_now
    known_keys: authn.KnownKeys = field(default_factory=authn.KnownKeys)
    """This worker's member keys found valid (a hint; see registry.authn.KnownKeys)."""


def services() -> Services:
    svc: Services = current_app.extensions[EXTENSION]
    return svc


def request_session() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db" not in g:
        g.db = services().sessions()
    session: Session = g.db
    return session


def db() -> Session:
    """The request's session, for a view: the signed request's nonce is written first.

    A replayed request is refused here (401), before the view reads or writes anything.
    """
    session = request_session()
    authn.write_nonce(session)
    return session


def close_db(_exc: BaseException | None = None) -> None:
    """Close the request's session; first record a nonce the request left uncommitted.

    ``after_request`` normally did that already; this covers a request whose exception
    skipped it (an exception propagated by the test client, for one).
    """
    session: Session | None = g.pop("db", None)
    if session is None:
        return
    try:
        if authn.nonce_pending(session):
            authn.settle_nonce(session)
    finally:
        session.close()
