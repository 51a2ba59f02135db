"""Members' early warning: subscriptions, their webhook, and alerts (pull API and dead letters).

Signed requests only (``require_member`` runs before every route: deny by default). National
IDs travel in request bodies only, never in a URL; everything answered is masked.
"""

from __future__ import annotations

import datetime as dt
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
from registry import alerts, webhooks
from registry.errors import FieldError, MalformedReport
from registry.models import Alert, AlertDelivery, Subscription, Webhook

blp = Blueprint(
    "members_alerts",
    __name__,
    url_prefix="/v1",
    description="Member institutions: early-warning subscriptions, webhook and alerts "
    "(signed requests only)",
)
blp.before_request(require_member)


@blp.before_request
def refuse_ambiguous_json() -> None:
    """Duplicated member names and runaway nesting are refused (``json`` would keep the last
    silently, or recurse until it fails with a 500)."""
    if request.method not in ("POST", "PUT") or not request.get_data(cache=True):
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


def _problems(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "see the problem's code",
            "content": {"application/problem+json": {"schema": ProblemSchema}},
        }
        for code in codes
    }


def _utc(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


# --- schemas -------------------------------------------------------------------------------


class _Strict(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class SubscribeSchema(_Strict):
    """The national ID travels in the body only: never in a URL, so never in an access log."""

    national_id = ma.fields.String(required=True, metadata={"description": "GB 11643 number"})


class AlertQuerySchema(PageQuerySchema):
    delivery = ma.fields.String(
        metadata={"description": "only alerts whose webhook delivery is in this state"}
    )


class WebhookBodySchema(_Strict):
    url = ma.fields.String(required=True, metadata={"description": "https:// URL"})


class SubscriptionSchema(ma.Schema):
    ref = ma.fields.String(required=True)
    national_id_masked = ma.fields.String(required=True)
    state = ma.fields.String(required=True, metadata={"description": "active or ended"})
    created_at = ma.fields.String(required=True)
    ended_at = ma.fields.String(allow_none=True)
    end_reason = ma.fields.String(
        allow_none=True, metadata={"description": "unsubscribed or relationship_ended"}
    )


class SubscriptionPageSchema(ma.Schema):
    subscriptions = ma.fields.List(ma.fields.Nested(SubscriptionSchema), required=True)
    next_cursor = ma.fields.String(required=True)


class WebhookSchema(ma.Schema):
    url = ma.fields.String(required=True)
    created_at = ma.fields.String(required=True)
    updated_at = ma.fields.String(required=True)


class DeliverySchema(ma.Schema):
    state = ma.fields.String(
        required=True, metadata={"description": ", ".join(alerts.DeliveryState)}
    )
    attempts = ma.fields.Integer(required=True)
    next_attempt_at = ma.fields.String(allow_none=True)
    last_attempt_at = ma.fields.String(allow_none=True)
    last_status = ma.fields.Integer(allow_none=True)
    last_error = ma.fields.String(allow_none=True)
    delivered_at = ma.fields.String(allow_none=True)
    dead_at = ma.fields.String(allow_none=True)


class AlertSchema(ma.Schema):
    """The alert document exactly as the webhook carries it, plus its delivery state."""

    version = ma.fields.Integer(required=True)
    event_id = ma.fields.String(required=True)
    type = ma.fields.String(required=True)
    seq = ma.fields.Integer(required=True)
    occurred_at = ma.fields.String(required=True)
    subscription = ma.fields.String(required=True)
    borrower = ma.fields.Dict(required=True)
    record = ma.fields.Dict(required=True)
    delivery = ma.fields.Nested(DeliverySchema, allow_none=True)


class AlertPageSchema(ma.Schema):
    alerts = ma.fields.List(ma.fields.Nested(AlertSchema), required=True)
    next_cursor = ma.fields.String(required=True)


# --- views ---------------------------------------------------------------------------------


def _subscription(row: Subscription) -> dict[str, Any]:
    return {
        "ref": row.ref,
        "national_id_masked": row.national_id_masked,
        "state": "active" if row.ended_at is None else "ended",
        "created_at": _utc(row.created_at),
        "ended_at": _utc(row.ended_at),
        "end_reason": row.end_reason,
    }


def _delivery(row: AlertDelivery | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": _utc(row.next_attempt_at) if row.state == "pending" else None,
        "last_attempt_at": _utc(row.last_attempt_at),
        "last_status": row.last_status,
        "last_error": row.last_error,
        "delivered_at": _utc(row.delivered_at),
        "dead_at": _utc(row.dead_at),
    }


def _alert(row: Alert) -> dict[str, Any]:
    return {**alerts.document(row), "delivery": _delivery(row.delivery)}


def _webhook(row: Webhook) -> dict[str, Any]:
    return {"url": row.url, "created_at": _utc(row.created_at), "updated_at": _utc(row.updated_at)}


@blp.route("/subscriptions")
class Subscriptions(MethodView):
    @blp.arguments(SubscribeSchema)
    @blp.response(201, SubscriptionSchema, description="subscribed")
    @blp.alt_response(200, schema=SubscriptionSchema, description="already subscribed")
    @blp.doc(security=SIGNED, responses=_problems(400, 401, 403, 422))
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Subscribe to a borrower the member has a relationship with."""
        svc, session = services(), db()
        row, created = alerts.subscribe(
            session, svc.material, caller().institution, body["national_id"], svc.clock()
        )
        session.commit()
        return _subscription(row), 201 if created else 200

    @blp.arguments(PageQuerySchema, location="query", unknown=ma.RAISE)
    @blp.response(200, SubscriptionPageSchema)
    @blp.doc(security=SIGNED, responses=_problems(401, 403, 422))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The member's subscriptions, active and ended, oldest first."""
        session = db()
        rows, cursor = alerts.list_subscriptions(
            session,
            caller().institution,
            services().clock(),
            after=args.get("after"),
            limit=args.get("limit"),
        )
        session.commit()
        return {"subscriptions": [_subscription(r) for r in rows], "next_cursor": cursor}


@blp.route("/subscriptions/<string:ref>")
class SubscriptionItem(MethodView):
    @blp.response(200, SubscriptionSchema)
    @blp.doc(security=SIGNED, responses=_problems(401, 403, 404))
    def get(self, ref: str) -> dict[str, Any]:
        """One of the member's subscriptions."""
        session = db()
        row = alerts.get_subscription(session, caller().institution, ref, services().clock())
        session.commit()
        return _subscription(row)

    @blp.response(200, SubscriptionSchema)
    @blp.doc(security=SIGNED, responses=_problems(401, 403, 404))
    def delete(self, ref: str) -> dict[str, Any]:
        """End a subscription (idempotent)."""
        session = db()
        row = alerts.unsubscribe(session, caller().institution, ref, services().clock())
        session.commit()
        return _subscription(row)


@blp.route("/webhook")
class WebhookItem(MethodView):
    @blp.response(200, WebhookSchema)
    @blp.doc(security=SIGNED, responses=_problems(401, 403, 404))
    def get(self) -> dict[str, Any]:
        """The member's registered webhook URL."""
        return _webhook(webhooks.get_webhook(db(), caller().institution))

    @blp.arguments(WebhookBodySchema)
    @blp.response(200, WebhookSchema)
    @blp.doc(security=SIGNED, responses=_problems(400, 401, 403, 422))
    def put(self, body: dict[str, Any]) -> dict[str, Any]:
        """Register or replace the HTTPS URL alerts are pushed to."""
        svc, session = services(), db()
        row = webhooks.set_webhook(
            session, svc.settings, caller().institution, body["url"], svc.clock()
        )
        session.commit()
        return _webhook(row)

    @blp.response(204)
    @blp.doc(security=SIGNED, responses=_problems(401, 403, 404))
    def delete(self) -> None:
        """Remove the webhook; pending deliveries are cancelled (alerts stay pullable)."""
        session = db()
        webhooks.remove_webhook(session, caller().institution, services().clock())
        session.commit()


@blp.route("/alerts")
class Alerts(MethodView):
    @blp.arguments(AlertQuerySchema, location="query", unknown=ma.RAISE)
    @blp.response(200, AlertPageSchema)
    @blp.doc(security=SIGNED, responses=_problems(401, 403, 422))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The member's alerts after a cursor, in order, with their delivery state."""
        rows, cursor = alerts.list_alerts(
            db(),
            caller().institution,
            after=args.get("after"),
            limit=args.get("limit"),
            delivery=args.get("delivery"),
        )
        return {"alerts": [_alert(r) for r in rows], "next_cursor": cursor}


@blp.route("/alerts/<string:event_id>")
class AlertItem(MethodView):
    @blp.response(200, AlertSchema)
    @blp.doc(security=SIGNED, responses=_problems(401, 403, 404))
    def get(self, event_id: str) -> dict[str, Any]:
        """One alert by its event id, with its delivery state."""
        return _alert(alerts.get_alert(db(), caller().institution, event_id))


@blp.route("/alerts/<string:event_id>/redeliver")
class Redeliver(MethodView):
    @blp.response(202, AlertSchema)
    @blp.doc(security=SIGNED, responses=_problems(401, 403, 404, 409))
    def post(self, event_id: str) -> dict[str, Any]:
        """Queue an alert for webhook delivery again (same body, same event id)."""
        session = db()
        row = alerts.redeliver(session, caller().institution, event_id, services().clock())
        session.commit()
        return _alert(row)
