"""The borrower portal through the Flask test client: sign-in, CSRF, headers, only my data."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from borrowers import seed
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from conftest import Clock
from factories import admit, national_id
from registry import notify
from registry.secrets import KeyMaterial, load_key_material
from registry.settings import Settings

ALICE, BOB, NOBODY = national_id(1), national_id(2), national_id(3)
ALICE_PHONE, BOB_PHONE = "+8613800000001", "+8613800000002"
BASE = "https://localhost"
TEMPLATES = Path(__file__).resolve().parents[2] / "api" / "portal" / "templates"


@pytest.fixture
def material(settings: Settings) -> KeyMaterial:
    return load_key_material(settings)


@pytest.fixture
def people(session: Session, material: KeyMaterial) -> None:
    bank = admit(session, "BANKA")
    seed(session, material, bank, serial=1, phone=ALICE_PHONE, name="李丽", account_ref="ALICE-1")
    seed(session, material, bank, serial=2, phone=BOB_PHONE, name="王波", account_ref="BOB-22")


class Browser:
    """The test client over https, remembering the last page's CSRF token like a browser."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.csrf = ""

    def _keep(self, response: TestResponse) -> TestResponse:
        found = re.search(r'name="csrf" value="([^"]+)"', response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self._keep(self.client.get(path, base_url=BASE, **kw))

    def post(
        self, path: str, data: dict[str, str], *, csrf: bool = True, **kw: Any
    ) -> TestResponse:
        form = {"csrf": self.csrf, **data} if csrf else data
        return self._keep(self.client.post(path, data=form, base_url=BASE, **kw))


@pytest.fixture
def browser(client: FlaskClient) -> Browser:
    return Browser(client)


def code_for(session: Session, material: KeyMaterial, phone: str) -> str:
    session.commit()
    now = dt.datetime.now(dt.UTC)
    found = [m for m in notify.outbox(session, material, now) if m.to == phone]
    session.commit()
    return found[-1].params["code"]


def sign_in(
    browser: Browser, session: Session, material: KeyMaterial, nid: str, phone: str
) -> TestResponse:
    browser.get("/portal/")
    assert browser.post("/portal/signin", {"national_id": nid}).status_code == 200
    code = code_for(session, material, phone)
    done = browser.post("/portal/verify", {"national_id": nid, "code": code})
    assert done.status_code == 303 and done.headers["Location"] == "/portal/records"
    return done


def text_of(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def test_every_page_has_the_protective_headers(browser: Browser) -> None:
    page = browser.get("/portal/")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    css = browser.get("/portal/static/portal.css")
    assert css.status_code == 200 and "no-store" not in css.headers.get("Cache-Control", "")
    css.close()


def test_templates_need_no_script_no_inline_style_and_nothing_from_outside() -> None:
    for template in TEMPLATES.glob("*.html"):
        source = template.read_text()
        assert "<script" not in source and "style=" not in source, template.name
        assert "<style" not in source and "javascript:" not in source, template.name
        assert not re.search(r'(src|href)="(https?:)?//', source), template.name
        for form in re.findall(r"<form[^>]*>", source):
            assert 'method="post"' in form, (template.name, form)


def test_signing_in_sets_a_strict_host_only_cookie(
    browser: Browser, session: Session, material: KeyMaterial, people: None
) -> None:
    done = sign_in(browser, session, material, ALICE, ALICE_PHONE)
    cookie = next(c for c in done.headers.getlist("Set-Cookie") if c.startswith("__Host-portal="))
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie and ALICE not in done.headers["Location"]
    page = browser.get("/portal/records")
    assert page.status_code == 200
    body = text_of(page)
    assert ALICE in body and "李丽" in body and "ALICE-1" in body and ALICE_PHONE in body
    assert BOB not in body and "王波" not in body and "BOB-22" not in body


def test_the_code_page_is_the_same_for_known_and_unknown_ids(
    browser: Browser, people: None
) -> None:
    browser.get("/portal/")
    known = browser.post("/portal/signin", {"national_id": ALICE})
    unknown = browser.post("/portal/signin", {"national_id": NOBODY})
    assert known.status_code == unknown.status_code == 200
    assert text_of(known).replace(ALICE, "X") == text_of(unknown).replace(NOBODY, "X")


def test_forms_without_a_valid_csrf_token_are_refused(
    client: FlaskClient, session: Session, material: KeyMaterial, people: None
) -> None:
    anonymous = Browser(client)
    anonymous.get("/portal/")
    refused = anonymous.post("/portal/signin", {"national_id": ALICE}, csrf=False)
    assert refused.status_code == 403
    assert anonymous.post("/portal/signin", {"national_id": ALICE, "csrf": "x" * 64}, csrf=False)
    alice = Browser(client)
    sign_in(alice, session, material, ALICE, ALICE_PHONE)
    page = alice.get("/portal/consents")
    assert page.status_code == 200
    for path, form in (
        ("/portal/consents", {"institution": "BANKA", "days": "7"}),
        ("/portal/disputes", {"record_id": "x", "reason": "not_mine"}),
        ("/portal/statements", {"text": "hello"}),
        ("/portal/signout", {}),
    ):
        assert alice.post(path, form, csrf=False).status_code == 403, path
        forged = alice.post(path, {**form, "csrf": "0" * 64}, csrf=False)
        assert forged.status_code == 403, path
    assert alice.get("/portal/records").status_code == 200, "still signed in"


def test_brute_force_of_the_code_is_stopped(
    browser: Browser, session: Session, material: KeyMaterial, people: None
) -> None:
    browser.get("/portal/")
    browser.post("/portal/signin", {"national_id": ALICE})
    code = code_for(session, material, ALICE_PHONE)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (
            browser.post("/portal/verify", {"national_id": ALICE, "code": wrong}).status_code == 401
        )
    assert browser.post("/portal/verify", {"national_id": ALICE, "code": code}).status_code == 401
    assert browser.get("/portal/records").status_code == 303


def test_a_borrower_sees_only_their_own_data_on_every_page(
    client: FlaskClient, session: Session, material: KeyMaterial, people: None
) -> None:
    bob = Browser(client)
    sign_in(bob, session, material, BOB, BOB_PHONE)
    bob.get("/portal/disputes")
    assert (
        bob.post(
            "/portal/disputes", {"record_id": _record_ids(bob)[0], "reason": "already_paid"}
        ).status_code
        == 303
    )
    bob.get("/portal/statements")
    bob.post("/portal/statements", {"text": "BOB-SAYS-HELLO"})
    bob.get("/portal/consents")
    bob.post("/portal/consents", {"institution": "BANKA", "days": "3"})
    bob.post("/portal/signout", {})

    alice = Browser(client)
    sign_in(alice, session, material, ALICE, ALICE_PHONE)
    for section in ("records", "inquiries", "disputes", "consents", "statements", "certificates"):
        page = text_of(alice.get(f"/portal/{section}"))
        for secret in (BOB, "王波", "BOB-22", BOB_PHONE, "BOB-SAYS-HELLO"):
            assert secret not in page, (section, secret)
        assert "consent-" not in page or section != "consents"
    download = alice.get("/portal/file")
    assert download.status_code == 200 and BOB.encode() not in download.get_data()


def _record_ids(browser: Browser) -> list[str]:
    return re.findall(r'<option value="([0-9a-f]{32})"', text_of(browser.get("/portal/disputes")))


def test_disputes_consents_and_statements_through_forms(
    browser: Browser, session: Session, material: KeyMaterial, people: None
) -> None:
    sign_in(browser, session, material, ALICE, ALICE_PHONE)
    [record] = _record_ids(browser)
    filed = browser.post(
        "/portal/disputes", {"record_id": record, "reason": "wrong_amount", "text": "多算了"}
    )
    assert filed.status_code == 303
    page = text_of(browser.get("/portal/disputes"))
    assert "多算了" in page and "处理中" in page
    assert "异议处理中" in text_of(browser.get("/portal/records"))
    again = browser.post("/portal/disputes", {"record_id": record, "reason": "not_mine"})
    assert again.status_code == 409

    browser.get("/portal/consents")
    issued = browser.post("/portal/consents", {"institution": "BANKA", "days": "5"})
    assert issued.status_code == 201
    assert re.search(r'id="consent-code">[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}<', text_of(issued))
    [ref] = re.findall(r'action="/portal/consents/([0-9a-f]{32})/revoke"', text_of(issued))
    assert browser.post(f"/portal/consents/{ref}/revoke", {}).status_code == 303
    assert "已撤销" in text_of(browser.get("/portal/consents"))
    too_long = browser.post("/portal/consents", {"institution": "BANKA", "days": "99"})
    assert too_long.status_code == 422

    browser.get("/portal/statements")
    assert (
        browser.post("/portal/statements", {"record_id": record, "text": "卡被盗刷"}).status_code
        == 303
    )
    assert "卡被盗刷" in text_of(browser.get("/portal/records"))
    assert browser.post("/portal/statements/remove", {"record_id": record}).status_code == 303
    assert "卡被盗刷" not in text_of(browser.get("/portal/records"))


def test_language_from_accept_language_and_from_the_switch(browser: Browser) -> None:
    assert "登录" in text_of(browser.get("/portal/"))
    english = browser.get("/portal/", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert "Sign in" in text_of(english) and 'lang="en"' in text_of(english)
    switch = browser.get("/portal/language/en?next=/portal/")
    assert switch.status_code == 303 and switch.headers["Location"] == "/portal/"
    assert "Sign in" in text_of(browser.get("/portal/", headers={"Accept-Language": "zh-CN"}))
    escape = browser.get("/portal/language/zh-CN?next=//evil.example/")
    assert escape.headers["Location"] == "/portal/"
    assert browser.get("/portal/language/fr").status_code == 404


def test_idle_sessions_end(
    browser: Browser, session: Session, material: KeyMaterial, people: None, clock: Clock
) -> None:
    sign_in(browser, session, material, ALICE, ALICE_PHONE)
    clock.advance(minutes=10)
    assert browser.get("/portal/records").status_code == 200
    clock.advance(minutes=16)
    gone = browser.get("/portal/records")
    assert gone.status_code == 303 and gone.headers["Location"] == "/portal/"


def test_signing_out_kills_the_session_server_side(
    client: FlaskClient, session: Session, material: KeyMaterial, people: None
) -> None:
    browser = Browser(client)
    sign_in(browser, session, material, ALICE, ALICE_PHONE)
    cookie = client.get_cookie("__Host-portal", domain="localhost")
    assert cookie is not None
    stolen = cookie.value
    browser.get("/portal/records")
    assert browser.post("/portal/signout", {}).status_code == 303
    client.set_cookie("__Host-portal", stolen, domain="localhost", secure=True)
    assert browser.get("/portal/records").status_code == 303


def test_both_catalogs_have_every_key_the_templates_use() -> None:
    from api.portal import i18n

    assert set(i18n.ZH) == set(i18n.EN)
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(["']([a-z_.]+[a-z_])["']""", template.read_text()))
    views = (TEMPLATES.parent / "views.py").read_text()
    used |= set(re.findall(r'"(error\.[a-z_]+)"', views))
    assert used <= set(i18n.ZH), used - set(i18n.ZH)
    for kind, values in i18n.LABELS.items():
        for value, texts in values.items():
            assert set(texts) == set(i18n.LANGUAGES), (kind, value)
