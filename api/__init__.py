"""The HTTP layer: the app factory, one blueprint per audience, problem-details errors.

``create_app`` wires the domain (``registry``) to Flask; nothing below ``registry`` knows Flask.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import Flask

from api import errors, observability, openapi
from api.me import register as register_borrower_api
from api.portal import register as register_portal
from api.services import EXTENSION, Services, close_db, utc_now
from api.signing import settle_nonce
from registry.db import make_engine, make_session_factory
from registry.inquiries import Inquiries
from registry.intake import Intake
from registry.policy import DEFAULT_POLICY, Policy
from registry.secrets import load_key_material
from registry.settings import Settings


def create_app(
    settings: Settings | None = None,
    *,
    policy: Policy | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> Flask:
    """Build the app from one ``Settings`` object (defaults: environment, ``./instance``)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__, instance_path=str(settings.instance_path.resolve()))
    app.config.update(openapi.settings())
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]

    engine = make_engine(settings)
    material = load_key_material(settings)
    chosen_policy = policy or DEFAULT_POLICY
    app.extensions[EXTENSION] = Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        material=material,
        policy=chosen_policy,
        intake=Intake(material, chosen_policy),
        inquiries=Inquiries(material, chosen_policy, observer=observability.count_inquiry),
        clock=clock or utc_now,
    )
    app.teardown_appcontext(close_db)

    api = openapi.Api(app)
    from api.members.alerts import blp as members_alerts
    from api.members.disputes import blp as members_disputes
    from api.members.inquiries import blp as members_inquiries
    from api.members.views import blp as members
    from api.operator.views import blp as operator
    from api.public.views import blp as public

    api.register_blueprint(public)
    api.register_blueprint(members)
    api.register_blueprint(members_inquiries)
    api.register_blueprint(operator)
    api.register_blueprint(members_alerts)
    api.register_blueprint(members_disputes)
    observability.init_app(app, api, app.extensions[EXTENSION].sessions)
    # Registered after the request log's hook so that it runs before it (Flask runs them in
    # reverse): the logged duration includes recording a refused request's nonce.
    app.after_request(settle_nonce)
    register_borrower_api(app, api)
    register_portal(app)
    errors.register(app)
    return app
