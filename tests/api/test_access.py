"""Deny by default: every endpoint the app has, called as every role, answers as the matrix says.

Routes are enumerated from the URL map, so a new endpoint cannot be forgotten: it falls under
its blueprint's audience (``members*``, ``operator*``, ``me*``/``portal*``), and an endpoint of
an unknown audience fails the test until someone decides who may call it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from factories import Member, admit, make_operator, signed
from registry import members

# Anyone may call these; everything else needs a signature or a borrower session.
PUBLIC = {"public.Health", "public.RegistryKeys", "api-docs.openapi_json"}
PUBLIC_PREFIXES = ("public.",)
# Borrower pages that must work before signing in (the sign-in flow itself, static assets).
BORROWER_PUBLIC = re.compile(
    r"^(portal\.(signin\w*|verify|signout|language|static|index)|me_signin\.)"
)

ROLES = ("anonymous", "member_a", "member_b", "suspended", "operator")


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"sample-\1-0001", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, path))
    return found


def audience(endpoint: str) -> str:
    if endpoint in PUBLIC or endpoint.startswith(PUBLIC_PREFIXES):
        return "public"
    blueprint = endpoint.split(".", 1)[0]
    for name in ("members", "operator", "me", "portal"):
        if blueprint.startswith(name):
            return "borrower" if name in ("me", "portal") else name
    raise AssertionError(f"{endpoint}: no audience decided for this endpoint")


def allowed(status: int) -> bool:
    """Got past authentication and authorization (the sample ids may still be unknown)."""
    return status not in (401, 403) and status < 500


def expected(kind: str, endpoint: str, role: str, response: TestResponse) -> bool:
    status = response.status_code
    if kind == "public":
        return status < 400
    if kind == "members":
        return {
            "anonymous": status == 401,
            "member_a": allowed(status),
            "member_b": allowed(status),
            "suspended": status == 403,
            "operator": status == 401,
        }[role]
    if kind == "operator":
        return allowed(status) if role == "operator" else status == 401
    # Borrower audience: signatures of members or operators are no borrower session.
    if BORROWER_PUBLIC.match(endpoint):
        return status < 500
    if endpoint.startswith("portal."):
        # Pages send a stranger to the sign-in page; forms refuse first for the missing token.
        redirected = status in (302, 303) and response.location.endswith("/portal/")
        return redirected or status == 403
    return status == 401


@pytest.fixture
def callers(session: Session, client: FlaskClient) -> dict[str, Callable[[str, str], TestResponse]]:
    a, b, s = admit(session, "BANKA"), admit(session, "BANKB"), admit(session, "SUSP")
    members.suspend(session, "SUSP", members.get(session, "SUSP").created_at)
    session.commit()
    op = make_operator(session)

    def as_(who: Member | None) -> Callable[[str, str], TestResponse]:
        def call(method: str, path: str) -> TestResponse:
            if who is None:
                return client.open(path, method=method, data=b"{}")
            body = b"{}" if method in ("POST", "PUT", "PATCH") else b""
            return signed(client, who, method, path, body)

        return call

    return {
        "anonymous": as_(None),
        "member_a": as_(a),
        "member_b": as_(b),
        "suspended": as_(s),
        "operator": as_(op),
    }


def test_every_endpoint_answers_every_role_as_the_matrix_says(
    app: Flask, callers: dict[str, Callable[[str, str], TestResponse]]
) -> None:
    wrong = []
    for endpoint, method, path in _routes(app):
        kind = audience(endpoint)
        for role in ROLES:
            response = callers[role](method, path)
            if not expected(kind, endpoint, role, response):
                wrong.append(f"{role:9} {method:6} {path} ({kind}) -> {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_the_matrix_covers_each_audience(app: Flask) -> None:
    kinds = {audience(endpoint) for endpoint, _, _ in _routes(app)}
    assert {"public", "members", "operator"} <= kinds
    endpoints = {endpoint for endpoint, _, _ in _routes(app)}
    assert endpoints >= PUBLIC


def test_anonymous_member_routes_ask_for_a_signature(app: Flask, client: FlaskClient) -> None:
    for endpoint, method, path in _routes(app):
        if audience(endpoint) in ("members", "operator"):
            response = client.open(path, method=method, data=b"{}")
            assert response.get_json()["code"] == "request_missing_signature", endpoint
            assert response.headers["WWW-Authenticate"].startswith("Signature")
