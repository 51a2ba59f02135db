"""Members' inquiries: a signed request in, a registry-signed history statement out."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.errors import ProblemSchema
from api.members.schemas import EnvelopeSchema
from api.services import db, services
from api.signing import caller, require_member, target_uri
from registry.inquiries import Purpose

blp = Blueprint(
    "members_inquiries",
    __name__,
    url_prefix="/v1",
    description="Member institutions: inquiries into a borrower's history (signed requests only)",
)
blp.before_request(require_member)

EVIDENCE_HEADERS = ("Signature-Input", "Signature", "Content-Digest", "Content-Type")


class ConsentSchema(ma.Schema):
    """The borrower's consent: a code they issued to the caller, or a written authorization."""

    class Meta:
        unknown = ma.RAISE

    kind = ma.fields.String(
        required=True, validate=ma.validate.OneOf(["consent_code", "written_authorization"])
    )
    code = ma.fields.String(metadata={"description": "consent code, e.g. ABCD-EFGH-JKMN"})
    reference = ma.fields.String(metadata={"description": "the member's reference of the form"})
    form_sha256 = ma.fields.String(metadata={"description": "SHA-256 of the signed form, hex"})
    signed_on = ma.fields.Date(metadata={"description": "when the borrower signed it"})


class InquiryRequestSchema(ma.Schema):
    """The national ID travels in the body only: never in a URL, so never in an access log."""

    class Meta:
        unknown = ma.RAISE

    national_id = ma.fields.String(required=True, metadata={"description": "GB 11643 number"})
    purpose = ma.fields.String(
        required=True, validate=ma.validate.OneOf([p.value for p in Purpose])
    )
    consent = ma.fields.Nested(ConsentSchema)


def _problems(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "see the problem's code",
            "content": {"application/problem+json": {"schema": ProblemSchema}},
        }
        for code in codes
    }


@blp.route("/inquiries")
class Inquiries(MethodView):
    @blp.doc(
        security=[{"httpMessageSignature": []}],
        requestBody={
            "required": True,
            "content": {"application/json": {"schema": InquiryRequestSchema}},
        },
        responses={
            "200": {
                "description": (
                    "a DSSE envelope signed by the registry; its payload (type "
                    "application/vnd.delinquency-registry.history+json;version=1) is the "
                    "masked history described in docs/protocol.md"
                ),
                "content": {"application/json": {"schema": EnvelopeSchema}},
            },
            **_problems(400, 401, 403, 413, 422, 429),
        },
    )
    def post(self) -> Response:
        """Look up a borrower's delinquency history for a declared purpose."""
        svc = services()
        who = caller()
        evidence = {
            "method": request.method,
            "target_uri": target_uri(),
            "keyid": who.key.keyid,
            "headers": {h: request.headers[h] for h in EVIDENCE_HEADERS if h in request.headers},
        }
        answer = svc.inquiries.inquire(
            db(), who.institution, request.get_data(cache=True), evidence, svc.clock()
        )
        return Response(
            answer.statement,
            status=200,
            mimetype="application/json",
            headers={"Cache-Control": "no-store", "X-Inquiry-Id": answer.inquiry_id},
        )
