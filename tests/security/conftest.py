"""Fixtures of the security suite: a caller of every audience, and a client that signs."""

from __future__ import annotations

import datetime as dt

import pytest
from borrowers import index_of, seed
from flask import Flask
from sqlalchemy.orm import Session
from werkzeug.test import Client

from factories import admit, make_operator, national_id
from registry import borrower_sessions
from security.support import BORROWER_SERIAL, Actors, SigningMiddleware


@pytest.fixture
def actors(app: Flask, session: Session) -> Actors:
    """Two members, an operator, and a borrower with one record and a way to get bearer tokens."""
    bank_a, bank_b = admit(session, "BANKA"), admit(session, "BANKB")
    operator = make_operator(session)
    material = app.extensions["registry"].material
    seeded = seed(
        session,
        material,
        bank_a,
        serial=BORROWER_SERIAL,
        phone="+8613912345678",
        name="欧阳锋",
        account_ref="LOAN-SEC-0042",
    )
    index = index_of(material, national_id(BORROWER_SERIAL))
    sessions = app.extensions["registry"].sessions

    def mint_token() -> str:
        """A fresh API session for the borrower, in its own committed transaction."""
        with sessions() as own:
            token = borrower_sessions.start(
                own,
                borrower_index=index,
                kind=borrower_sessions.API,
                timeouts=borrower_sessions.Timeouts(
                    idle=dt.timedelta(hours=1), absolute=dt.timedelta(hours=2)
                ),
                now=dt.datetime.now(dt.UTC),
            )
            own.commit()
        return token

    return Actors(
        bank_a=bank_a,
        bank_b=bank_b,
        operator=operator,
        borrower_token=mint_token(),
        borrower_id=national_id(BORROWER_SERIAL),
        seeded=seeded,
        mint_token=mint_token,
    )


@pytest.fixture
def signing_app(app: Flask, actors: Actors) -> SigningMiddleware:
    return SigningMiddleware(app, actors)


@pytest.fixture
def signed_client(signing_app: SigningMiddleware) -> Client:
    return Client(signing_app)
