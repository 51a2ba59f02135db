"""The operator's ``registry`` command, end to end on a database of its own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.orm import Session

from crypto import ed25519
from registry.cli import cli
from registry.db import make_engine
from registry.settings import Settings
from registry.sweep_log import sweep_totals


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"REGISTRY_INSTANCE": str(tmp_path / "instance")}


def run(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


def public_pem(tmp_path: Path, name: str = "pub.pem") -> tuple[Path, str]:
    raw = ed25519.public_key_raw(ed25519.generate_private_key())
    path = tmp_path / name
    path.write_bytes(ed25519.public_key_to_pem(raw))
    return path, ed25519.key_id(raw)


def test_init_creates_secrets_0600_and_never_overwrites(env: dict[str, str]) -> None:
    first = run(env, "init")
    assert first.exit_code == 0 and first.output.count("created") == 3
    instance = Path(env["REGISTRY_INSTANCE"])
    files = sorted(p.name for p in instance.iterdir())
    assert files == ["blind-index.key", "master.keys", "registry-signing.key"]
    before = {p.name: p.read_bytes() for p in instance.iterdir()}
    for path in instance.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = run(env, "init")
    assert "nothing created" in second.output
    assert {p.name: p.read_bytes() for p in instance.iterdir()} == before


def test_members_and_keys_lifecycle(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "init").exit_code == 0
    assert run(env, "migrate").stdout.strip() == "database at head"
    database = Path(env["REGISTRY_INSTANCE"]) / "registry.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert run(env, "members", "add", "BANKA", "--name", "Bank A").exit_code == 0
    listed = run(env, "members", "list").output
    assert "BANKA" in listed and "active" in listed and "Bank A" in listed

    pem, keyid = public_pem(tmp_path)
    added = run(env, "keys", "add", "BANKA", str(pem), "--not-after", "2099-01-01T00:00:00Z")
    assert added.output.strip() == keyid
    assert "valid" in run(env, "keys", "list", "BANKA").output

    revoked = run(env, "keys", "revoke", keyid)
    assert revoked.exit_code == 0
    assert "revoked" in run(env, "keys", "list").output

    assert run(env, "members", "suspend", "BANKA").exit_code == 0
    assert "suspended" in run(env, "members", "list").output
    assert run(env, "members", "reinstate", "BANKA").exit_code == 0
    assert "active" in run(env, "members", "list").output


def test_errors_are_explained_without_a_traceback(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "init")
    run(env, "migrate")
    run(env, "members", "add", "BANKA", "--name", "Bank A")
    duplicate = run(env, "members", "add", "BANKA", "--name", "Again")
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    bad_code = run(env, "members", "add", "bank a", "--name", "x")
    assert bad_code.exit_code != 0 and "institution code" in bad_code.output
    not_a_key = tmp_path / "junk.pem"
    not_a_key.write_text("junk")
    assert "not an Ed25519 public key" in run(env, "keys", "add", "BANKA", str(not_a_key)).output
    pem, _ = public_pem(tmp_path)
    assert run(env, "keys", "add", "NOPE", str(pem)).exit_code != 0
    again = run(env, "keys", "add", "BANKA", str(pem))
    assert run(env, "keys", "add", "BANKA", str(pem)).exit_code != 0 and again.exit_code == 0
    window = run(
        env,
        "keys",
        "add",
        "BANKA",
        str(public_pem(tmp_path, "k2.pem")[0]),
        "--not-before",
        "2030-01-01",
        "--not-after",
        "2029-01-01",
    )
    assert window.exit_code != 0 and "not_after" in window.output
    assert run(env, "keys", "revoke", "0" * 32).exit_code != 0


def test_operators_lifecycle_and_keys_are_never_shared(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "init")
    run(env, "migrate")
    pem, keyid = public_pem(tmp_path)
    assert run(env, "operators", "add", "ops-alice", str(pem)).output.strip() == keyid
    assert "ops-alice" in run(env, "operators", "list").output
    run(env, "members", "add", "BANKA", "--name", "Bank A")
    reused = run(env, "keys", "add", "BANKA", str(pem))
    assert reused.exit_code != 0 and "already registered" in reused.output
    member_pem, _ = public_pem(tmp_path, "member.pem")
    assert run(env, "keys", "add", "BANKA", str(member_pem)).exit_code == 0
    crossed = run(env, "operators", "add", "ops-bob", str(member_pem))
    assert crossed.exit_code != 0 and "already registered" in crossed.output
    assert run(env, "operators", "add", "Bad Name", str(public_pem(tmp_path, "x.pem")[0])).exit_code
    assert run(env, "operators", "revoke", "ops-alice").exit_code == 0
    listed = run(env, "operators", "list").output.splitlines()[1]
    assert listed.split()[0] == "ops-alice" and listed.split()[-1] != "-"


def test_sweep_runs_every_rule_and_worker_once_exits(env: dict[str, str]) -> None:
    run(env, "init")
    run(env, "migrate")
    swept = run(env, "sweep")
    assert swept.exit_code == 0
    expected = ("max_age=0", "nonces purged=0", "disputes expired=0", "inquiries expired=0")
    for rule in expected:
        assert rule in swept.output
    worker = run(env, "worker", "--once")
    assert worker.exit_code == 0 and "max_age=0" in worker.output
    # Both runs left their totals where /metrics reads them (registry.sweep_log).
    settings = Settings.from_env({**os.environ, **env})
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            totals = {t.rule: (t.cleared, t.sweeps) for t in sweep_totals(session)}
    finally:
        engine.dispose()
    assert totals["max_age"] == (0, 2)
