"""The borrower's own file through JSON, for apps: ``/v1/me/``.

Sign-in is two calls (``/v1/me/signin`` then ``/v1/me/signin/verify``) that give a bearer
token; every other route needs it (``before_request``: deny by default). Member and operator
request signatures give no access here: only a borrower's token names a borrower.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Response, g, request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.errors import ProblemSchema
from api.me import schemas as s
from api.me.auth import borrower_index, client_address, deliver_in_background, timeouts
from api.services import db, services
from crypto import strictjson
from crypto.errors import StrictJSONError
from registry import borrower_file, borrower_sessions, consents, disputes, signin, statements
from registry.errors import FieldError, MalformedReport, NotAuthenticated

signin_blp = Blueprint(
    "me_signin",
    __name__,
    url_prefix="/v1/me",
    description="Borrowers: sign in with a one-time code to get a bearer token",
)
blp = Blueprint(
    "me",
    __name__,
    url_prefix="/v1/me",
    description="Borrowers: their own records, inquiries, disputes, consents and statements",
)
BEARER: list[dict[str, list[str]]] = [{"borrowerToken": []}]
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "a borrower's token from POST /v1/me/signin/verify",
}
SENT = {
    "status": "accepted",
    "detail": "If this ID has a phone on file, a code was sent to it; it is valid for 10 minutes.",
}


def _problems(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "see the problem's code",
            "content": {"application/problem+json": {"schema": ProblemSchema}},
        }
        for code in codes
    }


def _strict_body() -> None:
    """A duplicated member name is refused: ``json`` would silently keep the last one."""
    if request.method in ("POST", "PUT") and request.get_data(cache=True):
        try:
            strictjson.loads_strict(request.get_data(cache=True))
        except StrictJSONError as exc:
            raise MalformedReport(
                "the request body is not acceptable JSON",
                code="body_malformed",
                errors=[FieldError("body", exc.rule, exc.detail)],
            ) from None


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_borrower() -> None:
    """``before_request`` of ``me``: a live bearer token, or 401."""
    _strict_body()
    token = _bearer()
    svc = services()
    session = db()
    found = (
        borrower_sessions.resume(
            session, token=token, kind=borrower_sessions.API, timeouts=timeouts(), now=svc.clock()
        )
        if token
        else None
    )
    session.commit()
    if found is None:
        raise NotAuthenticated(
            "a borrower's bearer token is required (POST /v1/me/signin)",
            code="borrower_not_signed_in",
        )
    g.borrower_index = found.borrower_index
    g.bearer = token


blp.before_request(require_borrower)
signin_blp.before_request(_strict_body)


def no_store(response: Response) -> Response:
    """Personal data: no cache may keep it."""
    response.headers["Cache-Control"] = "no-store"
    return response


blp.after_request(no_store)
signin_blp.after_request(no_store)


@signin_blp.route("/signin")
class Signin(MethodView):
    @signin_blp.arguments(s.MeSigninSchema)
    @signin_blp.response(202, s.MeSigninAcceptedSchema)
    @signin_blp.doc(responses=_problems(422, 429))
    def post(self, body: dict[str, Any]) -> dict[str, str]:
        """Ask for a sign-in code by SMS; the answer is the same for every valid ID."""
        svc = services()
        session = db()
        signin.request_code(
            session,
            svc.material,
            national_id=body["national_id"],
            client=client_address(),
            now=svc.clock(),
        )
        session.commit()
        deliver_in_background()
        return SENT


@signin_blp.route("/signin/verify")
class Verify(MethodView):
    @signin_blp.arguments(s.MeVerifySchema)
    @signin_blp.response(200, s.MeTokenSchema)
    @signin_blp.doc(responses=_problems(401, 422, 429))
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Exchange the code for a bearer token (five wrong codes kill it)."""
        svc = services()
        session = db()
        now = svc.clock()
        index = signin.verify(
            session,
            svc.material,
            national_id=body["national_id"],
            code=body["code"],
            client=client_address(),
            now=now,
        )
        if index is None:
            session.commit()  # the wrong guess is counted
            raise NotAuthenticated(
                "the code is wrong, expired or used up", code="signin_code_invalid"
            )
        limits = timeouts()
        token = borrower_sessions.start(
            session,
            borrower_index=index,
            kind=borrower_sessions.API,
            timeouts=limits,
            now=now,
        )
        session.commit()
        return {
            "token": token,
            "token_type": "Bearer",
            "idle_timeout_seconds": int(limits.idle.total_seconds()),
            "expires_at": borrower_file.stamp(now + limits.absolute),
        }


@blp.route("/signout")
class Signout(MethodView):
    @blp.response(204)
    @blp.doc(security=BEARER, responses=_problems(401))
    def post(self) -> None:
        """End this token's session."""
        session = db()
        borrower_sessions.end(session, token=g.bearer)
        session.commit()


@blp.route("/records")
class Records(MethodView):
    @blp.response(200, s.MeRecordsSchema)
    @blp.doc(security=BEARER, responses=_problems(401))
    def get(self) -> dict[str, Any]:
        """Every record about me, unmasked, with dispute, statement and suppression state."""
        svc = services()
        index = borrower_index()
        return {
            "national_id": borrower_file.national_id(db(), svc.material, index),
            "records": borrower_file.records(db(), svc.material, index),
        }


@blp.route("/inquiries")
class Inquiries(MethodView):
    @blp.response(200, s.MeInquiriesSchema)
    @blp.doc(security=BEARER, responses=_problems(401))
    def get(self) -> dict[str, Any]:
        """Who looked at my file: institution, date, purpose and consent kind."""
        return {"inquiries": borrower_file.inquiries(db(), borrower_index())}


@blp.route("/disputes")
class Disputes(MethodView):
    @blp.response(200, s.MeDisputesSchema)
    @blp.doc(security=BEARER, responses=_problems(401))
    def get(self) -> dict[str, Any]:
        """My disputes, newest first, with the member's answer."""
        svc = services()
        return {
            "reasons": list(disputes.REASONS),
            "disputes": disputes.list_for_borrower(db(), svc.material, borrower_index()),
        }

    @blp.arguments(s.MeDisputeInSchema)
    @blp.response(201, s.MeDisputeSchema)
    @blp.doc(security=BEARER, responses=_problems(401, 404, 409, 422))
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Dispute one of my records; the member must answer before the deadline."""
        svc = services()
        session = db()
        index = borrower_index()
        dispute = disputes.file_dispute(
            session,
            svc.material,
            svc.policy,
            borrower_index=index,
            record_ref=body["record_id"],
            reason=body["reason"],
            text=body["text"],
            now=svc.clock(),
        )
        session.commit()
        deliver_in_background()
        [filed] = [
            d
            for d in disputes.list_for_borrower(session, svc.material, index)
            if d["ref"] == dispute.ref
        ]
        return filed


@blp.route("/consents")
class Consents(MethodView):
    @blp.response(200, s.MeConsentsSchema)
    @blp.doc(security=BEARER, responses=_problems(401))
    def get(self) -> dict[str, Any]:
        """My consents and where each was used."""
        svc = services()
        return {"consents": borrower_file.consent_list(db(), borrower_index(), svc.clock())}

    @blp.arguments(s.MeConsentInSchema)
    @blp.response(201, s.MeIssuedConsentSchema)
    @blp.doc(security=BEARER, responses=_problems(401, 422))
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Issue a consent code for one member, for a credit application (code shown once)."""
        svc = services()
        session = db()
        now = svc.clock()
        consent, code = consents.issue_code(
            session,
            svc.material,
            svc.policy,
            borrower_index=borrower_index(),
            institution_code=body["institution"],
            expires_at=body["expires_at"].astimezone(dt.UTC),
            now=now,
        )
        session.commit()
        return {"consent": borrower_file.consent_view(session, consent, now), "code": code}


@blp.route("/consents/<string:consent_id>")
class ConsentItem(MethodView):
    @blp.response(204)
    @blp.doc(security=BEARER, responses=_problems(401, 404))
    def delete(self, consent_id: str) -> None:
        """Revoke one of my consents: it cannot be used from now on."""
        svc = services()
        session = db()
        consents.revoke(
            session, borrower_index=borrower_index(), consent_ref=consent_id, now=svc.clock()
        )
        session.commit()


@blp.route("/statements")
class Statements(MethodView):
    @blp.response(200, s.MeStatementsSchema)
    @blp.doc(security=BEARER, responses=_problems(401))
    def get(self) -> dict[str, Any]:
        """My statements (本人声明), shown to every inquirer beside what they are attached to."""
        svc = services()
        return {"statements": statements.list_for_borrower(db(), svc.material, borrower_index())}

    @blp.arguments(s.MeStatementInSchema)
    @blp.response(200, s.MeStatementsSchema)
    @blp.doc(security=BEARER, responses=_problems(401, 404, 422))
    def put(self, body: dict[str, Any]) -> dict[str, Any]:
        """Attach (or replace) my statement on the whole file or on one record."""
        svc = services()
        session = db()
        index = borrower_index()
        statements.set_statement(
            session,
            svc.material,
            borrower_index=index,
            record_ref=body["record_id"],
            text=body["text"],
            now=svc.clock(),
        )
        session.commit()
        return {"statements": statements.list_for_borrower(session, svc.material, index)}

    @blp.arguments(s.MeStatementTargetSchema, location="query")
    @blp.response(204)
    @blp.doc(security=BEARER, responses=_problems(401, 404))
    def delete(self, query: dict[str, Any]) -> None:
        """Remove my statement on the whole file, or on the record named by ``record_id``."""
        session = db()
        statements.remove_statement(
            session, borrower_index=borrower_index(), record_ref=query["record_id"]
        )
        session.commit()


@blp.route("/certificates")
class Certificates(MethodView):
    @blp.response(200, s.MeCertificatesSchema)
    @blp.doc(security=BEARER, responses=_problems(401))
    def get(self) -> dict[str, Any]:
        """Clearance certificates of my cleared records, signed by the registry."""
        svc = services()
        found = borrower_file.certificates(db(), svc.material, svc.policy, borrower_index())
        return {"certificates": found}


@blp.route("/file")
class File(MethodView):
    @blp.doc(
        security=BEARER,
        responses={
            "200": {
                "description": (
                    f"my whole file as a DSSE envelope ({borrower_file.FILE_PAYLOAD_TYPE}) "
                    "signed by the registry key published at /v1/registry-keys"
                ),
                "content": {"application/json": {}},
            },
            **_problems(401),
        },
    )
    def get(self) -> Response:
        """Download my whole file, signed by the registry."""
        svc = services()
        body = borrower_file.signed_file(
            db(), svc.material, svc.policy, borrower_index(), svc.clock()
        )
        return Response(
            body,
            mimetype="application/json",
            headers={"Content-Disposition": 'attachment; filename="my-registry-file.json"'},
        )
