"""Under gunicorn with several workers: batches from the CLI, readiness, metrics, JSON logs."""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import gunicorn, run_cli
from sqlalchemy import Engine

from client import keys
from crypto import httpsig
from factories import national_id, payload

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(tmp_path: Path, engine: Engine, database_url: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        {
            "REGISTRY_INSTANCE": str(tmp_path / "instance"),
            "REGISTRY_DATABASE_URL": database_url,
            "REGISTRY_WORKERS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        }
    )
    return out


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log_path = tmp_path / "gunicorn.log"
    with gunicorn(env, log_path, ready="/readyz") as port:
        yield f"http://127.0.0.1:{port}", log_path


def _metrics(url: str, key_path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    key = keys.load_private_key(key_path)
    headers = httpsig.sign_request(
        method="GET",
        url=f"{url}/metrics",
        headers={},
        body=b"",
        key=key,
        keyid=keys.key_id(key),
        created=int(time.time()),
        nonce=secrets.token_urlsafe(24),
    )
    request = urllib.request.Request(f"{url}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_batches_metrics_and_logs_under_gunicorn(
    server: tuple[str, Path], env: dict[str, str], tmp_path: Path
) -> None:
    url, log_path = server
    member = keys.generate_key_pair(tmp_path / "member")
    operator = keys.generate_key_pair(tmp_path / "operator")
    run_cli(env, "registry", "members", "add", "BANKA", "--name", "Bank A")
    run_cli(env, "registry", "keys", "add", "BANKA", str(member.public_path))
    run_cli(env, "registry", "operators", "add", "ops-e2e", str(operator.public_path))

    reports = tmp_path / "reports"
    reports.mkdir()
    ids = []
    for i in range(30):
        doc = payload(
            "BANKA",
            account_ref=f"ACC-{i:04d}",
            borrower={"national_id": national_id(i), "name": "赵六", "phone": "+8613700000000"},
        )
        ids.append(doc["report_id"])
        (reports / f"{i:03d}.report.json").write_text(json.dumps(doc, ensure_ascii=False))
    envelopes = tmp_path / "envelopes.jsonl"
    with envelopes.open("wb") as out:
        for i in range(30):
            signed = tmp_path / "one.json"
            run_cli(
                env,
                "registry-client",
                "sign",
                str(reports / f"{i:03d}.report.json"),
                "--key",
                str(member.private_path),
                "--out",
                str(signed),
            )
            out.write(signed.read_bytes() + b"\n")

    output = run_cli(
        env,
        "registry-client",
        "submit-batch",
        str(envelopes),
        "--url",
        url,
        "--key",
        str(member.private_path),
        "--batch-size",
        "10",
        "--registry-keys",
        f"{url}/v1/registry-keys",
        with_stderr=True,
    )
    assert "30 accepted now" in output

    for _ in range(8):
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert response.status == 200
    found = _metrics(url, operator.private_path)

    def value(name: str, **labels: str) -> float:
        return found.get((name, frozenset(labels.items())), 0.0)

    assert (
        value("registry_http_requests_total", endpoint="public.Health", method="GET", status="200")
        == 8
    )
    batch_posts = value(
        "registry_http_requests_total", endpoint="members.ReportBatch", method="POST", status="200"
    )
    assert batch_posts == 3
    assert value("registry_reports_total", outcome="accepted", reason="new", via="batch") == 30

    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{url}/metrics", timeout=5)
    assert anonymous.value.code == 401
    anonymous.value.close()

    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]  # every line is one JSON object
    requests = [d for d in documents if d["logger"] == "registry.request"]
    assert sum(d["endpoint"] == "members.ReportBatch" for d in requests) == 3
    assert all(d.get("request_id") and d.get("duration_ms") is not None for d in requests)
    assert any(d["logger"].startswith("gunicorn") for d in documents)
    text = log_path.read_text()
    for secret in (*ids, national_id(3), "ACC-0003", "赵六"):
        assert secret not in text
