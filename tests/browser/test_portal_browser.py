"""The portal in headless Chromium against gunicorn: what a borrower actually clicks through.

Sign in with the code from the development outbox (read with `registry notifications`), read
records and inquiries, file a dispute, issue and revoke a consent, write a statement, switch
language, sign out. Every page is screenshotted to test-artifacts/; a CSP violation anywhere
fails the test.

Chromium comes from the system package (``make test`` installs it); Playwright never downloads
a browser here. A missing Chromium fails the test, under CI and elsewhere: no silent skips.
(The fixtures live here, not in a conftest.py: a second module named ``conftest`` would shadow
``tests/conftest.py`` for the suite's ``from conftest import Clock``.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from borrowers import index_of, seed
from browser_support import CHROMIUM, CHROMIUM_ARGS, Registry
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from servers import gunicorn, run_cli
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from factories import admit, national_id
from registry.models import Inquiry, Institution
from registry.secrets import KeyMaterial, load_key_material
from registry.settings import Settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def chromium() -> str:
    found = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not found:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make test` (it installs Debian's chromium) "
            "or `apt-get install chromium`"
        )
    return found


@pytest.fixture
def registry_server(tmp_path: Path, engine: Engine, database_url: str) -> Iterator[Registry]:
    """gunicorn serving a fresh instance on a free loopback port, reached as ``localhost``.

    NOTE: Chromium treats http://localhost as a secure context, so the portal's ``Secure``,
    ``__Host-`` cookies work there exactly as they would over https.
    """
    env = dict(os.environ)
    env.update(
        {
            "REGISTRY_INSTANCE": str(tmp_path / "instance"),
            "REGISTRY_DATABASE_URL": database_url,
            "REGISTRY_WORKERS": "2",
            "REGISTRY_NOTIFIER": "outbox",
        }
    )
    with gunicorn(env, tmp_path / "gunicorn.log") as port:
        settings = Settings.from_env(env)
        yield Registry(
            url=f"http://localhost:{port}",
            env=env,
            settings=settings,
            material=load_key_material(settings),
        )


ALICE, BOB = national_id(1), national_id(2)
ALICE_PHONE, BOB_PHONE = "+8613800000001", "+8613800000002"


@pytest.fixture
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def people(engine: Engine, registry_server: Registry) -> Iterator[None]:
    """Alice with records at two members and one inquiry; Bob, whom she must never see.

    Written through a session that takes SQLite's write lock up front (the test's own session
    reads first, and could not upgrade to a writer while gunicorn's workers are busy).
    """
    material = registry_server.material
    with Session(engine) as session:
        _seed(session, material)
        yield


def _seed(session: Session, material: KeyMaterial) -> None:
    bank, lender = admit(session, "BANKA"), admit(session, "LENDERB")
    seed(session, material, bank, serial=1, phone=ALICE_PHONE, name="李丽", account_ref="ALICE-1")
    seed(
        session,
        material,
        lender,
        serial=1,
        phone=ALICE_PHONE,
        name="李丽",
        account_ref="ALICE-LOAN-7",
        product="online_loan",
        days_past_due=120,
        first_delinquency_date=(dt.date.today() - dt.timedelta(days=119)).isoformat(),
        collection_stage="collection_agency",
        overdue_interest="700.00",
    )
    seed(session, material, bank, serial=2, phone=BOB_PHONE, name="王波", account_ref="BOB-22")
    institution = session.scalar(select(Institution).where(Institution.code == "LENDERB"))
    assert institution is not None
    session.add(
        Inquiry(
            ref=secrets.token_hex(16),
            institution_id=institution.id,
            borrower_index=index_of(material, ALICE),
            purpose="account_review",
            consent_kind="own_record",
            outcome="answered",
            created_at=dt.datetime.now(dt.UTC),
        )
    )
    session.commit()


def latest_code(registry_server: Registry, phone: str) -> str:
    """The newest sign-in code for ``phone``, from the operator CLI like a developer would."""
    lines = run_cli(registry_server.env, "registry", "notifications", "--json").splitlines()
    messages = [json.loads(line) for line in lines]
    texts = [m["text"] for m in messages if m["to"] == phone and m["template"] == "signin_code"]
    assert texts, "no sign-in code in the outbox"
    found = re.search(r"\b(\d{6})\b", texts[-1])
    assert found
    return found.group(1)


def shot(page: Page, artifacts_dir: Path, engine_name: str, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"portal-{engine_name}-{name}.png"), full_page=True)


def test_a_borrower_walks_through_the_portal(
    browser: Browser,
    registry_server: Registry,
    people: None,
    artifacts_dir: Path,
    engine_name: str,
) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", watch)
    base = registry_server.url

    page.goto(f"{base}/portal/")
    expect(page.locator("h1")).to_have_text("登录")
    shot(page, artifacts_dir, engine_name, "01-signin")
    page.fill("#national_id", ALICE)
    page.click("#send-code")
    expect(page.locator("h1")).to_have_text("输入验证码")
    assert ALICE not in page.url
    shot(page, artifacts_dir, engine_name, "02-code")
    page.fill("#code", latest_code(registry_server, ALICE_PHONE))
    page.click("#verify")

    expect(page).to_have_url(f"{base}/portal/records")
    expect(page.locator("#national-id")).to_have_text(ALICE)
    body = page.content()
    assert "李丽" in body and "ALICE-1" in body and "ALICE-LOAN-7" in body
    assert "可疑" in body or "次级" in body, "the 120-day online loan is classified in words"
    assert "委外催收" in body
    assert BOB not in body and "王波" not in body and "BOB-22" not in body
    cookies = {c["name"]: c for c in context.cookies()}
    session_cookie = cookies["__Host-portal"]
    assert session_cookie["httpOnly"] and session_cookie["secure"]
    assert session_cookie["sameSite"] == "Strict"
    shot(page, artifacts_dir, engine_name, "03-records")

    page.click("#nav-inquiries")
    expect(page.locator("#inquiries tbody tr")).to_have_count(1)
    expect(page.locator("#inquiries")).to_contain_text("LENDERB")
    expect(page.locator("#inquiries")).to_contain_text("贷后管理")
    shot(page, artifacts_dir, engine_name, "04-inquiries")

    page.click("#nav-disputes")
    page.select_option("#reason", "wrong_amount")
    page.fill("#text", "利息计算有误")
    page.click("#file-dispute")
    expect(page).to_have_url(f"{base}/portal/disputes")
    expect(page.locator(".dispute")).to_have_count(1)
    expect(page.locator(".dispute")).to_contain_text("利息计算有误")
    shot(page, artifacts_dir, engine_name, "05-disputes")

    page.click("#nav-consents")
    page.select_option("#institution", "LENDERB")
    page.fill("#days", "5")
    page.click("#issue-consent")
    expect(page.locator("#consent-code")).to_have_text(
        re.compile(r"^[A-Z2-9]{4}(-[A-Z2-9]{4}){2}$")
    )
    shot(page, artifacts_dir, engine_name, "06-consent-issued")
    page.locator(".consent button.danger").first.click()
    expect(page).to_have_url(f"{base}/portal/consents")
    expect(page.locator(".consent .state").first).to_have_text("已撤销")
    shot(page, artifacts_dir, engine_name, "07-consent-revoked")

    page.click("#nav-statements")
    page.fill("#statement-text", "本人已与银行协商分期还款。")
    page.click("#save-statement")
    expect(page.locator(".statement-item")).to_contain_text("本人已与银行协商分期还款。")
    shot(page, artifacts_dir, engine_name, "08-statements")

    page.click("#nav-certificates")
    expect(page.locator("#no-certificates")).to_be_visible()
    shot(page, artifacts_dir, engine_name, "09-certificates")

    page.click("#lang-en")
    expect(page.locator("h1")).to_have_text("Clearance certificates")
    page.click("#nav-records")
    expect(page.locator("h1")).to_have_text("My records")
    expect(page.locator("body")).to_contain_text("collection agency")
    shot(page, artifacts_dir, engine_name, "10-records-english")

    with page.expect_download() as download:
        page.click("#nav-file")
    saved = download.value.path()
    envelope = json.loads(Path(saved).read_text())
    assert envelope["payloadType"].startswith("application/vnd.delinquency-registry.borrower-file")

    page.click("#signout")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.goto(f"{base}/portal/records")
    expect(page).to_have_url(f"{base}/portal/")
    shot(page, artifacts_dir, engine_name, "11-signed-out")

    assert not [p for p in problems if "Content Security Policy" in p], problems
    context.close()
