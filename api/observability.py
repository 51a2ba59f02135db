"""Operations: structured JSON logs, Prometheus metrics, and ``/metrics`` for operators.

What may be logged or labelled is decided here, once: the Flask endpoint name (never the raw
path, which can hold a report id), the method, the status, durations, stable error codes and
inquiry purposes. Never a body, a query string, a header, an address or any personal data.

Other code records domain events through the small ``count_*`` functions below; the inquiry
views call :func:`count_inquiry`, the report views :func:`count_report`.

Under gunicorn the metrics use prometheus-client's multiprocess mode: ``gunicorn.conf.py`` sets
``PROMETHEUS_MULTIPROC_DIR`` (before this module is imported by any worker), empties it at
start and marks dead workers; ``/metrics`` then aggregates every worker's file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
import sys
import time
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from flask.views import MethodView
from flask_smorest import Blueprint
from gunicorn import glogging
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from api.errors import ProblemSchema
from api.services import db
from api.signing import require_operator
from registry.clearing import CLEARINGS_NOTED
from registry.models import SweepTotal
from registry.sweep_log import sweep_totals

REQUEST_ID_HEADER = "X-Request-Id"
# An upstream proxy's request id is kept only when it is plainly an id (no room for data).
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{8,64}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LOG_FIELDS = ("request_id", "endpoint", "method", "status", "duration_ms")

HTTP_REQUESTS = Counter(
    "registry_http_requests",
    "HTTP requests answered, by Flask endpoint, method and status",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "registry_http_request_duration_seconds",
    "Time to answer an HTTP request (signature check included), by Flask endpoint",
    ["endpoint", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REPORTS = Counter(
    "registry_reports",
    "Reports accepted (reason new or resent) and refused (reason = the problem's code)",
    ["outcome", "reason", "via"],
)
INQUIRIES = Counter(
    "registry_inquiries",
    "Inquiries by declared purpose and outcome",
    ["purpose", "outcome"],
)
CLEARINGS = Counter(
    "registry_clearings",
    "Records cleared (deleted and crypto-shredded) by this process, by reason",
    ["reason"],
)


# --- domain counters, for the views ------------------------------------------------------


def count_report(*, accepted: bool, reason: str, via: str = "single") -> None:
    """One report accepted (``reason`` new/resent) or refused (``reason`` = stable error code)."""
    REPORTS.labels("accepted" if accepted else "refused", reason, via).inc()


def count_inquiry(purpose: str, outcome: str) -> None:
    """One inquiry: its declared purpose and outcome (for example ``answered``, ``refused``).

    Both must come from fixed vocabularies (purpose codes, outcome codes), never from input.
    """
    INQUIRIES.labels(purpose, outcome).inc()


def count_clearing(reason: str, count: int = 1) -> None:
    """``count`` records cleared, by ``ClearReason`` value."""
    CLEARINGS.labels(reason).inc(count)


_SAVEPOINT_MARKS = "observability.clearing_marks"


def watch_clearings(sessions: sessionmaker[Session]) -> None:
    """Count clearings made through this session factory once, when their transaction commits.

    Clearing code notes how many records it cleared, and why, in ``session.info``
    (``registry.clearing.note_clearings``); this keeps ``registry`` free of any metrics code and
    needs no ORM tombstones. A savepoint that rolls
    back drops what was noted inside it; releasing a savepoint counts nothing yet (the enclosing
    transaction may still roll back); the outermost transaction's end, committed or not, leaves
    nothing behind for the session's next transaction.
    """

    @event.listens_for(sessions, "after_transaction_create")
    def _mark(session: Session, transaction: SessionTransaction) -> None:
        if transaction.nested:
            marks = session.info.setdefault(_SAVEPOINT_MARKS, {})
            marks[transaction] = len(session.info.get(CLEARINGS_NOTED, ()))

    @event.listens_for(sessions, "after_rollback")
    def _drop(session: Session) -> None:
        # Fired for the savepoint or outermost transaction actually rolled back, while open.
        noted = session.info.get(CLEARINGS_NOTED)
        if noted:
            savepoint = session.get_nested_transaction()
            del noted[session.info.get(_SAVEPOINT_MARKS, {}).get(savepoint, 0) :]

    @event.listens_for(sessions, "after_commit")
    def _count(session: Session) -> None:
        if session.in_nested_transaction():
            return
        for reason, cleared in session.info.pop(CLEARINGS_NOTED, ()):
            count_clearing(reason, cleared)

    @event.listens_for(sessions, "after_transaction_end")
    def _end(session: Session, transaction: SessionTransaction) -> None:
        if transaction.nested:
            session.info.get(_SAVEPOINT_MARKS, {}).pop(transaction, None)
        elif transaction.parent is None:
            session.info.pop(CLEARINGS_NOTED, None)
            session.info.pop(_SAVEPOINT_MARKS, None)


# --- JSON logs -----------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the request's fields.

    An exception is logged by type only: its message could quote data from a request.
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if has_request_context():
            # Any handler with this formatter (gunicorn's too) names the request it served.
            doc.setdefault("request_id", g.get("request_id"))
            doc.setdefault("endpoint", _endpoint())
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def json_handler() -> logging.Handler:
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter())
    return handler


def configure_logging(level: str | None = None) -> None:
    """Send the root logger's records to stderr as JSON lines (idempotent).

    gunicorn's own error log is configured the same way in ``gunicorn.conf.py``.
    """
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.addHandler(json_handler())
    root.setLevel(level or os.environ.get("REGISTRY_LOG_LEVEL", "INFO"))


REQUEST_LOG = logging.getLogger("registry.request")


class GunicornLogger(glogging.Logger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's logger without its access log (``logger_class`` in ``gunicorn.conf.py``).

    Every request is logged once, by :func:`_finish_request`, with the fields chosen above.
    gunicorn's access log would carry the raw path, query string and headers, and with a
    ``logconfig_dict`` it builds that record for every request even when nothing prints it.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


def _endpoint() -> str:
    rule = request.url_rule
    return rule.endpoint if rule is not None else "unmatched"


def _start_request() -> None:
    g.request_started = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)


def _finish_request(response: Response) -> Response:
    started = g.get("request_started")
    elapsed = time.perf_counter() - started if started is not None else 0.0
    endpoint = _endpoint()
    method = request.method if request.method in _METHODS else "OTHER"
    HTTP_REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
    HTTP_LATENCY.labels(endpoint, method).observe(elapsed)
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    REQUEST_LOG.info(
        "request",
        extra={
            "endpoint": endpoint,
            "method": method,
            "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 3),
        },
    )
    return response


# --- /metrics ------------------------------------------------------------------------------

# Named for its audience: the access matrix (tests/api/test_access.py) treats ``operator*``
# blueprints as operators-only.
blp = Blueprint(
    "operator_metrics",
    __name__,
    description="Operations: Prometheus metrics (operators only, signed requests)",
)
blp.before_request(require_operator)


def metrics_text(totals: list[SweepTotal]) -> bytes:
    """Every worker's metrics (multiprocess mode) or this process's (a single process), and
    the scheduled sweeps' totals read from the database (``registry.sweep_log``)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    swept = CollectorRegistry()
    swept.register(_SweepCollector(totals))
    return text + generate_latest(swept)


class _SweepCollector:
    """The sweeps' totals as metrics: records cleared and sweeps run, by rule, and when the
    last sweep finished (a stalled sweeper clears nothing: alert on its age)."""

    def __init__(self, totals: list[SweepTotal]) -> None:
        self._totals = totals

    def collect(self) -> list[Metric]:
        cleared = CounterMetricFamily(
            "registry_sweeper_cleared",
            "Records cleared by the scheduled sweeps (registry worker / registry sweep), by rule",
            labels=["rule"],
        )
        sweeps = CounterMetricFamily(
            "registry_sweeper_sweeps", "Scheduled sweeps finished, by rule", labels=["rule"]
        )
        finished = GaugeMetricFamily(
            "registry_sweeper_last_finished_timestamp_seconds",
            "When a scheduled sweep last finished (Unix time), by rule",
            labels=["rule"],
        )
        for total in self._totals:
            cleared.add_metric([total.rule], total.cleared)
            sweeps.add_metric([total.rule], total.sweeps)
            finished.add_metric([total.rule], total.last_finished_at.timestamp())
        return [cleared, sweeps, finished]


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(
        security=[{"httpMessageSignature": []}],
        responses={
            "200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "401": {
                "description": "not signed by an operator's key",
                "content": {"application/problem+json": {"schema": ProblemSchema}},
            },
        },
    )
    def get(self) -> Response:
        """Request, report, inquiry and clearing counters (operators only)."""
        totals = sweep_totals(db())
        return Response(metrics_text(totals), status=200, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask, api: Any, sessions: sessionmaker[Session]) -> None:
    """Wire logs, per-request metrics and ``/metrics`` into the app (called by the factory)."""
    configure_logging()
    app.before_request(_start_request)
    app.after_request(_finish_request)
    watch_clearings(sessions)
    api.register_blueprint(blp)
