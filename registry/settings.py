"""One settings object for the app, the CLI and the worker, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_INSTANCE = Path.cwd() / "instance"


@dataclass(frozen=True)
class Settings:
    """Where the registry keeps its state and secrets, and the limits it enforces.

    Secrets live in files beside the database (or in environment variables), never in it:
    a stolen database file alone must not reveal the blind-index secret or the master key.
    """

    instance_path: Path = DEFAULT_INSTANCE
    database_url: str = ""
    signing_key_file: Path | None = None
    master_keys_file: Path | None = None
    blind_index_key_file: Path | None = None
    master_keys_text: str | None = field(default=None, repr=False)
    blind_index_key_text: str | None = field(default=None, repr=False)
    public_base_url: str | None = None
    max_request_bytes: int = 1024 * 1024
    replay_window_seconds: int = 300
    clock_skew_seconds: int = 30
    sqlite_synchronous: str = "FULL"
    # Borrower self-service (issue 5): how messages leave (``outbox`` keeps them for
    # `registry notifications`; ``webhook`` POSTs them to the SMS gateway), the borrower
    # session's cookie and timeouts, and how many reverse proxies in front may be believed
    # about the client's address (0: none, use the socket's peer address).
    notifier: str = "outbox"
    sms_gateway_url: str | None = None
    session_cookie_secure: bool = True
    session_idle_seconds: int = 15 * 60
    session_max_seconds: int = 8 * 60 * 60
    trusted_proxies: int = 0
    # Webhook delivery (early warning): extra CA bundle trusted besides the system's, and
    # whether member URLs may resolve to loopback/private addresses (off: no SSRF into the
    # registry's own network; tests and single-host demos turn it on).
    webhook_ca_file: Path | None = None
    webhook_allow_private_networks: bool = False
    webhook_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        inst = Path(self.instance_path)
        object.__setattr__(self, "instance_path", inst)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{inst / 'registry.db'}")
        defaults = {
            "signing_key_file": inst / "registry-signing.key",
            "master_keys_file": inst / "master.keys",
            "blind_index_key_file": inst / "blind-index.key",
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``REGISTRY_*`` environment variables; overrides win."""
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        if "REGISTRY_INSTANCE" in env:
            values["instance_path"] = Path(env["REGISTRY_INSTANCE"])
        simple = {
            "REGISTRY_DATABASE_URL": "database_url",
            "REGISTRY_MASTER_KEYS": "master_keys_text",
            "REGISTRY_BLIND_INDEX_KEY": "blind_index_key_text",
            "REGISTRY_PUBLIC_BASE_URL": "public_base_url",
            "REGISTRY_NOTIFIER": "notifier",
            "REGISTRY_SMS_GATEWAY_URL": "sms_gateway_url",
        }
        for var, name in simple.items():
            if env.get(var):
                values[name] = env[var]
        files = {
            "REGISTRY_SIGNING_KEY_FILE": "signing_key_file",
            "REGISTRY_MASTER_KEYS_FILE": "master_keys_file",
            "REGISTRY_BLIND_INDEX_KEY_FILE": "blind_index_key_file",
        }
        for var, name in files.items():
            if env.get(var):
                values[name] = Path(env[var])
        if env.get("REGISTRY_MAX_REQUEST_BYTES"):
            values["max_request_bytes"] = int(env["REGISTRY_MAX_REQUEST_BYTES"])
        numbers = {
            "REGISTRY_SESSION_IDLE_SECONDS": "session_idle_seconds",
            "REGISTRY_SESSION_MAX_SECONDS": "session_max_seconds",
            "REGISTRY_TRUSTED_PROXIES": "trusted_proxies",
        }
        for var, name in numbers.items():
            if env.get(var):
                values[name] = int(env[var])
        if env.get("REGISTRY_COOKIE_SECURE"):
            flag = env["REGISTRY_COOKIE_SECURE"].strip().lower()
            values["session_cookie_secure"] = flag not in ("0", "false", "no", "off")
        if env.get("REGISTRY_WEBHOOK_CA_FILE"):
            values["webhook_ca_file"] = Path(env["REGISTRY_WEBHOOK_CA_FILE"])
        if env.get("REGISTRY_WEBHOOK_ALLOW_PRIVATE_NETWORKS"):
            flag = env["REGISTRY_WEBHOOK_ALLOW_PRIVATE_NETWORKS"].strip().lower()
            values["webhook_allow_private_networks"] = flag in ("1", "true", "yes", "on")
        if env.get("REGISTRY_WEBHOOK_TIMEOUT_SECONDS"):
            values["webhook_timeout_seconds"] = float(env["REGISTRY_WEBHOOK_TIMEOUT_SECONDS"])
        values.update(overrides)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **overrides)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
