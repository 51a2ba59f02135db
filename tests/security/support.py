"""What the security and reliability suites share: callers, a signing WSGI wrapper, snapshots.

The wrapper signs each request over exactly what reaches the app (method, URL, body bytes), the
way a member's client does, so generated and hostile requests get past authentication and their
bodies are really parsed. Which credential a request carries follows its blueprint's audience,
as in ``tests/api/test_access.py``: members sign with a member key, operators with an operator
key, the borrower API gets a bearer token of a fresh session; public routes and portal pages
get nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import pickle
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from flask import Flask
from sqlalchemy import Engine, Table
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from crypto import httpsig
from factories import Member
from registry.models import Base

BORROWER_SERIAL = 7
# An environ key holding a function applied after signing: a test's way to damage credentials.
TAMPER = "tests.tamper_after_signing"


@dataclass
class Actors:
    """One caller per audience, with the personal data they were seeded with."""

    bank_a: Member
    bank_b: Member
    operator: Member
    borrower_token: str
    borrower_id: str
    seeded: dict[str, Any]
    mint_token: Callable[[], str]


def audience(endpoint: str | None) -> str:
    """The audience of a Flask endpoint, from its blueprint's name (deny by default)."""
    blueprint = (endpoint or "").split(".", 1)[0]
    if blueprint.startswith("members"):
        return "members"
    if blueprint.startswith("operator"):
        return "operator"
    if blueprint.startswith("me_signin"):
        return "public"
    if blueprint.startswith(("me", "portal")):
        return "borrower"
    return "public"


class SigningMiddleware:
    """Adds the credentials of the route's audience to every request, signing its exact bytes."""

    def __init__(self, app: Flask, actors: Actors) -> None:
        self.app = app
        self.actors = actors
        self.member = actors.bank_a

    def endpoint_of(self, environ: dict[str, Any]) -> str | None:
        try:
            endpoint, _ = self.app.url_map.bind_to_environ(environ).match(
                method=environ.get("REQUEST_METHOD", "GET")
            )
        except HTTPException:
            return None
        return str(endpoint)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        body = request.get_data(cache=True)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        endpoint = self.endpoint_of(environ)
        who = audience(endpoint)
        if who == "borrower" and not str(endpoint).startswith("portal."):
            # A fresh session per request, as a fresh signature for members: a generated
            # sign-out (or a generated Authorization header) cannot starve the next request.
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.actors.mint_token()}"
        elif who in ("members", "operator"):
            signer = self.actors.operator if who == "operator" else self.member
            headers = httpsig.sign_request(
                method=request.method,
                url=request.url,
                headers={},
                body=body,
                key=signer.key,
                keyid=signer.keyid,
                created=int(time.time()),
                nonce=secrets.token_urlsafe(24),
            )
            for name, value in headers.items():
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        tamper = environ.pop(TAMPER, None)
        if tamper is not None:
            tamper(environ)
        return self.app(environ, start_response)


def _select_all(table: Table) -> str:
    order = ", ".join(c.name for c in (table.primary_key.columns or table.columns))
    return f"SELECT * FROM {table.name} ORDER BY {order}"


def _postgres_digests() -> str:
    """One statement that hashes every table on the server: one round trip per snapshot."""
    parts = [
        f"(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table.name} t)"
        for table in Base.metadata.sorted_tables
    ]
    return "SELECT " + ", ".join(parts)


def snapshot(engine: Engine) -> dict[str, str]:
    """A digest of every row of every table: equal digests, equal data.

    Fast enough to take around every single request: on PostgreSQL the server hashes each
    table's rows as text; on SQLite the raw rows are hashed here.
    """
    names = [table.name for table in Base.metadata.sorted_tables]
    with engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
        if engine.dialect.name == "postgresql":
            digests = list(conn.exec_driver_sql(_postgres_digests()).one())
        else:
            digests = [
                hashlib.sha256(
                    pickle.dumps([tuple(r) for r in conn.exec_driver_sql(_select_all(t)).all()])
                ).hexdigest()
                for t in Base.metadata.sorted_tables
            ]
        conn.rollback()
    return dict(zip(names, digests, strict=True))


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after.get(name)}


# --- looking for leaks -------------------------------------------------------------------------


def raw_private(key: Ed25519PrivateKey) -> bytes:
    """The 32 secret bytes of an Ed25519 key, to look for them in text."""
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def secret_forms(secret: bytes) -> set[str]:
    """How a secret's bytes would look in text: base64 (both alphabets) and hex."""
    b64 = base64.b64encode(secret).decode().rstrip("=")
    return {b64, base64.urlsafe_b64encode(secret).decode().rstrip("="), secret.hex()}


def instance_secrets(folder: Path) -> set[str]:
    """Every secret of an instance folder, as the bytes and as the text of its file."""
    found: set[str] = set()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith(("#", "-----")):
                continue
            value = line.split(":", 1)[1] if line.startswith("v") and ":" in line else line
            found.add(value.rstrip("="))
            try:
                found |= secret_forms(base64.b64decode(value, validate=True))
            except ValueError:
                continue
    return {s for s in found if len(s) >= 16}


def leaks(texts: Iterable[str], needles: Iterable[str]) -> list[str]:
    """Each needle found in the texts, with a little context, for the failure message."""
    out = []
    corpus = list(texts)
    for needle in sorted(set(needles)):
        for text in corpus:
            at = text.find(needle)
            if at >= 0:
                out.append(f"{needle[:24]!r} in ...{text[max(0, at - 60) : at + 60]!r}...")
                break
    return out
