"""Operator endpoints: the audit trail and aggregates, never a borrower's identity."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.operator.schemas import (
    InquiryLogQuerySchema,
    InquiryLogSchema,
    MembersSchema,
    StatisticsSchema,
)
from api.services import db, services
from api.signing import require_operator
from registry import oversight

blp = Blueprint(
    "operator",
    __name__,
    url_prefix="/v1/operator",
    description="Operators: audit trail and statistics (signed with an operator key)",
)
blp.before_request(require_operator)
SIGNED: list[dict[str, list[str]]] = [{"httpMessageSignature": []}]


@blp.route("/inquiries")
class InquiryLog(MethodView):
    @blp.doc(security=SIGNED)
    @blp.arguments(InquiryLogQuerySchema, location="query", unknown=ma.RAISE)
    @blp.response(200, InquiryLogSchema)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The inquiry log, newest first, refused attempts included."""
        entries = oversight.inquiry_log(
            db(),
            outcome=query.get("outcome"),
            institution=query.get("institution"),
            limit=query["limit"],
        )
        return {"inquiries": entries}


@blp.route("/members")
class Members(MethodView):
    @blp.doc(security=SIGNED)
    @blp.response(200, MembersSchema)
    def get(self) -> dict[str, Any]:
        """Every member with its cap violations and today's inquiries."""
        return {"members": oversight.member_summaries(db(), services().clock())}


@blp.route("/statistics")
class Statistics(MethodView):
    @blp.doc(security=SIGNED)
    @blp.response(200, StatisticsSchema)
    def get(self) -> dict[str, Any]:
        """Aggregate figures for supervision."""
        return oversight.statistics(db())
