"""The baseline: a bare Flask endpoint that verifies one Ed25519 signature and inserts one row.

Served by the same ``gunicorn.conf.py`` as the registry, on the same database engine, so the
ratio registry / baseline shows what the registry's own work costs (request signature, nonce,
envelope verification, validation, encryption, receipt), not the machine or the server.

Environment: ``BENCH_BASELINE_DB`` (SQLAlchemy URL), ``BENCH_BASELINE_KEY`` (raw public key,
hex). The client sends the body with its Ed25519 signature in ``X-Signature`` (base64).
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Flask, Response, request
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, create_engine, event, insert

metadata = MetaData()
rows = Table(
    "baseline_rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("body", LargeBinary, nullable=False),
)


def create_app() -> Flask:
    url = os.environ["BENCH_BASELINE_DB"]
    engine = create_engine(url)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(connection: object, _record: object) -> None:
            # The registry's own durability settings, so neither side is favoured.
            cursor = connection.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    # NOTE: the benchmark creates the table before the workers start (create_table): several
    # workers creating it at once race on PostgreSQL's catalogue.
    public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(os.environ["BENCH_BASELINE_KEY"]))
    app = Flask(__name__)

    @app.post("/ingest")
    def ingest() -> Response:
        body = request.get_data()
        try:
            public_key.verify(base64.b64decode(request.headers.get("X-Signature", "")), body)
        except (InvalidSignature, ValueError):
            return Response(b'{"error":"signature"}', status=401, mimetype="application/json")
        with engine.begin() as connection:
            connection.execute(insert(rows).values(body=body))
        return Response(b'{"ok":true}', status=201, mimetype="application/json")

    @app.get("/healthz")
    def health() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app


def create_table(url: str) -> None:
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
