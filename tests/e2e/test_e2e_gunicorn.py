"""End to end, as an operator and a bank would do it: CLI, gunicorn, registry-client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from factories import payload

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


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


def _wait_healthy(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError("gunicorn exited during start-up")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gunicorn did not become healthy in 30 s")


@pytest.fixture
def server(instance_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    _run(instance_env, "registry", "init")
    _run(instance_env, "registry", "migrate")
    port = _free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "--config",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "wsgi:app",
        ],
        env=instance_env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_a_member_created_with_the_cli_submits_and_verifies_a_receipt(
    server: str, instance_env: dict[str, str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keyid = _run(instance_env, "registry-client", "keygen", "--out-dir", str(keys)).strip()
    [public] = list(keys.glob("*.pub.pem"))
    [private] = [p for p in keys.glob("*.pem") if p != public]
    _run(instance_env, "registry", "members", "add", "BANKA", "--name", "Bank A")
    assert _run(instance_env, "registry", "keys", "add", "BANKA", str(public)).strip() == keyid

    report = tmp_path / "report.json"
    report.write_text(json.dumps(payload("BANKA"), ensure_ascii=False), encoding="utf-8")
    envelope = tmp_path / "envelope.json"
    _run(
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
    _run(
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
    verified = _run(
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
    _run(
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
    _run(env, "registry", "init")
    done = subprocess.run(
        [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{_free_port()}", "wsgi:app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "registry migrate" in done.stdout + done.stderr
