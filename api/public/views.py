from __future__ import annotations

import functools
import logging
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.errors import ProblemSchema, problem
from api.public.schemas import HealthSchema, ReadinessSchema, RegistryKeysSchema
from api.services import services
from registry import receipts
from registry.db import current_revision, head_revision

log = logging.getLogger(__name__)

blp = Blueprint("public", __name__, description="Anonymous endpoints")


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self) -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok"}


@functools.cache
def _head() -> str | None:
    """The code's migration head: read from the scripts once per process."""
    return head_revision()


def readiness(engine: Engine) -> dict[str, str]:
    """Each check's state: the database answers, and its schema is at the code's head."""
    try:
        current = current_revision(engine.execution_options(sqlite_begin="DEFERRED"))
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return {"database": "unreachable", "schema": "unknown"}
    return {"database": "ok", "schema": "at_head" if current == _head() else "not_at_head"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.doc(
        responses={
            "200": {
                "description": "ready to serve",
                "content": {"application/json": {"schema": ReadinessSchema}},
            },
            "503": {
                "description": "not ready: database unreachable or schema not at the head",
                "content": {"application/problem+json": {"schema": ProblemSchema}},
            },
        }
    )
    def get(self) -> Response:
        """Readiness: the database answers and is at the migration head (for load balancers)."""
        checks = readiness(services().engine)
        if checks == {"database": "ok", "schema": "at_head"}:
            return Response(
                '{"status":"ready","checks":{"database":"ok","schema":"at_head"}}',
                status=200,
                mimetype="application/json",
            )
        return problem(
            503,
            "not_ready",
            "Service Unavailable",
            "the registry cannot serve: see checks",
            extra={"checks": checks},
            headers={"Retry-After": "5"},
        )


@blp.route("/v1/registry-keys")
class RegistryKeys(MethodView):
    @blp.response(200, RegistryKeysSchema)
    def get(self) -> dict[str, Any]:
        """The registry's public keys, for verifying receipts offline."""
        return {"keys": receipts.published_keys(services().material)}
