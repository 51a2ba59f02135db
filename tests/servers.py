"""Real registry processes for the end-to-end tests: the CLI, and gunicorn on a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_cli(
    env: dict[str, str],
    *args: str,
    ok: tuple[int, ...] = (0,),
    timeout: int = 300,
    with_stderr: bool = False,
) -> str:
    """Run one of the project's console scripts; assert its exit code, return what it printed."""
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode in ok, f"{args[:3]}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr if with_stderr else done.stdout


@contextmanager
def gunicorn(env: dict[str, str], log_path: Path, *, ready: str = "/healthz") -> Iterator[int]:
    """``make run`` in small: init, migrate, serve; yields the port once ``ready`` answers 200."""
    run_cli(env, "registry", "init")
    run_cli(env, "registry", "migrate")
    port = free_port()
    with log_path.open("wb") as log:
        command = [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py"]
        proc = subprocess.Popen(
            [*command, "--bind", f"127.0.0.1:{port}", "wsgi:app"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait(f"http://127.0.0.1:{port}{ready}", proc, log_path)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _wait(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.2)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise AssertionError(f"gunicorn did not answer {url} with 200 in 30 s\n{tail}")
