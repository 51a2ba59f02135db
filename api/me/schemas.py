"""The borrower API's request and response bodies. Unknown fields are refused, never dropped."""

from __future__ import annotations

import marshmallow as ma

from registry import disputes
from registry.statements import MAX_LENGTH as STATEMENT_MAX

TIMESTAMP = {"description": "UTC, YYYY-MM-DDTHH:MM:SSZ"}


class Strict(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class MeSigninSchema(Strict):
    national_id = ma.fields.String(
        required=True, metadata={"description": "GB 11643 resident ID number (18 characters)"}
    )


class MeSigninAcceptedSchema(ma.Schema):
    status = ma.fields.String(required=True)
    detail = ma.fields.String(required=True)


class MeVerifySchema(Strict):
    national_id = ma.fields.String(required=True)
    code = ma.fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=32),
        metadata={"description": "the SMS code or the operator's enrolment code"},
    )


class MeTokenSchema(ma.Schema):
    token = ma.fields.String(required=True, metadata={"description": "send as Bearer token"})
    token_type = ma.fields.String(required=True)
    idle_timeout_seconds = ma.fields.Integer(required=True)
    expires_at = ma.fields.String(required=True, metadata=TIMESTAMP)


class MeRecordSchema(ma.Schema):
    """One record about the borrower, whole (it is their own data)."""

    record_id = ma.fields.String(required=True)
    institution = ma.fields.String(required=True)
    institution_name = ma.fields.String(required=True)
    account_ref = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    phone = ma.fields.String(allow_none=True)
    address = ma.fields.String(allow_none=True)
    product = ma.fields.String(required=True)
    currency = ma.fields.String(required=True)
    overdue_principal = ma.fields.String(required=True, metadata={"description": "decimal"})
    overdue_interest = ma.fields.String(required=True)
    penalty = ma.fields.String(required=True)
    total_overdue = ma.fields.String(required=True)
    days_past_due = ma.fields.Integer(required=True)
    first_delinquency_date = ma.fields.String(required=True)
    last_reported_on = ma.fields.String(required=True)
    contact_status = ma.fields.String(required=True)
    lost_contact_since = ma.fields.String(allow_none=True)
    channels_tried = ma.fields.List(ma.fields.String(), required=True)
    collection_stage = ma.fields.String(required=True)
    classification = ma.fields.String(required=True)
    status = ma.fields.String(required=True)
    settled_on = ma.fields.String(allow_none=True)
    under_dispute = ma.fields.Boolean(required=True)
    statement = ma.fields.String(allow_none=True)
    suppressed = ma.fields.Boolean(
        required=True,
        metadata={"description": "hidden from inquiries: a dispute went unanswered in time"},
    )


class MeRecordsSchema(ma.Schema):
    national_id = ma.fields.String(allow_none=True)
    records = ma.fields.List(ma.fields.Nested(MeRecordSchema), required=True)


class MeInquirySchema(ma.Schema):
    inquiry_id = ma.fields.String(required=True)
    institution = ma.fields.String(required=True)
    institution_name = ma.fields.String(required=True)
    date = ma.fields.String(required=True, metadata=TIMESTAMP)
    purpose = ma.fields.String(required=True)
    consent_kind = ma.fields.String(required=True)


class MeInquiriesSchema(ma.Schema):
    inquiries = ma.fields.List(ma.fields.Nested(MeInquirySchema), required=True)


class MeDisputeInSchema(Strict):
    record_id = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=32))
    reason = ma.fields.String(required=True, validate=ma.validate.OneOf(disputes.REASONS))
    text = ma.fields.String(load_default="", metadata={"description": "required for 'other'"})


class MeDisputeSchema(ma.Schema):
    ref = ma.fields.String(required=True)
    record_id = ma.fields.String(required=True)
    institution = ma.fields.String()
    reason = ma.fields.String(required=True)
    text = ma.fields.String(allow_none=True)
    status = ma.fields.String(required=True, metadata={"description": "open, answered, expired"})
    answer = ma.fields.String(allow_none=True)
    answer_note = ma.fields.String(allow_none=True)
    filed_at = ma.fields.String(required=True, metadata=TIMESTAMP)
    due_at = ma.fields.String(required=True, metadata=TIMESTAMP)
    answered_at = ma.fields.String(allow_none=True, metadata=TIMESTAMP)


class MeDisputesSchema(ma.Schema):
    reasons = ma.fields.List(ma.fields.String(), required=True)
    disputes = ma.fields.List(ma.fields.Nested(MeDisputeSchema), required=True)


class MeConsentInSchema(Strict):
    institution = ma.fields.String(
        required=True, metadata={"description": "the member's code, e.g. BANKA"}
    )
    expires_at = ma.fields.AwareDateTime(
        required=True, metadata={"description": "ISO 8601 with a zone; at most 30 days away"}
    )


class MeUseSchema(ma.Schema):
    inquiry_id = ma.fields.String(required=True)
    institution = ma.fields.String(required=True)
    date = ma.fields.String(required=True, metadata=TIMESTAMP)


class MeConsentSchema(ma.Schema):
    consent_id = ma.fields.String(required=True)
    institution = ma.fields.String(required=True)
    institution_name = ma.fields.String(required=True)
    purpose = ma.fields.String(required=True)
    kind = ma.fields.String(required=True)
    issued_at = ma.fields.String(required=True, metadata=TIMESTAMP)
    expires_at = ma.fields.String(required=True, metadata=TIMESTAMP)
    revoked_at = ma.fields.String(allow_none=True, metadata=TIMESTAMP)
    state = ma.fields.String(required=True, metadata={"description": "live, expired, revoked"})
    used_by = ma.fields.List(ma.fields.Nested(MeUseSchema), required=True)


class MeConsentsSchema(ma.Schema):
    consents = ma.fields.List(ma.fields.Nested(MeConsentSchema), required=True)


class MeIssuedConsentSchema(ma.Schema):
    consent = ma.fields.Nested(MeConsentSchema, required=True)
    code = ma.fields.String(
        required=True, metadata={"description": "shown once; give it to the loan officer"}
    )


class MeStatementInSchema(Strict):
    record_id = ma.fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "a record of yours; absent or null: the whole file"},
    )
    text = ma.fields.String(
        required=True, metadata={"description": f"at most {STATEMENT_MAX} characters"}
    )


class MeStatementTargetSchema(Strict):
    record_id = ma.fields.String(
        load_default=None, metadata={"description": "absent: the statement on the whole file"}
    )


class MeStatementSchema(ma.Schema):
    ref = ma.fields.String(required=True)
    record_id = ma.fields.String(allow_none=True)
    institution = ma.fields.String(allow_none=True)
    text = ma.fields.String(required=True)
    created_at = ma.fields.String(required=True, metadata=TIMESTAMP)


class MeStatementsSchema(ma.Schema):
    statements = ma.fields.List(ma.fields.Nested(MeStatementSchema), required=True)


class MeCertificateSchema(ma.Schema):
    certificate = ma.fields.Dict(required=True, metadata={"description": "what it certifies"})
    envelope = ma.fields.Dict(
        required=True, metadata={"description": "the DSSE envelope signed by the registry"}
    )


class MeCertificatesSchema(ma.Schema):
    certificates = ma.fields.List(ma.fields.Nested(MeCertificateSchema), required=True)
