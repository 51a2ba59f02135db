from __future__ import annotations

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.errors import ProblemSchema
from api.members.schemas import EnvelopeSchema
from api.services import db, services
from api.signing import caller, require_member
from registry import receipts

blp = Blueprint(
    "members",
    __name__,
    url_prefix="/v1",
    description="Member institutions: signed reports and receipts (signed requests only)",
)
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
        result = svc.intake.submit(
            db(), caller().institution, request.get_data(cache=True), svc.clock()
        )
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
