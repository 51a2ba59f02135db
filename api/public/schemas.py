from __future__ import annotations

import marshmallow as ma


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True)


class ReadinessChecksSchema(ma.Schema):
    database = ma.fields.String(required=True, metadata={"description": "ok or unreachable"})
    schema = ma.fields.String(required=True, metadata={"description": "at_head or not_at_head"})


class ReadinessSchema(ma.Schema):
    status = ma.fields.String(required=True)
    checks = ma.fields.Nested(ReadinessChecksSchema, required=True)


class RegistryKeySchema(ma.Schema):
    keyid = ma.fields.String(required=True)
    algorithm = ma.fields.String(required=True)
    public_key = ma.fields.String(required=True, metadata={"description": "raw key, base64"})
    public_key_pem = ma.fields.String(required=True)
    use = ma.fields.String(required=True)


class RegistryKeysSchema(ma.Schema):
    keys = ma.fields.List(ma.fields.Nested(RegistryKeySchema), required=True)
