"""Members' side of disputes: list and read the disputes on their own records, and answer them.

Signed requests only (``require_member``: deny by default). Another member's dispute is
answered exactly like a missing one (404). A ``correct`` answer is given by sending a
``correct`` report to ``POST /v1/reports``; see docs/disputes.md.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.errors import ProblemSchema
from api.members.schemas import PageQuerySchema
from api.services import db, services
from api.signing import caller, require_member
from crypto import strictjson
from crypto.errors import StrictJSONError
from registry import disputes
from registry.errors import FieldError, MalformedReport
from registry.statements import timestamp

blp = Blueprint(
    "members_disputes",
    __name__,
    url_prefix="/v1",
    description="Member institutions: borrowers' disputes on their records (signed requests only)",
)
blp.before_request(require_member)


@blp.before_request
def refuse_ambiguous_json() -> None:
    """A body with a duplicated member name is refused: ``json`` would keep the last silently."""
    if request.method != "POST":
        return
    try:
        strictjson.loads_strict(request.get_data(cache=True))
    except StrictJSONError as exc:
        raise MalformedReport(
            "the request body is not acceptable JSON",
            code="body_malformed",
            errors=[FieldError("body", exc.rule, exc.detail)],
        ) from None


SIGNED: list[dict[str, list[str]]] = [{"httpMessageSignature": []}]
TIMESTAMP = {"description": "UTC, YYYY-MM-DDTHH:MM:SSZ"}


def _problems(**described: str) -> dict[str, Any]:
    return {
        code: {
            "description": text,
            "content": {"application/problem+json": {"schema": ProblemSchema}},
        }
        for code, text in described.items()
    }


AUTH_PROBLEMS = {
    "401": "request signature missing, invalid, stale, replayed, or key not valid",
    "403": "member suspended",
}


class MemberDisputeQuerySchema(PageQuerySchema):
    status = ma.fields.String(
        validate=ma.validate.OneOf(disputes.STATUSES),
        metadata={"description": "only disputes in this state (default: all)"},
    )


class MemberDisputeSchema(ma.Schema):
    """A dispute on one of the caller's records, with the record's own account reference."""

    ref = ma.fields.String(required=True, metadata={"description": "the dispute's id"})
    record_id = ma.fields.String(required=True)
    account_ref = ma.fields.String(
        required=True, metadata={"description": "the member's own account reference, in full"}
    )
    reason = ma.fields.String(required=True, metadata={"description": " | ".join(disputes.REASONS)})
    text = ma.fields.String(allow_none=True, metadata={"description": "the borrower's words"})
    status = ma.fields.String(
        required=True, metadata={"description": " | ".join(disputes.STATUSES)}
    )
    answer = ma.fields.String(allow_none=True, metadata={"description": "confirm | correct"})
    answer_note = ma.fields.String(allow_none=True)
    filed_at = ma.fields.String(required=True, metadata=TIMESTAMP)
    due_at = ma.fields.String(
        required=True, metadata={"description": "answer before this instant (UTC)"}
    )
    answered_at = ma.fields.String(allow_none=True, metadata=TIMESTAMP)
    suppressed = ma.fields.Boolean(
        required=True,
        metadata={"description": "the record is hidden from inquiries until you answer"},
    )


class MemberDisputeListSchema(ma.Schema):
    disputes = ma.fields.List(ma.fields.Nested(MemberDisputeSchema), required=True)
    next_cursor = ma.fields.String(
        required=True,
        metadata={"description": "pass as `after` for the next page; an empty page repeats it"},
    )


class DisputeAnswerSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    answer = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf(disputes.ANSWERS),
        metadata={
            "description": (
                "confirm (with a note saying what was verified) or withdraw (clears the "
                "record at once); a correction is a `correct` report to POST /v1/reports"
            )
        },
    )
    note = ma.fields.String(
        allow_none=True,
        load_default=None,
        metadata={"description": f"at most {disputes.MAX_NOTE} characters; shown to the borrower"},
    )


class DisputeAnswerResultSchema(ma.Schema):
    ref = ma.fields.String(required=True)
    status = ma.fields.String(required=True)
    answer = ma.fields.String(required=True)
    answered_at = ma.fields.String(required=True, metadata=TIMESTAMP)
    record_cleared = ma.fields.Boolean(
        required=True, metadata={"description": "true after withdraw: the record is gone"}
    )


@blp.route("/disputes")
class Disputes(MethodView):
    @blp.doc(
        security=SIGNED,
        responses=_problems(
            **AUTH_PROBLEMS,
            **{"422": "an unknown status, a cursor this endpoint did not return, or a bad limit"},
        ),
    )
    @blp.arguments(MemberDisputeQuerySchema, location="query", unknown=ma.RAISE)
    @blp.response(200, MemberDisputeListSchema)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Disputes on the caller's own records, the most urgent first, a page at a time."""
        found, cursor = disputes.list_for_member(
            db(),
            services().material,
            caller().institution.id,
            status=query.get("status"),
            after=query.get("after"),
            limit=query.get("limit"),
        )
        return {"disputes": found, "next_cursor": cursor}


@blp.route("/disputes/<string:ref>")
class DisputeItem(MethodView):
    @blp.doc(
        security=SIGNED,
        responses=_problems(**AUTH_PROBLEMS, **{"404": "no such dispute on your records"}),
    )
    @blp.response(200, MemberDisputeSchema)
    def get(self, ref: str) -> dict[str, Any]:
        """One dispute on one of the caller's records."""
        return disputes.get_for_member(db(), services().material, caller().institution.id, ref)


@blp.route("/disputes/<string:ref>/answer")
class DisputeAnswer(MethodView):
    @blp.doc(
        security=SIGNED,
        responses=_problems(
            **AUTH_PROBLEMS,
            **{
                "400": "the body is not strict JSON (body_malformed)",
                "404": "no such dispute on your records",
                "409": "already answered (dispute_already_answered)",
            },
        ),
    )
    @blp.arguments(DisputeAnswerSchema)
    @blp.response(200, DisputeAnswerResultSchema)
    def post(self, body: dict[str, Any], ref: str) -> dict[str, Any]:
        """Answer a dispute: confirm (with a note) or withdraw the record."""
        svc = services()
        session = db()
        dispute = disputes.answer(
            session,
            svc.material,
            institution_id=caller().institution.id,
            dispute_ref=ref,
            answer=body["answer"],
            note=body["note"],
            now=svc.clock(),
            policy=svc.policy,
        )
        session.commit()
        return {
            "ref": dispute.ref,
            "status": dispute.status,
            "answer": dispute.answer,
            "answered_at": timestamp(dispute.answered_at),
            "record_cleared": dispute.answer == "withdraw",
        }
