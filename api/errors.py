"""Every error the API returns is RFC 9457 problem details, built here and nowhere else."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import marshmallow as ma
from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException, InternalServerError, NotFound

from api.signing import refusal_for_caller
from registry import errors as e

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)

STATUS: dict[type[e.RegistryError], int] = {
    e.NotAuthenticated: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.MalformedReport: 400,
    e.ValidationFailed: 422,
    e.PolicyViolation: 422,
    e.RateLimited: 429,
}

HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
}


class FieldErrorSchema(ma.Schema):
    field = ma.fields.String(required=True, metadata={"description": "dotted path of the field"})
    rule = ma.fields.String(required=True, metadata={"description": "stable rule code"})
    message = ma.fields.String(required=True, metadata={"description": "what the rule requires"})


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details, with a stable ``code`` and per-field ``errors``."""

    class Meta:
        unknown = ma.INCLUDE

    type = ma.fields.String(required=True)
    title = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String(required=True)
    code = ma.fields.String(required=True)
    errors = ma.fields.List(ma.fields.Nested(FieldErrorSchema))
    current_sequence = ma.fields.Integer()
    report_id = ma.fields.String()


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:delinquency-registry:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def from_registry_error(error: e.RegistryError) -> Response:
    status = next((STATUS[c] for c in type(error).__mro__ if c in STATUS), 400)
    headers = {"WWW-Authenticate": 'Signature realm="registry"'} if status == 401 else None
    if isinstance(error, e.RateLimited):
        headers = {"Retry-After": str(error.retry_after)}
    return problem(
        status,
        error.code,
        error.title,
        error.detail,
        errors=[fe.as_dict() for fe in error.errors],
        extra=error.extra,
        headers=headers,
    )


def from_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    if status >= 500:
        log.error("internal error answered with %s", status)
    data = getattr(error, "data", None) or {}
    field_errors = _webargs_errors(data.get("messages")) if "messages" in data else None
    detail = {
        413: "the request body is larger than this endpoint accepts",
        500: "the registry failed to process the request; nothing was stored",
    }.get(status, error.description or error.name)
    return problem(
        status,
        HTTP_CODES.get(status, "http_error"),
        error.name,
        detail,
        errors=field_errors,
        headers=data.get("headers"),
    )


def _webargs_errors(messages: Any) -> list[dict[str, str]]:
    """Flatten webargs' nested ``{location: {field: [msg]}}`` into field errors."""
    out: list[dict[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list) and all(isinstance(m, str) for m in node):
            for message in node:
                out.append({"field": path, "rule": "schema", "message": message})
        else:
            out.append({"field": path, "rule": "schema", "message": str(node)})

    if isinstance(messages, dict):
        for location_messages in messages.values():
            walk(location_messages, "")
    return out


def unexpected(error: Exception) -> Response:
    """A bug: log where it happened, never the exception's message (it could hold personal data)."""
    frames = " < ".join(
        f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}"
        for f in reversed(traceback.extract_tb(error.__traceback__))
    )
    log.error("unhandled %s at %s", type(error).__name__, frames)
    return from_http_exception(InternalServerError())


def refuse_nul_in_url() -> None:
    """A NUL in the path or query names nothing that can exist: refuse it before any view.

    NOTE: PostgreSQL refuses NUL in text parameters outright, so a look-up with one would
    fail as a 500 there while SQLite answers "not found"; both engines now answer the same.
    """
    if "\x00" in request.path:
        raise NotFound()
    if not request.query_string:
        return
    names = [name for name, value in request.args.items(multi=True) if "\x00" in name + value]
    if names:
        raise e.ValidationFailed(
            "a query parameter contains a NUL character",
            errors=[e.FieldError(name, "no_nul", "must not contain NUL") for name in names],
        )


def _refusal(error: e.RegistryError) -> Response:
    return from_registry_error(refusal_for_caller() or error)


def _http_refusal(error: HTTPException) -> Response:
    refusal = refusal_for_caller()
    return from_registry_error(refusal) if refusal else from_http_exception(error)


def register(app: Flask) -> None:
    """Every refusal is answered here; a signed caller whose key is no longer valid gets that
    refusal instead (``api.signing.refusal_for_caller``)."""
    app.before_request(refuse_nul_in_url)
    app.register_error_handler(e.RegistryError, _refusal)
    app.register_error_handler(HTTPException, _http_refusal)
    app.register_error_handler(Exception, unexpected)
