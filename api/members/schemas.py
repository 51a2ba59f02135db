from __future__ import annotations

import marshmallow as ma

from registry import paging


class EnvelopeSignatureSchema(ma.Schema):
    keyid = ma.fields.String(required=True, metadata={"description": "member key id"})
    sig = ma.fields.String(required=True, metadata={"description": "Ed25519 signature, base64"})


class EnvelopeSchema(ma.Schema):
    """A DSSE v1 envelope. The signature covers PAE(payloadType, payload bytes)."""

    payload = ma.fields.String(required=True, metadata={"description": "base64 payload"})
    payloadType = ma.fields.String(required=True)  # noqa: N815 - DSSE's own field name
    signatures = ma.fields.List(ma.fields.Nested(EnvelopeSignatureSchema), required=True)


class ReportIdPathSchema(ma.Schema):
    report_id = ma.fields.String(required=True)


class PageQuerySchema(ma.Schema):
    """A page of a member's list (``registry.paging``). Query strings too refuse unknown
    parameters (webargs would drop them: pass ``unknown``)."""

    class Meta:
        unknown = ma.RAISE

    after = ma.fields.String(metadata={"description": "next_cursor of the previous page"})
    limit = ma.fields.Integer(
        metadata={"description": f"1 to {paging.MAX_PAGE} (default {paging.DEFAULT_PAGE})"}
    )
