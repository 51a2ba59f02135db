from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.public.schemas import HealthSchema, RegistryKeysSchema
from api.services import services
from registry import receipts

blp = Blueprint("public", __name__, description="Anonymous endpoints")


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self) -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok"}


@blp.route("/v1/registry-keys")
class RegistryKeys(MethodView):
    @blp.response(200, RegistryKeysSchema)
    def get(self) -> dict[str, Any]:
        """The registry's public keys, for verifying receipts offline."""
        return {"keys": receipts.published_keys(services().material)}
