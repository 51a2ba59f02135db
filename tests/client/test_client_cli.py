"""The registry-client command through click's CliRunner, against the local fake registry."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from test_client_fakes import Answer, FakeRegistry, problem, report_document, running_registry

from client import keys
from client.cli import cli
from client.reports import REPORT_PAYLOAD_TYPE, serialize_payload
from crypto import dsse, ed25519


class Bank:
    """A member's working directory: key pair, a report file, its envelope."""

    def __init__(self, root: Path) -> None:
        self.pair = keys.generate_key_pair(root / "keys")
        self.key = keys.load_private_key(self.pair.private_path)
        self.report = root / "report.json"
        self.report.write_bytes(serialize_payload(report_document()) + b"\n")
        self.envelope = root / "envelope.json"


@pytest.fixture
def bank(tmp_path: Path) -> Bank:
    return Bank(tmp_path)


@pytest.fixture
def fake(bank: Bank) -> Iterator[FakeRegistry]:
    with running_registry(bank.key) as registry:
        yield registry


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def signed_envelope(bank: Bank) -> bytes:
    result = run("sign", bank.report, "--key", bank.pair.private_path, "--out", bank.envelope)
    assert result.exit_code == 0, result.output
    return bank.envelope.read_bytes()


def test_keygen_prints_the_key_id_and_writes_the_pair(tmp_path: Path) -> None:
    result = run("keygen", "--out-dir", tmp_path / "k", "--name", "bank-a")
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "k" / "bank-a.key.pem", tmp_path / "k" / "bank-a.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    raw = keys.load_public_key(public)
    assert result.stdout.strip() == ed25519.key_id(raw)


def test_keygen_refuses_to_overwrite(bank: Bank) -> None:
    result = run("keygen", "--out-dir", bank.pair.private_path.parent)
    assert result.exit_code == 1
    assert "already exists" in result.stderr


def test_keyid_prints_the_id_of_a_public_pem(bank: Bank) -> None:
    result = run("keyid", bank.pair.public_path)
    assert (result.exit_code, result.stdout.strip()) == (0, bank.pair.keyid)


def test_sign_writes_an_envelope_over_the_exact_file_bytes(bank: Bank) -> None:
    envelope = dsse.parse_envelope(signed_envelope(bank))
    assert envelope.payload == bank.report.read_bytes()
    assert envelope.payload_type == REPORT_PAYLOAD_TYPE
    raw = ed25519.public_key_raw(bank.key)
    assert dsse.verify_envelope(envelope, {bank.pair.keyid: raw}) == bank.pair.keyid


def test_sign_to_stdout_prints_the_envelope_bytes(bank: Bank) -> None:
    result = run("sign", bank.report, "--key", bank.pair.private_path)
    assert result.exit_code == 0
    assert dsse.parse_envelope(result.stdout_bytes).payload == bank.report.read_bytes()


def test_sign_refuses_a_report_with_floats(bank: Bank) -> None:
    bank.report.write_text('{"penalty": 100.5}')
    result = run("sign", bank.report, "--key", bank.pair.private_path)
    assert result.exit_code == 1
    assert "float_not_allowed" in result.stderr


def test_submit_prints_the_receipt_and_keeps_it(
    bank: Bank, fake: FakeRegistry, tmp_path: Path
) -> None:
    envelope = signed_envelope(bank)
    receipt = fake.registry.receipt(envelope)
    fake.answer(Answer(201, receipt))
    keys_file = tmp_path / "registry-keys.json"
    keys_file.write_text(json.dumps(fake.registry.keys_document()))

    result = run(
        "submit",
        bank.envelope,
        "--url",
        fake.base_url,
        "--key",
        bank.pair.private_path,
        "--receipt-out",
        tmp_path / "receipt.json",
        "--registry-keys",
        keys_file,
    )

    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == receipt
    assert (tmp_path / "receipt.json").read_bytes() == receipt
    assert "receipt verified" in result.stderr and "201" in result.stderr
    assert fake.seen[0].body == envelope


def test_submit_shows_the_problem_and_exits_non_zero(bank: Bank, fake: FakeRegistry) -> None:
    signed_envelope(bank)
    fake.answer(
        problem(
            409,
            "report_id_conflict",
            "this report id was already accepted with different bytes",
            report_id="r-client-0001",
        )
    )
    result = run("submit", bank.envelope, "--url", fake.base_url, "--key", bank.pair.private_path)
    assert result.exit_code == 1
    assert "409 report_id_conflict" in result.stderr
    assert "already accepted with different bytes" in result.stderr
    assert result.stdout == ""


def test_submit_lists_field_errors(bank: Bank, fake: FakeRegistry) -> None:
    signed_envelope(bank)
    errors = [{"field": "borrower.national_id", "rule": "gb11643_check", "message": "bad"}]
    fake.answer(problem(422, "validation_failed", "rules broken", errors=errors))
    result = run("submit", bank.envelope, "--url", fake.base_url, "--key", bank.pair.private_path)
    assert result.exit_code == 1
    assert "borrower.national_id: gb11643_check - bad" in result.stderr


def test_submit_exits_3_when_the_registry_stays_unavailable(bank: Bank, fake: FakeRegistry) -> None:
    signed_envelope(bank)
    busy = problem(503, "unavailable", "maintenance")
    busy.headers["Retry-After"] = "0"
    fake.answer(busy, busy)
    result = run(
        "submit",
        bank.envelope,
        "--url",
        fake.base_url,
        "--key",
        bank.pair.private_path,
        "--retries",
        "1",
    )
    assert result.exit_code == 3
    assert len(fake.seen) == 2


def test_receipt_get_prints_the_receipt(bank: Bank, fake: FakeRegistry) -> None:
    receipt = fake.registry.receipt(signed_envelope(bank))
    fake.answer(Answer(200, receipt))
    result = run(
        "receipt", "get", "r-client-0001", "--url", fake.base_url, "--key", bank.pair.private_path
    )
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == receipt
    assert fake.seen[0].path == "/v1/receipts/r-client-0001"


def test_receipt_verify_with_a_keys_url_and_the_envelope(
    bank: Bank, fake: FakeRegistry, tmp_path: Path
) -> None:
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_bytes(fake.registry.receipt(signed_envelope(bank)))
    result = run(
        "receipt",
        "verify",
        receipt_file,
        "--registry-keys",
        f"{fake.base_url}/v1/registry-keys",
        "--envelope",
        bank.envelope,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["report_id"] == "r-client-0001"


def test_receipt_verify_names_the_failed_check(
    bank: Bank, fake: FakeRegistry, tmp_path: Path
) -> None:
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_bytes(fake.registry.receipt(signed_envelope(bank)))
    bank.envelope.write_bytes(bank.envelope.read_bytes() + b" ")
    pem = tmp_path / "registry.pem"
    pem.write_bytes(ed25519.public_key_to_pem(fake.registry.raw))
    result = run(
        "receipt", "verify", receipt_file, "--registry-keys", pem, "--envelope", bank.envelope
    )
    assert result.exit_code == 1
    assert "receipt invalid: envelope_mismatch" in result.stderr
