"""Deny by default: every route the app has refuses anonymous callers unless it is public.

Routes are enumerated from the URL map, so a new endpoint cannot be forgotten here.
"""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

PUBLIC = {"public.Health", "public.RegistryKeys", "api-docs.openapi_json"}


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"sample-\1-0001", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, path))
    return found


def test_the_public_allow_list_names_real_endpoints(app: Flask) -> None:
    endpoints = {endpoint for endpoint, _, _ in _routes(app)}
    assert endpoints >= PUBLIC
    assert len(endpoints - PUBLIC) >= 2


def test_every_non_public_route_refuses_anonymous_callers(app: Flask, client: FlaskClient) -> None:
    for endpoint, method, path in _routes(app):
        response = client.open(path, method=method, data=b"{}")
        if endpoint in PUBLIC:
            assert response.status_code < 400, (endpoint, method, response.status_code)
        else:
            assert response.status_code == 401, (endpoint, method, response.status_code)
            assert response.get_json()["code"] == "request_missing_signature"
