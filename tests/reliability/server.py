"""A registry the way an operator runs it (``registry`` CLI, gunicorn), that a test can kill.

gunicorn runs in its own process group, so ``kill()`` sends SIGKILL to the master and every
worker at once: the crash a power cut or the OOM killer causes, with no graceful shutdown, no
``atexit`` and no chance to finish a transaction.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import ed25519
from registry.cli import cli

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Registry:
    """One instance folder, one database, and a gunicorn serving them on loopback."""

    def __init__(self, home: Path, database_url: str, *, workers: int = 2) -> None:
        self.home = home
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "gunicorn.log"
        metrics = home / "metrics"
        metrics.mkdir(parents=True, exist_ok=True)
        self.settings_env = {
            "REGISTRY_INSTANCE": str(home / "instance"),
            "REGISTRY_DATABASE_URL": database_url,
        }
        self.env = {
            **os.environ,
            **self.settings_env,
            "REGISTRY_WORKERS": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def cli(self, *args: str) -> str:
        """Run a ``registry`` command against this instance (in process, as tests/registry do)."""
        result = CliRunner().invoke(cli, list(args), env=self.settings_env, catch_exceptions=False)
        assert result.exit_code == 0, f"registry {args}: {result.output}"
        return result.output

    def setup(self, *members: str) -> dict[str, tuple[Ed25519PrivateKey, str]]:
        """``registry init`` and ``migrate``, then admit each member with a fresh key."""
        self.cli("init")
        self.cli("migrate")
        keys = {}
        for code in members:
            key = ed25519.generate_private_key()
            pem = self.home / f"{code}.pub.pem"
            pem.write_bytes(ed25519.public_key_to_pem(ed25519.public_key_raw(key)))
            self.cli("members", "add", code, "--name", f"{code} Bank")
            keyid = self.cli("keys", "add", code, str(pem)).strip()
            assert keyid == ed25519.key_id(ed25519.public_key_raw(key))
            keys[code] = (key, keyid)
        return keys

    def start(self) -> None:
        assert self.proc is None, "already running"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--config",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{self.port}",
                "wsgi:app",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited during start-up:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"gunicorn did not become healthy in {START_TIMEOUT:.0f} s")

    def kill(self) -> None:
        """SIGKILL the master and all its workers at once."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        """A graceful stop (SIGTERM to the group), then SIGKILL if it lingers."""
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")
