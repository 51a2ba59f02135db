"""Anonymous endpoints: health, the registry's keys, the OpenAPI document."""

from __future__ import annotations

import base64

from flask.testing import FlaskClient

from crypto import ed25519
from registry.settings import Settings


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_registry_keys_publish_the_receipt_signing_key(
    client: FlaskClient, settings: Settings
) -> None:
    [key] = client.get("/v1/registry-keys").get_json()["keys"]
    assert settings.signing_key_file is not None
    private = ed25519.private_key_from_pem(settings.signing_key_file.read_bytes())
    raw = ed25519.public_key_raw(private)
    assert base64.b64decode(key["public_key"]) == raw
    assert key["keyid"] == ed25519.key_id(raw)
    assert ed25519.public_key_from_pem(key["public_key_pem"].encode()) == raw
    assert key["algorithm"] == "ed25519"


def test_the_openapi_document_describes_every_route(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    assert {"/healthz", "/v1/registry-keys", "/v1/reports", "/v1/receipts/{report_id}"} <= set(
        paths
    )
    post = paths["/v1/reports"]["post"]
    assert post["security"] == [{"httpMessageSignature": []}]
    assert {"200", "201", "400", "401", "403", "409", "413", "422"} <= set(post["responses"])
    assert "httpMessageSignature" in spec["components"]["securitySchemes"]
    assert "Problem" in spec["components"]["schemas"]


def test_unknown_routes_and_methods_answer_problem_details(client: FlaskClient) -> None:
    missing = client.get("/nothing-here")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    wrong = client.put("/healthz")
    assert wrong.status_code == 405 and wrong.get_json()["code"] == "method_not_allowed"


def test_a_nul_in_the_url_is_refused_before_any_view(client: FlaskClient) -> None:
    """(PostgreSQL refuses NUL in text outright; both engines answer the same, and early.)"""
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz?probe=1").status_code == 200
    refused = client.get("/healthz?probe=a%00b")
    assert refused.status_code == 422  # ValidationFailed, naming the parameter
    assert [e["field"] for e in refused.get_json()["errors"]] == ["probe"]
    assert client.get("/v1/receipts/x%00y").status_code == 404
