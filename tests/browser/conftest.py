"""A real registry (gunicorn, its own instance) and Debian's Chromium for the browser tests.

Chromium comes from the system package (``make test`` installs it); Playwright never downloads
a browser here. A missing Chromium fails the tests, under CI and elsewhere: no silent skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import BIN, CHROMIUM, ROOT, Registry, free_port, run, wait_healthy
from sqlalchemy import Engine

from registry.secrets import load_key_material
from registry.settings import Settings


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
    run(env, "registry", "init")
    run(env, "registry", "migrate")
    port = free_port()
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
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc)
        except AssertionError as exc:
            log.flush()
            tail = (tmp_path / "gunicorn.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}\n{tail}") from None
        settings = Settings.from_env(env)
        yield Registry(
            url=f"http://localhost:{port}",
            env=env,
            settings=settings,
            material=load_key_material(settings),
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
