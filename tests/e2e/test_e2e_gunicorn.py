"""End to end, as an operator and a bank would do it: CLI, gunicorn, registry-client."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import BIN, ROOT, free_port, gunicorn, run_cli
from sqlalchemy import Engine

from factories import payload

pytestmark = pytest.mark.e2e


@pytest.fixture
def instance_env(tmp_path: Path, engine: Engine, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "REGISTRY_INSTANCE": str(tmp_path / "instance"),
            "REGISTRY_DATABASE_URL": database_url,
            "REGISTRY_WORKERS": "2",
        }
    )
    return env


@pytest.fixture
def server(instance_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    with gunicorn(instance_env, tmp_path / "gunicorn.log") as port:
        yield f"http://127.0.0.1:{port}"


def test_a_member_created_with_the_cli_submits_and_verifies_a_receipt(
    server: str, instance_env: dict[str, str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keyid = run_cli(instance_env, "registry-client", "keygen", "--out-dir", str(keys)).strip()
    [public] = list(keys.glob("*.pub.pem"))
    [private] = [p for p in keys.glob("*.pem") if p != public]
    run_cli(instance_env, "registry", "members", "add", "BANKA", "--name", "Bank A")
    assert run_cli(instance_env, "registry", "keys", "add", "BANKA", str(public)).strip() == keyid

    report = tmp_path / "report.json"
    report.write_text(json.dumps(payload("BANKA"), ensure_ascii=False), encoding="utf-8")
    envelope = tmp_path / "envelope.json"
    run_cli(
        instance_env,
        "registry-client",
        "sign",
        str(report),
        "--key",
        str(private),
        "--out",
        str(envelope),
    )
    receipt = tmp_path / "receipt.json"
    run_cli(
        instance_env,
        "registry-client",
        "submit",
        str(envelope),
        "--url",
        server,
        "--key",
        str(private),
        "--receipt-out",
        str(receipt),
    )
    verified = run_cli(
        instance_env,
        "registry-client",
        "receipt",
        "verify",
        str(receipt),
        "--registry-keys",
        f"{server}/v1/registry-keys",
        "--envelope",
        str(envelope),
    )
    assert json.loads(report.read_text())["report_id"] in verified

    again = tmp_path / "receipt-again.json"
    run_cli(
        instance_env,
        "registry-client",
        "submit",
        str(envelope),
        "--url",
        server,
        "--key",
        str(private),
        "--receipt-out",
        str(again),
    )
    assert again.read_bytes() == receipt.read_bytes()


def test_gunicorn_refuses_a_database_behind_the_head(
    instance_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(instance_env, REGISTRY_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    run_cli(env, "registry", "init")
    done = subprocess.run(
        [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{free_port()}", "wsgi:app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "registry migrate" in done.stdout + done.stderr
