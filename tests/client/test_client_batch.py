"""`registry-client submit-batch` against the real registry app served over HTTP on 127.0.0.1.

The interruption tests break the client between batches (and after the registry answered but
before the client recorded the answer), then run it again: nothing is sent twice that was
recorded, nothing is stored twice at all, and every envelope ends with exactly one receipt.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from client import keys
from client.batch import Outcome, StateFile, iter_envelopes
from client.cli import cli
from client.errors import TransportError
from client.http import RegistryClient
from crypto import dsse
from factories import national_id, payload, payload_bytes
from registry import members
from registry.models import Report
from registry.payload import PAYLOAD_TYPE


@pytest.fixture
def registry_url(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


class Bank:
    def __init__(self, root: Path, session: Session) -> None:
        self.pair = keys.generate_key_pair(root / "keys")
        self.key = keys.load_private_key(self.pair.private_path)
        when = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        members.admit(session, "BANKA", "Bank A", when)
        members.add_key(session, "BANKA", self.pair.public_path.read_bytes(), when)
        session.commit()

    def envelope(self, doc: dict[str, Any]) -> bytes:
        return dsse.sign_envelope(PAYLOAD_TYPE, payload_bytes(doc), self.key, self.pair.keyid)


@pytest.fixture
def bank(tmp_path: Path, session: Session) -> Bank:
    return Bank(tmp_path, session)


def write_jsonl(
    path: Path, bank: Bank, n: int, *, bad: frozenset[int] = frozenset()
) -> list[bytes]:
    envelopes = []
    for i in range(n):
        doc = payload(
            "BANKA",
            account_ref=f"ACC-{i:05d}",
            borrower={"national_id": national_id(i), "name": "王五", "phone": "+8613900000000"},
        )
        if i in bad:
            doc["days_past_due"] = 2
        envelopes.append(bank.envelope(doc))
    path.write_bytes(b"\n".join(envelopes) + b"\n")
    return envelopes


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def submit_args(source: Path, url: str, bank: Bank, *extra: str) -> list[str | Path]:
    return ["submit-batch", source, "--url", url, "--key", bank.pair.private_path, *extra]


def stored(session: Session) -> int:
    session.expire_all()
    n = session.scalar(select(func.count()).select_from(Report)) or 0
    session.commit()
    return n


def state_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_file_is_sent_in_batches_with_receipts_verified_and_kept(
    registry_url: str, bank: Bank, session: Session, tmp_path: Path
) -> None:
    source = tmp_path / "reports.jsonl"
    sent = write_jsonl(source, bank, 25, bad=frozenset({7}))
    result = run(
        *submit_args(
            source,
            registry_url,
            bank,
            "--batch-size",
            "10",
            "--registry-keys",
            f"{registry_url}/v1/registry-keys",
        )
    )
    assert result.exit_code == 1, result.output
    assert "refused 1 x validation_failed" in result.stderr
    assert result.stderr.count("accepted") >= 3  # a progress line per batch, and the summary
    lines = state_lines(tmp_path / "reports.jsonl.state")
    assert [line["sha256"] for line in lines] == [hashlib.sha256(e).hexdigest() for e in sent]
    assert [line["status"] for line in lines] == [201] * 7 + [422] + [201] * 17
    assert lines[7]["code"] == "validation_failed"
    assert stored(session) == 24


def test_an_interrupted_run_resumes_without_sending_anything_twice(
    registry_url: str,
    bank: Bank,
    session: Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "reports.jsonl"
    sent = write_jsonl(source, bank, 35)
    real = RegistryClient.submit_batch
    batches: list[int] = []

    def answer_lost_on_third(self: RegistryClient, envelopes: list[bytes]) -> list[Outcome]:
        batches.append(len(envelopes))
        outcomes = real(self, envelopes)
        if len(batches) == 3:
            raise TransportError("connection reset (simulated): the answer was lost")
        return outcomes

    monkeypatch.setattr(RegistryClient, "submit_batch", answer_lost_on_third)
    first = run(*submit_args(source, registry_url, bank, "--batch-size", "10", "--retries", "0"))
    assert first.exit_code == 3, first.output
    assert batches == [10, 10, 10]
    assert len(state_lines(tmp_path / "reports.jsonl.state")) == 20
    assert stored(session) == 30  # the registry kept the third batch; the client never heard

    seen: list[list[bytes]] = []

    def recording(self: RegistryClient, envelopes: list[bytes]) -> list[Outcome]:
        seen.append(list(envelopes))
        return real(self, envelopes)

    monkeypatch.setattr(RegistryClient, "submit_batch", recording)
    second = run(*submit_args(source, registry_url, bank, "--batch-size", "10"))
    assert second.exit_code == 0, second.output
    assert [e for batch in seen for e in batch] == sent[20:]
    lines = state_lines(tmp_path / "reports.jsonl.state")
    assert [line["status"] for line in lines] == [201] * 20 + [200] * 10 + [201] * 5
    assert sorted(line["sha256"] for line in lines) == sorted(
        hashlib.sha256(e).hexdigest() for e in sent
    )
    assert stored(session) == 35

    third = run(*submit_args(source, registry_url, bank))
    assert third.exit_code == 0
    assert "35 skipped" in third.stderr
    assert stored(session) == 35


def test_a_state_line_cut_short_by_a_crash_is_sent_again(
    registry_url: str, bank: Bank, session: Session, tmp_path: Path
) -> None:
    source = tmp_path / "reports.jsonl"
    write_jsonl(source, bank, 4)
    state = tmp_path / "reports.jsonl.state"
    assert run(*submit_args(source, registry_url, bank, "--batch-size", "2")).exit_code == 0
    text = state.read_text().splitlines()
    state.write_text("\n".join(text[:3]) + "\n" + text[3][:20])
    assert len(StateFile(state).done) == 3

    again = run(*submit_args(source, registry_url, bank))
    assert again.exit_code == 0, again.output
    assert "1 accepted now (1 of them already before)" in again.stderr
    assert stored(session) == 4


def test_a_directory_of_envelopes_is_sent_in_name_order(
    registry_url: str, bank: Bank, session: Session, tmp_path: Path
) -> None:
    folder = tmp_path / "outbox"
    folder.mkdir()
    envelopes = write_jsonl(tmp_path / "unused.jsonl", bank, 3)
    for i, raw in enumerate(envelopes):
        (folder / f"{i:03d}.json").write_bytes(raw + b"\n")
    (folder / "notes.txt").write_text("not an envelope")
    assert list(iter_envelopes(folder)) == envelopes
    state = tmp_path / "outbox.state"
    result = run(*submit_args(folder, registry_url, bank, "--state", str(state), "--quiet"))
    assert result.exit_code == 0, result.output
    assert [line["status"] for line in state_lines(state)] == [201, 201, 201]
    assert stored(session) == 3


def test_an_unreachable_registry_exits_3_and_records_nothing(bank: Bank, tmp_path: Path) -> None:
    source = tmp_path / "reports.jsonl"
    write_jsonl(source, bank, 2)
    result = run(*submit_args(source, "http://127.0.0.1:9", bank, "--retries", "0", "--quiet"))
    assert result.exit_code == 3
    state = tmp_path / "reports.jsonl.state"
    assert not state.exists() or state.read_text() == ""
