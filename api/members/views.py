from __future__ import annotations

import json as stdlib_json

import marshmallow as ma
from flask import Response, json, request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.errors import ProblemSchema, from_registry_error
from api.members.schemas import EnvelopeSchema
from api.observability import count_report
from api.services import db, request_session, services
from api.signing import caller, confirm_caller, prepares_before_writing, require_member
from registry import receipts
from registry.batch import (
    MAX_BATCH_BYTES,
    MAX_BATCH_REPORTS,
    Accepted,
    BatchIntake,
    Outcome,
    parse_batch,
)
from registry.errors import RegistryError

blp = Blueprint(
    "members",
    __name__,
    url_prefix="/v1",
    description="Member institutions: signed reports and receipts (signed requests only)",
)


def _batch_body_limit() -> None:
    """Only the batch endpoint takes more than the app's 1 MiB: set before the body is read."""
    if request.endpoint == "members.ReportBatch":
        request.max_content_length = MAX_BATCH_BYTES


blp.before_request(_batch_body_limit)
blp.before_request(require_member)

DSSE_JSON = "application/json"
SIGNED: list[dict[str, list[str]]] = [{"httpMessageSignature": []}]
COMMON_ERRORS = {
    401: "request signature missing, invalid, stale, replayed, or key not valid",
    403: "member suspended, or acting for another member",
    413: "request body too large",
}


def _document_errors(*codes: int) -> dict[str, dict[str, object]]:
    return {
        str(code): {
            "description": COMMON_ERRORS.get(code, "see the problem's code"),
            "content": {"application/problem+json": {"schema": ProblemSchema}},
        }
        for code in codes
    }


@blp.route("/reports")
@prepares_before_writing
class Reports(MethodView):
    @blp.doc(
        security=SIGNED,
        requestBody={
            "required": True,
            "content": {DSSE_JSON: {"schema": EnvelopeSchema}},
            "description": "One signed report (DSSE envelope); payload per docs/protocol.md",
        },
        responses={
            "201": {
                "description": "accepted; the body is the registry's signed receipt",
                "content": {DSSE_JSON: {"schema": EnvelopeSchema}},
            },
            "200": {
                "description": "the same envelope was accepted before; its original receipt",
                "content": {DSSE_JSON: {"schema": EnvelopeSchema}},
            },
            **_document_errors(400, 401, 403, 409, 413, 422),
        },
    )
    def post(self) -> Response:
        """Submit one signed delinquency report."""
        svc = services()
        who, raw, now = caller(), request.get_data(cache=True), svc.clock()
        try:
            try:
                # Checked before the first write: on SQLite, before taking the write lock.
                checked = svc.intake.check(db, who.member, raw, now, known_keys=[who.signing_key])
            except RegistryError:
                # api.errors would answer a revoked key 401 too; confirmed here, the refusal is
                # also counted as what is answered (key_revoked), not as the envelope's fault.
                confirm_caller()
                raise
            # Not db(): intake writes the nonce itself, on PostgreSQL with the report's rows.
            result = svc.intake.submit(request_session(), who.member, raw, now, checked=checked)
        except RegistryError as exc:
            count_report(accepted=False, reason=exc.code)
            raise
        count_report(accepted=True, reason="new" if result.created else "resent")
        return Response(
            result.receipt,
            status=201 if result.created else 200,
            mimetype=DSSE_JSON,
            headers={"Location": f"/v1/receipts/{result.report_id}"},
        )


@blp.route("/receipts/<string:report_id>")
class Receipt(MethodView):
    @blp.doc(
        security=SIGNED,
        responses={
            "200": {
                "description": "the registry's signed receipt for one of the caller's reports",
                "content": {DSSE_JSON: {"schema": EnvelopeSchema}},
            },
            **_document_errors(401, 403, 404),
        },
    )
    def get(self, report_id: str) -> Response:
        """The receipt of one of the caller's own reports, again."""
        body = receipts.find(db(), caller().institution, report_id)
        return Response(body, status=200, mimetype=DSSE_JSON)


class BatchRequestSchema(ma.Schema):
    """Many signed reports in one signed request; each string is one envelope's exact bytes."""

    envelopes = ma.fields.List(
        ma.fields.String(metadata={"description": "one DSSE envelope, its exact JSON text"}),
        required=True,
        metadata={"minItems": 1, "maxItems": MAX_BATCH_REPORTS},
    )


class BatchItemSchema(ma.Schema):
    """One report's outcome, in the order sent: a receipt, or the problem a single report gets."""

    index = ma.fields.Integer(required=True, metadata={"description": "position in the batch"})
    status = ma.fields.Integer(
        required=True, metadata={"description": "201 new, 200 resent, or the refusal's status"}
    )
    report_id = ma.fields.String(metadata={"description": "with a receipt"})
    receipt = ma.fields.Nested(EnvelopeSchema, metadata={"description": "the signed receipt"})
    problem = ma.fields.Nested(ProblemSchema, metadata={"description": "why it was refused"})


class BatchResponseSchema(ma.Schema):
    accepted = ma.fields.Integer(required=True)
    refused = ma.fields.Integer(required=True)
    results = ma.fields.List(ma.fields.Nested(BatchItemSchema), required=True)


@blp.route("/reports/batch")
@prepares_before_writing
class ReportBatch(MethodView):
    @blp.doc(
        security=SIGNED,
        requestBody={
            "required": True,
            "content": {"application/json": {"schema": BatchRequestSchema}},
            "description": (
                f"Up to {MAX_BATCH_REPORTS} signed reports, at most {MAX_BATCH_BYTES} bytes; "
                "see docs/protocol.md"
            ),
        },
        responses={
            "200": {
                "description": "every report's outcome, in order (accepted or refused)",
                "content": {"application/json": {"schema": BatchResponseSchema}},
            },
            **_document_errors(400, 401, 403, 413, 422),
        },
    )
    def post(self) -> Response:
        """Submit many signed reports at once; each is accepted or refused on its own."""
        svc, who = services(), caller()
        envelopes = parse_batch(request.get_data(cache=True))
        batch = BatchIntake(svc.intake)
        # ``db`` itself, not a session: each chunk is checked before it is first called, so on
        # SQLite the first chunk's checks run before this request takes the write lock.
        result = batch.submit(
            db,
            who.institution,
            envelopes,
            svc.clock(),
            on_outcome=_count_outcome,
            known_keys=[who.key],
        )
        parts = [_item_json(i, o) for i, o in enumerate(result.outcomes)]
        head = f'{{"accepted":{result.accepted},"refused":{result.refused},"results":['
        body = head.encode() + b",".join(parts) + b"]}"
        return Response(body, status=200, mimetype="application/json")


def _count_outcome(outcome: Outcome) -> None:
    if isinstance(outcome, Accepted):
        count_report(accepted=True, reason="new" if outcome.created else "resent", via="batch")
    else:
        count_report(accepted=False, reason=outcome.error.code, via="batch")


_json_string = stdlib_json.JSONEncoder(ensure_ascii=False).encode
"""A string as JSON (the standard library's C encoder, made once)."""


def _item_json(index: int, outcome: Outcome) -> bytes:
    """One result; a receipt is embedded byte for byte as the registry stored and signed it."""
    if isinstance(outcome, Accepted):
        # NOTE: written out rather than through Flask's JSON provider: this runs once per
        # report, and the provider's per-call set-up cost more than the rest of the answer.
        status = 201 if outcome.created else 200
        report_id = _json_string(outcome.report_id)
        head = f'{{"index":{index},"status":{status},"report_id":{report_id},"receipt":'
        return head.encode() + outcome.receipt + b"}"
    problem = from_registry_error(outcome.error)
    document = {"index": index, "status": problem.status_code, "problem": problem.get_json()}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
