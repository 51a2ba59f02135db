"""gunicorn.conf.py: the worker hooks, run the way gunicorn runs them (in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc, runpy
conf = runpy.run_path("gunicorn.conf.py")
tracked = len(gc.get_objects())
conf["post_worker_init"](None)
print(gc.get_freeze_count(), tracked, len(gc.get_objects()))
"""


def run_probe(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` beside gunicorn.conf.py in a fresh interpreter, as gunicorn would load it."""
    with tempfile.TemporaryDirectory() as metrics:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={"PROMETHEUS_MULTIPROC_DIR": metrics, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )


def test_a_worker_freezes_what_loading_it_allocated() -> None:
    done = run_probe(PROBE)
    assert done.returncode == 0, done.stderr[-2000:]
    frozen, tracked_before, tracked_after = map(int, done.stdout.split())
    assert frozen > 0
    assert tracked_after < tracked_before // 10


ACCESS_PROBE = """
import runpy
from gunicorn.config import Config
conf = runpy.run_path("gunicorn.conf.py")
cfg = Config()
for name in ("logger_class", "logconfig_dict", "accesslog"):
    cfg.set(name, conf[name])
logger = cfg.logger_class(cfg)

class Untouchable:
    def __getattr__(self, name):
        raise AssertionError(f"the access log read {name}")

logger.access(Untouchable(), Untouchable(), Untouchable(), Untouchable())
print(type(logger).__name__)
"""


def test_gunicorn_builds_no_access_record_the_app_logs_requests_itself() -> None:
    """The request log is the app's (``api.observability``: no path, query or headers);
    gunicorn's access log, configured through ``logconfig_dict``, would read them all."""
    done = run_probe(ACCESS_PROBE)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["GunicornLogger"]
