"""The borrower portal at ``/portal/``: server-rendered pages, no JavaScript, zh-CN and English.

Every page reads only the signed-in borrower's data (``g.borrower_index``, set by
``guard.load`` from the server-side session); the national ID travels only in POST bodies.
Domain refusals become an HTML page with the same status the JSON API would give.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, abort, g, render_template, request
from werkzeug.exceptions import HTTPException

from api.errors import from_registry_error
from api.me.auth import client_address, deliver_in_background, timeouts
from api.portal import guard, i18n
from api.services import db, services
from registry import borrower_file, borrower_sessions, consents, disputes, signin, statements
from registry.errors import NotAuthenticated, RateLimited, RegistryError

blp = Blueprint(
    "portal",
    __name__,
    url_prefix="/portal",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
blp.before_request(guard.load)
blp.after_request(guard.finish)

NAV = ("records", "inquiries", "disputes", "consents", "statements", "certificates")


@blp.context_processor
def _helpers() -> dict[str, Any]:
    lang = g.get("lang", i18n.DEFAULT)
    return {
        "t": lambda key, **kw: i18n.text(lang, key, **kw),
        "label": lambda kind, value: i18n.label(lang, kind, value),
        "lang": lang,
        "languages": i18n.LANGUAGES,
        "csrf": guard.csrf_field_value,
        "signed_in": g.get("borrower_index") is not None,
        "nav": NAV,
        "here": request.path,
    }


def _page(template: str, status: int = 200, **values: Any) -> tuple[str, int]:
    return render_template(template, **values), status


def _see_other(path: str) -> Response:
    response = Response(status=303)
    response.headers["Location"] = path
    return response


def _index() -> bytes:
    index: bytes = g.borrower_index
    return index


# --- signing in ------------------------------------------------------------------------------


@blp.get("/")
def index() -> Response | tuple[str, int]:
    """The sign-in page, or the borrower's records when signed in."""
    if g.borrower_index is not None:
        return _see_other("/portal/records")
    return _page("signin.html")


@blp.post("/signin")
def signin_request() -> tuple[str, int]:
    """Send a code; the page that follows is the same whether the ID is known or not."""
    svc = services()
    national_id = request.form.get("national_id", "")
    session = db()
    try:
        signin.request_code(
            session, svc.material, national_id=national_id, client=client_address(), now=svc.clock()
        )
    except RateLimited as exc:
        return _page("signin.html", 429, error="error.rate_limited", retry=exc.retry_after)
    except RegistryError:
        return _page("signin.html", 422, error="error.national_id")
    session.commit()
    deliver_in_background()
    return _page("code.html", national_id=national_id)


@blp.post("/verify")
def verify() -> Response | tuple[str, int]:
    """Check the code; on success a new session and its cookie (never a reused one)."""
    svc = services()
    national_id = request.form.get("national_id", "")
    code = request.form.get("code", "")[:32]
    session = db()
    now = svc.clock()
    try:
        index = signin.verify(
            session,
            svc.material,
            national_id=national_id,
            code=code,
            client=client_address(),
            now=now,
        )
    except RateLimited as exc:
        return _page(
            "code.html",
            429,
            national_id=national_id,
            error="error.rate_limited",
            retry=exc.retry_after,
        )
    except RegistryError:
        return _page("signin.html", 422, error="error.national_id")
    if index is None:
        session.commit()  # the wrong guess is counted
        return _page("code.html", 401, national_id=national_id, error="error.code")
    token = borrower_sessions.start(
        session, borrower_index=index, kind=borrower_sessions.BROWSER, timeouts=timeouts(), now=now
    )
    session.commit()
    response = _see_other("/portal/records")
    guard.set_session_cookie(response, token)
    return response


@blp.post("/signout")
def signout() -> Response:
    session = db()
    borrower_sessions.end(session, token=g.session_token)
    session.commit()
    response = _see_other("/portal/")
    guard.clear_session_cookie(response)
    return response


@blp.get("/language/<lang>")
def language(lang: str) -> Response:
    """Switch language (a link, so it works without JavaScript) and go back where one was."""
    if lang not in i18n.LANGUAGES:
        abort(404)
    back = request.args.get("next", "/portal/")
    # NOTE: only a path of the portal itself: no open redirect to another site.
    if not back.startswith("/portal/") or "//" in back or "\\" in back:
        back = "/portal/"
    response = _see_other(back)
    guard.set_language_cookie(response, lang)
    return response


# --- the borrower's file ---------------------------------------------------------------------


@blp.get("/records")
def records() -> tuple[str, int]:
    svc = services()
    return _page(
        "records.html",
        national_id=borrower_file.national_id(db(), svc.material, _index()),
        records=borrower_file.records(db(), svc.material, _index()),
    )


@blp.get("/inquiries")
def inquiries() -> tuple[str, int]:
    return _page("inquiries.html", inquiries=borrower_file.inquiries(db(), _index()))


def _disputes_page(status: int = 200, **extra: Any) -> tuple[str, int]:
    svc = services()
    return _page(
        "disputes.html",
        status,
        disputes=disputes.list_for_borrower(db(), svc.material, _index()),
        records=borrower_file.records(db(), svc.material, _index()),
        reasons=disputes.REASONS,
        **extra,
    )


@blp.get("/disputes")
def disputes_page() -> tuple[str, int]:
    return _disputes_page(selected=request.args.get("record", ""))


@blp.post("/disputes")
def file_dispute() -> Response:
    svc = services()
    session = db()
    disputes.file_dispute(
        session,
        svc.material,
        svc.policy,
        borrower_index=_index(),
        record_ref=request.form.get("record_id", ""),
        reason=request.form.get("reason", ""),
        text=request.form.get("text", ""),
        now=svc.clock(),
    )
    session.commit()
    deliver_in_background()
    return _see_other("/portal/disputes")


def _consents_page(status: int = 200, **extra: Any) -> tuple[str, int]:
    svc = services()
    return _page(
        "consents.html",
        status,
        consents=borrower_file.consent_list(db(), _index(), svc.clock()),
        institutions=borrower_file.institutions(db()),
        max_days=svc.policy.consent_code_max_days,
        **extra,
    )


@blp.get("/consents")
def consents_page() -> tuple[str, int]:
    return _consents_page()


@blp.post("/consents")
def issue_consent() -> tuple[str, int]:
    """Issue a consent code; the page shows it this once (it is stored only hashed)."""
    svc = services()
    session = db()
    now = svc.clock()
    try:
        days = int(request.form.get("days", ""))
    except ValueError:
        days = 0
    consent, code = consents.issue_code(
        session,
        svc.material,
        svc.policy,
        borrower_index=_index(),
        institution_code=request.form.get("institution", ""),
        expires_at=now + dt.timedelta(days=days),
        now=now,
    )
    session.commit()
    return _consents_page(
        201, issued={"code": code, "consent": consent.ref, "institution": consent.institution.name}
    )


@blp.post("/consents/<consent_id>/revoke")
def revoke_consent(consent_id: str) -> Response:
    svc = services()
    session = db()
    consents.revoke(session, borrower_index=_index(), consent_ref=consent_id, now=svc.clock())
    session.commit()
    return _see_other("/portal/consents")


@blp.get("/statements")
def statements_page() -> tuple[str, int]:
    svc = services()
    return _page(
        "statements.html",
        statements=statements.list_for_borrower(db(), svc.material, _index()),
        records=borrower_file.records(db(), svc.material, _index()),
        max_length=statements.MAX_LENGTH,
    )


@blp.post("/statements")
def set_statement() -> Response:
    svc = services()
    session = db()
    statements.set_statement(
        session,
        svc.material,
        borrower_index=_index(),
        record_ref=request.form.get("record_id") or None,
        text=request.form.get("text", ""),
        now=svc.clock(),
    )
    session.commit()
    return _see_other("/portal/statements")


@blp.post("/statements/remove")
def remove_statement() -> Response:
    session = db()
    statements.remove_statement(
        session, borrower_index=_index(), record_ref=request.form.get("record_id") or None
    )
    session.commit()
    return _see_other("/portal/statements")


@blp.get("/certificates")
def certificates() -> tuple[str, int]:
    svc = services()
    return _page(
        "certificates.html",
        certificates=borrower_file.certificates(db(), svc.material, svc.policy, _index()),
    )


@blp.get("/file")
def download() -> Response:
    """The whole file as JSON signed by the registry (verify with /v1/registry-keys)."""
    svc = services()
    body = borrower_file.signed_file(db(), svc.material, svc.policy, _index(), svc.clock())
    return Response(
        body,
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-registry-file.json"'},
    )


# --- errors as pages ---------------------------------------------------------------------------


@blp.errorhandler(RegistryError)
def _refused(error: RegistryError) -> tuple[str, int]:
    status = from_registry_error(error).status_code
    if isinstance(error, NotAuthenticated):
        status = 403
    return _page("problem.html", status, refusal=error)


@blp.errorhandler(HTTPException)
def _http(error: HTTPException) -> tuple[str, int]:
    return _page("problem.html", error.code or 500, http_error=error)
