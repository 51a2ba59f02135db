from __future__ import annotations

import marshmallow as ma


class InquiryLogQuerySchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    outcome = ma.fields.String(validate=ma.validate.OneOf(["answered", "refused"]))
    institution = ma.fields.String(validate=ma.validate.Length(max=32))
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=1000))


class InquiryLogEntrySchema(ma.Schema):
    """One inquiry as the operator sees it: who, when, why, how it ended; never whom."""

    inquiry_id = ma.fields.String(required=True)
    institution = ma.fields.String(required=True)
    purpose = ma.fields.String(required=True)
    basis = ma.fields.String(required=True)
    outcome = ma.fields.String(required=True)
    refusal_code = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime(required=True)


class InquiryLogSchema(ma.Schema):
    inquiries = ma.fields.List(ma.fields.Nested(InquiryLogEntrySchema), required=True)


class MemberSummarySchema(ma.Schema):
    code = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    status = ma.fields.String(required=True)
    cap_violations = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    inquiries_today = ma.fields.Integer(required=True)
    refused_inquiries = ma.fields.Integer(required=True)


class MembersSchema(ma.Schema):
    members = ma.fields.List(ma.fields.Nested(MemberSummarySchema), required=True)


class StatisticsSchema(ma.Schema):
    """Aggregates only: no row here can be traced to a person."""

    open_records = ma.fields.Integer(required=True)
    records_by_classification = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    cleared_by_reason = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    inquiries_by_purpose = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    refused_inquiries = ma.fields.Integer(required=True)
