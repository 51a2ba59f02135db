"""A hostile-input corpus against every endpoint: refused with problem details, nothing written.

Routes come from the app's URL map when the test runs (as in ``tests/api/test_access.py``), so
an endpoint added by anyone is attacked too; the OpenAPI document only tells what shape a
route's body and query take, so that the hostile values land in real fields. Requests are
signed as the route's audience (``SigningMiddleware``) so that the body is actually parsed.

For each request: a 4xx, ``application/problem+json`` with type, title, status, detail and code,
and the database unchanged, except for what is written by design on every attempt:

- ``request_nonces``: a signed request's nonce is consumed as soon as the signature verifies,
  before the body is read (docs/protocol.md, "Nonce");
- ``inquiries``, ``data_keys``, ``quota_usage`` for ``POST /v1/inquiries``: every attempt counts
  against the daily quota and refused attempts are logged (with the request encrypted under the
  log row's own data key) for the operator; the test checks every such row is a refusal;
- ``borrower_sessions`` for the borrower API: the harness signs each request in with a fresh
  session (its row is written before the request), and a request touches its session.

Portal pages (HTML for browsers) are attacked without a browser session: they must refuse with
an HTML error page (or the app's 404 for a URL that matches no page) or send the visitor to
sign in, and write nothing.

Kinds: in bodies (and, for signed reports, inside the signed payload and in a batch) deep
nesting, invalid UTF-8, huge, negative, NaN, infinite, exponent and fractional numbers, dates
far past, far future and impossible, wrong types, nulls, duplicated keys, SQL and HTML
metacharacters, Unicode look-alikes, NUL bytes, long strings, bodies over the limit; in query
strings and path parameters the same kinds of values plus path traversal; CRLF smuggled into
credentials; and request headers that must never come back as response headers.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text
from werkzeug.test import Client, TestResponse

from factories import envelope, payload
from registry.batch import MAX_BATCH_BYTES
from security.support import TAMPER, Actors, SigningMiddleware, audience, changed, snapshot

BY_DESIGN = {"members": {"request_nonces"}, "operator": {"request_nonces"}}
BORROWER_TOUCH = {"borrower_sessions"}
INQUIRY_LOG = {"request_nonces", "inquiries", "data_keys", "quota_usage"}
# Endpoints allowed a larger body than the app's limit (deny by default: a new one fails here).
BODY_LIMITS = {"members.ReportBatch": MAX_BATCH_BYTES}


# --- routes ---------------------------------------------------------------------------------


@dataclass
class Route:
    endpoint: str
    method: str
    rule: str
    params: list[str]
    operation: dict[str, Any] | None
    audience: str

    @property
    def label(self) -> str:
        return f"{self.method} {self.rule}"

    def path(self, values: dict[str, str] | None = None) -> str:
        """The URL path with each parameter replaced (URL-encoded) by a value."""
        out = self.rule
        for name in self.params:
            value = (values or {}).get(name, f"sample-{name}-0001")
            out = re.sub(rf"<(?:[^:<>]+:)?{name}>", urllib.parse.quote(value, safe=""), out)
        return out

    def allowed_changes(self) -> set[str]:
        if self.endpoint.endswith("Inquiries") and self.audience == "members":
            return INQUIRY_LOG
        if self.audience == "borrower":
            return BORROWER_TOUCH
        return BY_DESIGN.get(self.audience, set())


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def routes(app: Flask, document: dict[str, Any]) -> list[Route]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        ops = document["paths"].get(_openapi_path(rule.rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append(
                Route(
                    endpoint=rule.endpoint,
                    method=method,
                    rule=rule.rule,
                    params=sorted(rule.arguments),
                    operation=ops.get(method.lower()),
                    audience=audience(rule.endpoint),
                )
            )
    return found


# --- building bodies from the documented schema ------------------------------------------------


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def skeleton(
    schema: dict[str, Any], document: dict[str, Any], valid: dict[str, Any], depth: int = 0
) -> Any:
    """A plausible value of every documented field, optional ones included.

    ``valid`` names fields whose value is known to be right (a real national ID, a real
    record), so that the hostile value is, as far as possible, the body's only defect.
    """
    schema = _resolve(schema, document)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if (kind == "object" or "properties" in schema) and depth < 4:
        props = schema.get("properties", {})
        return {
            name: valid[name] if name in valid else skeleton(sub, document, valid, depth + 1)
            for name, sub in props.items()
        }
    if kind == "array" and depth < 4:
        return [skeleton(schema.get("items", {}), document, valid, depth + 1)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if schema.get("format") == "date":
        return dt.date.today().isoformat()
    if schema.get("format") == "date-time":
        return dt.datetime.now(dt.UTC).isoformat()
    return "sample-0001"


def body_schema(route: Route) -> dict[str, Any] | None:
    body = (route.operation or {}).get("requestBody")
    if not body:
        return None
    content = body.get("content", {})
    media = content.get("application/json") or next(iter(content.values()), {})
    schema: dict[str, Any] = media.get("schema", {})
    return schema


# --- hostile values ------------------------------------------------------------------------------


class Raw(str):
    """A JSON token written as is (NaN, 1e5, a 400-digit number): ``json`` cannot produce them."""


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_AMOUNT = re.compile(r"^-?\d+(\.\d+)?$")
_LOOKALIKE = str.maketrans(
    "0123456789aeopcxyABEKMHOPCTX",
    "０１２３４５６７８９аеорсхуАВЕКМНОРСТХ",
)


def _leaves(doc: Any, replace: Callable[[Any], Any]) -> Any:
    if isinstance(doc, dict):
        return {k: _leaves(v, replace) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_leaves(v, replace) for v in doc]
    return replace(doc)


def dumps(doc: Any) -> bytes:
    out = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    raws: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, Raw):
            raws.append(node)
        elif isinstance(node, dict):
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    collect(doc)
    for token in set(raws):
        out = out.replace(json.dumps(token, ensure_ascii=False), token)
    return out.encode("utf-8")


def numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or (isinstance(value, str) and bool(_AMOUNT.match(value)))


def retyped(pick: Callable[[Any], bool], new: Callable[[Any], Any]) -> Callable[[Any], bytes]:
    """Replace the leaves ``pick`` selects (all leaves, if it selects none) by ``new(leaf)``."""

    def build(doc: Any) -> bytes:
        hits: list[Any] = []
        _leaves(doc, lambda v: hits.append(v) if pick(v) else None)
        chosen = pick if hits else (lambda _v: True)
        return dumps(_leaves(doc, lambda v: new(v) if chosen(v) else v))

    return build


def strings(value: Any) -> bool:
    return isinstance(value, str)


def dates(value: Any) -> bool:
    return isinstance(value, str) and bool(_DATE.match(value))


def duplicated_first_key(doc: Any) -> bytes:
    if not isinstance(doc, dict) or not doc:
        doc = {"key": "value"}
    key = next(iter(doc))
    head = json.dumps({key: doc[key]}, ensure_ascii=False, separators=(",", ":"))[:-1]
    return head.encode() + b"," + dumps(doc)[1:]


def invalid_utf8(doc: Any) -> bytes:
    marker = "\u2603MARK\u2603"
    built = dumps(_leaves(doc, lambda v: marker if isinstance(v, str) else v))
    if marker.encode() not in built:
        built = dumps({"value": marker})
    return built.replace(marker.encode(), b"\xff\xfe\xc0\xaf\xed\xa0\x80")


def deeply_nested(_doc: Any) -> bytes:
    return b'{"a":' * 50_000 + b"1" + b"}" * 50_000


BODY_KINDS: dict[str, Callable[[Any], bytes]] = {
    "deep_nesting": deeply_nested,
    "invalid_utf8": invalid_utf8,
    "huge_numbers": retyped(numeric, lambda v: "9" * 400 if isinstance(v, str) else Raw("9" * 400)),
    "negative_numbers": retyped(numeric, lambda v: -1 if not isinstance(v, str) else "-100.00"),
    "nan": retyped(numeric, lambda _v: Raw("NaN")),
    "infinity": retyped(numeric, lambda _v: Raw("-Infinity")),
    "exponents": retyped(numeric, lambda v: Raw("1e5") if not isinstance(v, str) else "1E+2"),
    "fractions_as_numbers": retyped(numeric, lambda _v: Raw("100.50")),
    "date_far_past": retyped(dates, lambda _v: "0001-01-01"),
    "date_far_future": retyped(dates, lambda _v: "9999-12-31"),
    "date_impossible": retyped(dates, lambda _v: "2025-02-30"),
    "wrong_types": retyped(lambda _v: True, lambda _v: {"$ne": None}),
    "nulls": retyped(lambda _v: True, lambda _v: None),
    "duplicate_keys": duplicated_first_key,
    "sql_metacharacters": retyped(strings, lambda _v: "x' OR '1'='1'; DROP TABLE reports; --"),
    "html_metacharacters": retyped(strings, lambda _v: '<script>alert("x")</script>&<img src=x>'),
    "unicode_lookalikes": retyped(strings, lambda v: "\u200b" + str(v).translate(_LOOKALIKE)),
    "nul_bytes": retyped(strings, lambda v: f"{v}\u0000"),
    "long_strings": retyped(strings, lambda _v: "W" * 20_000),
}
# Kinds that break the JSON itself: tried on the envelope (or batch) around a signed report as
# well as on its payload; the others are values, and only reach a rule inside the payload.
STRUCTURAL = {"deep_nesting", "invalid_utf8", "duplicate_keys", "wrong_types", "nulls"}
QUERY_VALUES = {
    "sql_metacharacters": "x' OR '1'='1'; --",
    "html_metacharacters": "<script>alert(1)</script>",
    "huge_numbers": "9" * 400,
    "negative_numbers": "-1",
    "nan": "NaN",
    "exponents": "1e5",
    "unicode_lookalikes": "１０",
    "nul_bytes": "1\u0000",
    "long_strings": "W" * 5000,
}
PATH_VALUES = {
    "sql_metacharacters": "x' OR '1'='1",
    "html_metacharacters": "<script>alert(1)</script>",
    "path_traversal": "../../../etc/passwd",
    "unicode_lookalikes": "ВАNКА-０００１",
    "nul_bytes": "a\u0000b",
    "long_strings": "W" * 4000,
}


# --- running and judging ---------------------------------------------------------------------


@dataclass
class Corpus:
    app: Flask
    client: Client
    engine: Engine
    actors: Actors
    document: dict[str, Any]
    routes: list[Route]
    valid: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    state: dict[str, str] | None = None

    def send(
        self,
        route: Route,
        label: str,
        *,
        path: str | None = None,
        body: bytes = b"",
        query: str = "",
        environ: dict[str, Any] | None = None,
        batch: bool = False,
        allowed: set[str] | None = None,
    ) -> TestResponse:
        """Send one hostile request and record what is wrong with the answer, if anything."""
        before = self.state or snapshot(self.engine)
        response = self.client.open(
            (path or route.path()) + (f"?{query}" if query else ""),
            method=route.method,
            data=body,
            headers={"Content-Type": "application/json"} if body else {},
            environ_overrides=environ or {},
        )
        self.sent += 1
        after = self.state = snapshot(self.engine)
        where = f"{route.label} [{label}]"
        problem = refusal_problem(response, batch=batch, page=route.endpoint.startswith("portal."))
        if problem:
            self.failures.append(f"{where}: {problem}")
        extra = changed(before, after) - (route.allowed_changes() if allowed is None else allowed)
        if extra:
            self.failures.append(f"{where}: wrote to {sorted(extra)} ({response.status_code})")
        return response

    def check(self) -> None:
        answered = _count(self.engine, "SELECT count(*) FROM inquiries WHERE outcome <> 'refused'")
        assert answered == 0, "a hostile inquiry was answered"
        assert self.sent > 0, "no route took this kind of input"
        assert not self.failures, f"{len(self.failures)} of {self.sent}:\n" + "\n".join(
            self.failures
        )


def _count(engine: Engine, sql: str) -> int:
    with engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def refusal_problem(
    response: TestResponse, *, batch: bool = False, page: bool = False
) -> str | None:
    """What is wrong with ``response`` as a refusal, or None when it is a proper one.

    Portal pages are for browsers: their refusals are HTML pages, and a signed-out visitor is
    sent to the sign-in page.
    """
    status = response.status_code
    if page:
        if status == 303 and response.location == "/portal/":
            return None
        html = 400 <= status < 500 and response.mimetype == "text/html"
        if html or status == 404:  # a URL that matches no page: the app's own 404 problem
            return None
        return f"portal answered {status} {response.mimetype}"
    if batch and status == 200:
        results = (response.get_json(silent=True) or {}).get("results", [])
        bad = [r for r in results if not 400 <= r.get("status", 0) < 500 or "problem" not in r]
        return f"batch items not refused: {bad}"[:500] if bad or not results else None
    if not 400 <= status < 500:
        return f"status {status}: {response.get_data()[:300]!r}"
    if response.mimetype != "application/problem+json":
        return f"{status} with content type {response.mimetype}"
    body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return f"{status}: problem body is not a JSON object"
    missing = [k for k in ("type", "title", "status", "detail", "code") if not body.get(k)]
    if missing:
        return f"{status}: problem lacks {missing}"
    if body["status"] != status or not str(body["type"]).endswith(str(body["code"])):
        return f"{status}: inconsistent problem {body}"
    return None


@pytest.fixture
def corpus(
    app: Flask, engine: Engine, actors: Actors, signing_app: SigningMiddleware
) -> Iterator[Corpus]:
    client = Client(signing_app)
    document = client.get("/v1/openapi.json").json
    assert isinstance(document, dict)
    records = client.get("/v1/me/records").json
    assert isinstance(records, dict) and records["records"], records
    valid = {
        "national_id": actors.borrower_id,
        "record_id": records["records"][0]["record_id"],
        "url": "https://hooks.example.com/registry",
    }
    yield Corpus(app, client, engine, actors, document, routes(app, document), valid)


def _body_variants(corpus: Corpus, route: Route, kind: str) -> Iterator[tuple[str, bytes, bool]]:
    """(label, body, is_batch) for one kind: the outer body and, for signed reports, the payload."""
    schema = body_schema(route)
    assert schema is not None
    build = BODY_KINDS[kind]
    member = corpus.actors.bank_a
    report = payload(member, account_ref="HOSTILE-0001")
    name = schema.get("$ref", "").rsplit("/", 1)[-1]
    outer = kind in STRUCTURAL
    if name == "Envelope":
        if outer:
            yield kind, build(json.loads(envelope(member, report))), False
        yield f"{kind} in the signed payload", envelope(member, build(report)), False
        return
    base = skeleton(schema, corpus.document, corpus.valid)
    if isinstance(base, dict) and set(base) == {"envelopes"}:
        if outer:
            yield kind, build(base), True
        item = envelope(member, build(report)).decode("utf-8")
        yield f"{kind} in a batched payload", dumps({"envelopes": [item]}), True
        return
    yield kind, build(base), False


def test_hostile_bodies_are_refused_and_write_nothing(corpus: Corpus) -> None:
    for kind in BODY_KINDS:
        for route in corpus.routes:
            if body_schema(route) is not None:
                for label, body, batch in _body_variants(corpus, route, kind):
                    corpus.send(route, label, body=body, batch=batch)
    corpus.check()


def test_bodies_over_the_limit_are_refused_and_write_nothing(corpus: Corpus) -> None:
    limit = corpus.app.config["MAX_CONTENT_LENGTH"]
    for route in corpus.routes:
        if route.method in ("POST", "PUT", "PATCH", "DELETE"):
            size = BODY_LIMITS.get(route.endpoint, limit) + 1
            body = b'{"a":"' + b"x" * (size - 8) + b'"}'
            assert len(body) == size
            corpus.send(route, "over_limit", body=body)
    corpus.check()


def test_hostile_query_parameters_are_refused_and_write_nothing(corpus: Corpus) -> None:
    for kind, value in QUERY_VALUES.items():
        for route in corpus.routes:
            documented = (route.operation or {}).get("parameters", [])
            names = [p["name"] for p in documented if p["in"] == "query"]
            if names:
                query = urllib.parse.urlencode(dict.fromkeys(names, value))
                corpus.send(route, f"query {kind}", query=query)
    corpus.check()


def test_hostile_path_parameters_are_refused_and_write_nothing(corpus: Corpus) -> None:
    for kind, value in PATH_VALUES.items():
        for route in corpus.routes:
            if route.params:
                path = route.path(dict.fromkeys(route.params, value))
                body = b"{}" if route.method in ("POST", "PUT", "PATCH") else b""
                corpus.send(route, f"path {kind}", path=path, body=body)
    corpus.check()


def _inject(name: str) -> Callable[[dict[str, Any]], None]:
    def tamper(environ: dict[str, Any]) -> None:
        environ[name] = environ.get(name, "") + "\r\nX-Injected: 1"

    return tamper


def test_header_injection_in_credentials_is_refused_and_writes_nothing(corpus: Corpus) -> None:
    """CRLF smuggled into the signature or the bearer token: 401, not even a nonce consumed."""
    for route in corpus.routes:
        allowed: set[str] = set()
        if route.audience in ("members", "operator"):
            header = "HTTP_SIGNATURE_INPUT"
        elif route.audience == "borrower" and not route.endpoint.startswith("portal."):
            header, allowed = "HTTP_AUTHORIZATION", BORROWER_TOUCH  # the harness's fresh session
        else:
            continue
        body = b"{}" if route.method in ("POST", "PUT", "PATCH") else b""
        response = corpus.send(
            route, "header injection", body=body, environ={TAMPER: _inject(header)}, allowed=allowed
        )
        if response.status_code != 401:
            corpus.failures.append(f"{route.label}: {response.status_code}, not 401")
    corpus.check()


def test_request_headers_are_never_reflected_into_response_headers(corpus: Corpus) -> None:
    """A request id or forwarding header with CRLF cannot add a header or a cookie to the answer."""
    hostile = {
        "HTTP_X_REQUEST_ID": "evil\r\nSet-Cookie: pwned=1",
        "HTTP_X_FORWARDED_FOR": "203.0.113.9\r\nX-Injected: 1",
        "HTTP_X_FORWARDED_HOST": "evil.example",
    }
    for route in corpus.routes:
        if route.method != "GET":
            continue
        response = corpus.client.open(route.path(), method="GET", environ_overrides=hostile)
        corpus.sent += 1
        for name, value in response.headers.items():
            if "\r" in value or "\n" in value or "pwned" in value or name == "X-Injected":
                corpus.failures.append(f"{route.label}: reflected {name}: {value!r}")
        if response.status_code >= 500:
            corpus.failures.append(f"{route.label}: {response.status_code}")
        if "evil.example" in response.get_data(as_text=True):
            corpus.failures.append(f"{route.label}: X-Forwarded-Host reflected in the body")
    corpus.check()
