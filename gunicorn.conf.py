"""gunicorn settings for the registry (`make run`, production and the benchmarks).

Every value can be overridden by an environment variable (named below) or on the command line.
See docs/operations.md for the reasoning and for running several hosts.
"""

import gc
import json
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Any

# --- metrics: prometheus-client multiprocess mode ----------------------------------------
# NOTE: this must be set before any worker imports prometheus_client (workers import the app
# after the fork, so setting it here in the master is early enough). Each worker writes its
# own files there; /metrics adds them up.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
    tempfile.gettempdir(), f"registry-metrics-{os.getpid()}"
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

# --- workers -------------------------------------------------------------------------------
# The work is CPU-bound (Ed25519, AES-GCM, JSON) with short database waits: 2 x cores (the
# classic 2n+1, less the one: the database usually runs beside the app on small hosts).
workers = int(os.environ.get("REGISTRY_WORKERS", max(2, multiprocessing.cpu_count() * 2)))
worker_class = "sync"
# A batch of 10,000 reports takes about ten seconds at the measured rates, far longer on a
# loaded host (docs/operations.md): the timeout must cover the largest batch, or the worker is
# killed half-way (the batch is then resent, safely, but the work is lost). Members are
# advised to send 1,000 per batch.
timeout = int(os.environ.get("REGISTRY_WORKER_TIMEOUT", "300"))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then (with jitter, so they never all restart at once).
max_requests = int(os.environ.get("REGISTRY_MAX_REQUESTS", "10000"))
max_requests_jitter = max_requests // 10
# Request line and headers stay small; the body limits are the app's (1 MiB, 32 MiB batches).
limit_request_line = 8190
limit_request_fields = 50
forwarded_allow_ips = os.environ.get("REGISTRY_FORWARDED_ALLOW_IPS", "127.0.0.1")

# --- logs: JSON lines on stderr --------------------------------------------------------------
# NOTE: the access log is the app's own "registry.request" line (endpoint, method, status,
# duration, request id; never the path, query string, headers, body or client address), so
# gunicorn's access log, which can only print the raw path, is off. gunicorn's error log uses the
# same JSON formatter.
accesslog = None
logger_class = "api.observability.GunicornLogger"
errorlog = "-"
loglevel = os.environ.get("REGISTRY_LOG_LEVEL", "info")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "api.observability.JsonFormatter"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["stderr"], "level": loglevel.upper()},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
    },
}


def _clear_metrics_dir() -> None:
    path = Path(_metrics_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def on_starting(server: Any) -> None:
    """Start with an empty metrics directory: files of a previous run would be counted again."""
    _clear_metrics_dir()


def child_exit(server: Any, worker: Any) -> None:
    """Tell prometheus-client a worker died (its live gauges go; its counters are kept)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    _clear_metrics_dir()


def post_worker_init(worker: Any) -> None:
    """Move what loading the app allocated out of the garbage collector's sight.

    Those objects live as long as the worker. Left in the tracked generations, every full
    collection walks all of them: a pause of tens of milliseconds that lands on whichever
    request is running (the inquiry p99 in docs/operations.md). Collected once, then frozen.
    """
    gc.collect()
    gc.freeze()


def when_ready(server: Any) -> None:
    """Log the settings that matter when comparing runs (benchmarks quote them)."""
    settings = {"workers": workers, "timeout": timeout, "max_requests": max_requests}
    server.log.info("registry ready %s", json.dumps(settings))
