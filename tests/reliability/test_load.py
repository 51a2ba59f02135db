"""A bounded load test on loopback: two members submitting, three querying, for a fixed time.

Every request must succeed (error rate zero); the latencies are printed, never asserted (a
shared test machine has no stable clock to assert on). ``LOAD_SECONDS`` sets the duration
(5 s by default, 60 s under ``SOAK=1``). For figures worth quoting, use ``bench/``.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from client.http import RegistryClient
from crypto import httpsig
from factories import Member, envelope, national_id, payload
from reliability.server import Registry

pytestmark = pytest.mark.e2e

SOAK = os.environ.get("SOAK") == "1"
SECONDS = float(os.environ.get("LOAD_SECONDS", "60" if SOAK else "5"))
PEOPLE = 4


@dataclass
class Tally:
    """Latencies and failures of one kind of request, shared by the threads doing it."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, call: Callable[..., object], *args: object) -> None:
        started = time.perf_counter()
        try:
            call(*args)
        except Exception as exc:
            with self.lock:
                self.failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            return
        with self.lock:
            self.latencies.append(time.perf_counter() - started)

    def summary(self, name: str, seconds: float) -> str:
        done = sorted(self.latencies)
        if not done:
            return f"{name}: nothing completed"
        p99 = done[min(len(done) - 1, int(len(done) * 0.99))]
        return (
            f"{name:10} {len(done):6} ok {len(self.failures):4} errors "
            f"{len(done) / seconds:7.1f}/s  p50 {statistics.median(done) * 1000:7.1f} ms  "
            f"p99 {p99 * 1000:7.1f} ms  max {done[-1] * 1000:7.1f} ms"
        )


def signed_post(registry: Registry, member: Member, path: str, body: bytes) -> bytes:
    """One signed POST on its own connection; anything but 200 is an error."""
    headers = {"Content-Type": "application/json"}
    headers.update(
        httpsig.sign_request(
            method="POST",
            url=registry.url + path,
            headers=headers,
            body=body,
            key=member.key,
            keyid=member.keyid,
            created=int(time.time()),
            nonce=secrets.token_urlsafe(24),
        )
    )
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise AssertionError(f"{path}: {response.status} {answer[:200]!r}")
    return answer


def person(serial: int) -> dict[str, str]:
    return {
        "national_id": national_id(500 + serial),
        "name": "慕容复",
        "phone": f"+86137{serial:08d}",
        "address": "苏州市姑苏区",
    }


def test_two_members_submitting_and_three_querying_see_no_errors(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = registry.setup("BANKA", "BANKB")
    registry.start()
    members = [Member(code, *keys[code]) for code in ("BANKA", "BANKB")]
    clients = {m.code: RegistryClient(registry.url, m.key, m.keyid, retries=0) for m in members}
    receipts: dict[str, list[str]] = {m.code: [] for m in members}
    for member in members:  # every member has its own record on each person: account review
        for serial in range(PEOPLE):
            doc = payload(member, account_ref=f"SEED-{serial}", borrower=person(serial))
            clients[member.code].submit(envelope(member, doc))
            receipts[member.code].append(doc["report_id"])

    stop = threading.Event()
    tallies = {name: Tally() for name in ("submit", "inquire", "receipt")}

    def submitter(member: Member) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            doc = payload(member, account_ref=f"LOAD-{n}", borrower=person(n % PEOPLE))
            raw = envelope(member, doc)
            tallies["submit"].timed(clients[member.code].submit, raw)

    def inquirer(member: Member) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            body = {"national_id": person(n % PEOPLE)["national_id"], "purpose": "account_review"}
            raw = json.dumps(body).encode()
            tallies["inquire"].timed(signed_post, registry, member, "/v1/inquiries", raw)

    def receipt_reader(member: Member) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            report_id = receipts[member.code][n % PEOPLE]
            tallies["receipt"].timed(clients[member.code].receipt, report_id)

    a, b = members
    threads = [
        threading.Thread(target=submitter, args=(a,)),
        threading.Thread(target=submitter, args=(b,)),
        threading.Thread(target=inquirer, args=(a,)),
        threading.Thread(target=inquirer, args=(b,)),
        threading.Thread(target=receipt_reader, args=(a,)),
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    stop.wait(SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    elapsed = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "a load thread hung"

    with capsys.disabled():  # the figures are for people: shown even when output is captured
        print(f"\nload on {registry.database_url.split(':', 1)[0]}, {elapsed:.1f} s, 2 workers:")
        for name, tally in tallies.items():
            print("  " + tally.summary(name, elapsed))
    failures = [f"{n}: {f}" for n, t in tallies.items() for f in t.failures]
    assert failures == [], "\n".join(failures[:20])
    assert all(t.latencies for t in tallies.values()), "a kind of request never completed"
