"""Webhooks: members' HTTPS URLs, and the worker that drains the alert outbox into them.

Delivery is at least once. The worker claims due outbox rows in a short transaction (on
PostgreSQL ``FOR UPDATE SKIP LOCKED``, so several workers share the work; on SQLite ``BEGIN
IMMEDIATE`` serializes the claim), pushes their ``next_attempt_at`` out by a lease and counts the
attempt, commits, and only then makes the HTTP requests: no database lock is held across the
network. A worker that dies mid-request leaves the row to come due again when the lease ends,
and the alert is sent again with the same body and ``event_id``; receivers dedupe on it.

Each request is signed by the registry's Ed25519 key (RFC 9421, the profile members use
towards the registry: ``@method``, ``@target-uri``, ``content-digest``, ``created``,
``nonce``), so a member verifies it with the key published at ``/v1/registry-keys``.
Redirects are never followed, timeouts are short, and by default the URL must resolve to
public addresses only (the connection goes to the address that was checked), so a member
cannot point the registry at its own internal network.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import logging
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from crypto import httpsig
from registry.alerts import DeliveryState
from registry.errors import FieldError, NotFound, ValidationFailed
from registry.models import Alert, AlertDelivery, Institution, MemberStatus, Webhook
from registry.policy import Policy
from registry.secrets import KeyMaterial
from registry.settings import Settings

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
USER_AGENT = "delinquency-registry-webhooks/1"
_RANDOM = secrets.SystemRandom()


# --- the member's URL ----------------------------------------------------------------------


def _url_error(rule: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        "the webhook URL is not acceptable", errors=[FieldError("url", rule, message)]
    )


def normalize_url(url: str, *, allow_private: bool) -> str:
    """The URL as the registry will sign it (``@target-uri``), or a 422 naming the rule.

    HTTPS only: an alert names a borrower (masked) and a record, which must not cross a
    network in the clear. Lower-case host, no default port, ``/`` for an empty path.
    """
    if len(url) > MAX_URL_LENGTH:
        raise _url_error("max_length", f"must be at most {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise _url_error("format", "must be an ASCII URL without spaces (punycode the host)")
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise _url_error("https_only", "must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise _url_error("no_credentials", "must not carry a user name or password")
    if parts.fragment or url.endswith("#"):
        raise _url_error("no_fragment", "must not have a #fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise _url_error("host_required", "must name a host")
    try:
        port = parts.port
    except ValueError:
        raise _url_error("format", "the port must be a number from 1 to 65535") from None
    if port == 0:
        raise _url_error("format", "the port must be a number from 1 to 65535")
    literal = _ip_literal(host)
    if literal is not None and not allow_private and not literal.is_global:
        raise _url_error("public_address", "must not be a private, loopback or local address")
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != 443:
        authority = f"{authority}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"https://{authority}{parts.path or '/'}{query}"


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def set_webhook(
    session: Session, settings: Settings, member: Institution, url: str, now: dt.datetime
) -> Webhook:
    """Register or replace the member's URL; pending deliveries go to the new one."""
    normalized = normalize_url(url, allow_private=settings.webhook_allow_private_networks)
    webhook = session.scalar(select(Webhook).where(Webhook.institution_id == member.id))
    if webhook is None:
        webhook = Webhook(institution_id=member.id, url=normalized, created_at=now, updated_at=now)
        session.add(webhook)
    else:
        webhook.url = normalized
        webhook.updated_at = now
    return webhook


def get_webhook(session: Session, member: Institution) -> Webhook:
    webhook = session.scalar(select(Webhook).where(Webhook.institution_id == member.id))
    if webhook is None:
        raise NotFound("this member has no webhook registered", code="webhook_not_set")
    return webhook


def remove_webhook(session: Session, member: Institution, now: dt.datetime) -> int:
    """Remove the URL and cancel pending deliveries (the alerts stay in the pull API)."""
    webhook = get_webhook(session, member)
    session.delete(webhook)
    result = session.execute(
        update(AlertDelivery)
        .where(
            AlertDelivery.institution_id == member.id,
            AlertDelivery.state == DeliveryState.PENDING.value,
        )
        .values(state=DeliveryState.CANCELLED.value, last_error="webhook_removed", claim=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- one HTTP request ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one attempt gave: ``error`` is a short code, never a message or a URL."""

    ok: bool
    status: int | None = None
    error: str | None = None


Sender = Callable[[str, dict[str, str], bytes], Outcome]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address already checked, with SNI and certificate checks for the host."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        addresses: list[str],
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._addresses = addresses
        self._tls = context
        self.aborted = False

    def abort(self) -> None:
        """Cut a request past its deadline (from a timer thread).

        The socket timeout bounds each read, not the whole exchange: a peer that trickles a
        byte at a time would otherwise hold the worker indefinitely.
        """
        self.aborted = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def connect(self) -> None:
        error: OSError | None = None
        for address in self._addresses:
            try:
                raw = socket.create_connection((address, self.port), self.timeout)
            except OSError as exc:
                error = exc
                continue
            try:
                self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
            except BaseException:
                raw.close()
                raise
            if self.aborted:
                raise TimeoutError("deadline passed while connecting")
            return
        raise error or OSError("no address")


def _resolve(host: str, port: int, allow_private: bool) -> list[str] | Outcome:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return Outcome(ok=False, error="dns_error")
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        return Outcome(ok=False, error="dns_error")
    if not allow_private and any(not ipaddress.ip_address(a).is_global for a in addresses):
        # NOTE: all or nothing, so a name that also resolves to an internal address is refused.
        return Outcome(ok=False, error="address_not_allowed")
    return addresses


class HttpSender:
    """POSTs with the standard library: no redirects, short timeouts, TLS verified."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context = ssl.create_default_context()
        if settings.webhook_ca_file is not None:
            self._context.load_verify_locations(cafile=str(settings.webhook_ca_file))

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        resolved = _resolve(host, port, self._settings.webhook_allow_private_networks)
        if isinstance(resolved, Outcome):
            return resolved
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = _PinnedHTTPSConnection(
            host,
            port,
            addresses=resolved,
            timeout=self._settings.webhook_timeout_seconds,
            context=self._context,
        )
        # Connecting, the handshake and the answer each get the timeout; all of it at most 3x.
        deadline = threading.Timer(3 * self._settings.webhook_timeout_seconds, connection.abort)
        deadline.daemon = True
        deadline.start()
        try:
            connection.request("POST", target, body=body, headers=headers)
            status = connection.getresponse().status  # the body is never read: not needed
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(ok=False, error=_failure(exc, aborted=connection.aborted))
        finally:
            deadline.cancel()
            connection.close()
        if connection.aborted:
            # A cut connection reads as end of headers: whatever status was parsed is not real.
            return Outcome(ok=False, error="timeout")
        if 200 <= status < 300:
            return Outcome(ok=True, status=status)
        if 300 <= status < 400:
            return Outcome(ok=False, status=status, error="redirect_not_followed")
        return Outcome(ok=False, status=status, error=f"http_{status}")


def _failure(exc: BaseException, *, aborted: bool) -> str:
    """A short, stable code for a failed attempt (never the message: it may hold the URL)."""
    if aborted or isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, http.client.HTTPException):
        return "protocol_error"
    return "connection_error"


def signed_headers(
    material: KeyMaterial, url: str, body: bytes, now: dt.datetime
) -> dict[str, str]:
    """Headers of one attempt: a fresh RFC 9421 signature (new ``created`` and nonce)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    headers.update(
        httpsig.sign_request(
            method="POST",
            url=url,
            headers=headers,
            body=body,
            key=material.signing_key,
            keyid=material.signing_keyid,
            created=int(now.timestamp()),
            nonce=secrets.token_urlsafe(24),
        )
    )
    return headers


# --- the worker ----------------------------------------------------------------------------


def backoff_seconds(policy: Policy, attempts: int, jitter: float) -> float:
    """Delay after the ``attempts``-th failure: base x 2^(attempts-1), capped, "equal jitter".

    ``jitter`` in [0, 1) spreads retries over the upper half of the delay, so members that come
    back after an outage are not hit by every worker at the same instant.
    """
    exponent = min(max(attempts - 1, 0), 62)
    delay = min(
        policy.webhook_backoff_cap_seconds, policy.webhook_backoff_base_seconds * 2.0**exponent
    )
    return delay / 2 + delay / 2 * jitter


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    claim: str
    event_id: str
    member: str
    url: str | None
    body: bytes


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    cancelled: int = 0

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.dead + self.cancelled

    def add(self, other: DeliveryReport) -> None:
        self.delivered += other.delivered
        self.retrying += other.retrying
        self.dead += other.dead
        self.cancelled += other.cancelled

    def __str__(self) -> str:
        return (
            f"delivered={self.delivered} retrying={self.retrying} dead={self.dead} "
            f"cancelled={self.cancelled}"
        )


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Deliverer:
    """Drains the alert outbox; several may run at once, on one host or many."""

    def __init__(
        self,
        material: KeyMaterial,
        settings: Settings,
        policy: Policy,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        send: Sender | None = None,
        jitter: Callable[[], float] = _RANDOM.random,
    ) -> None:
        self._material = material
        self._settings = settings
        self._policy = policy
        self._clock = clock
        self._send = send or HttpSender(settings)
        self._jitter = jitter

    def run_once(self, sessions: sessionmaker[Session], *, batch: int = 10) -> DeliveryReport:
        """Claim up to ``batch`` due deliveries, send them, record each outcome."""
        report = DeliveryReport()
        for job in self._claim(sessions, batch):
            if job.url is None:
                outcome = Outcome(ok=False, error="webhook_removed")
            else:
                headers = signed_headers(self._material, job.url, job.body, self._clock())
                outcome = self._send(job.url, headers, job.body)
            state = self._finish(sessions, job, outcome)
            log.info(
                "alert %s to %s: %s (%s)",
                job.event_id,
                job.member,
                state,
                outcome.error or outcome.status,
            )
            if state == DeliveryState.DELIVERED:
                report.delivered += 1
            elif state == DeliveryState.DEAD:
                report.dead += 1
            elif state == DeliveryState.CANCELLED:
                report.cancelled += 1
            elif state == DeliveryState.PENDING:
                report.retrying += 1
        return report

    def drain(
        self, sessions: sessionmaker[Session], *, batch: int = 10, max_batches: int = 1000
    ) -> DeliveryReport:
        """Send everything due now (bounded, so one call always returns)."""
        total = DeliveryReport()
        for _ in range(max_batches):
            done = self.run_once(sessions, batch=batch)
            total.add(done)
            if done.attempted < batch:
                break
        return total

    def _lease(self, jobs: int) -> dt.timedelta:
        # A send is cut at 3x the timeout (plus name resolution); jobs are sent in turn. A
        # claim that outlives its lease is due again: at worst a duplicate, never a loss.
        per_job = 4 * self._settings.webhook_timeout_seconds + 1
        return dt.timedelta(seconds=max(jobs * per_job, 2.0))

    def _claim(self, sessions: sessionmaker[Session], batch: int) -> list[_Job]:
        with sessions() as session, session.begin():
            now = self._clock()
            rows = list(
                session.scalars(
                    select(AlertDelivery)
                    .join(Institution, Institution.id == AlertDelivery.institution_id)
                    .where(
                        AlertDelivery.state == DeliveryState.PENDING.value,
                        AlertDelivery.next_attempt_at <= now,
                        # A suspended member gets nothing until it is reinstated.
                        Institution.status == MemberStatus.ACTIVE.value,
                    )
                    .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True, of=AlertDelivery)
                )
            )
            if not rows:
                return []
            claim = secrets.token_hex(16)
            until = now + self._lease(len(rows))
            for row in rows:
                row.claim = claim
                row.attempts += 1
                row.last_attempt_at = now
                row.next_attempt_at = until
            alerts = {
                alert_id: (event_id, body)
                for alert_id, event_id, body in session.execute(
                    select(Alert.id, Alert.event_id, Alert.body).where(
                        Alert.id.in_([r.alert_id for r in rows])
                    )
                )
            }
            member_ids = {r.institution_id for r in rows}
            urls = {
                member_id: url
                for member_id, url in session.execute(
                    select(Webhook.institution_id, Webhook.url).where(
                        Webhook.institution_id.in_(member_ids)
                    )
                )
            }
            codes = {
                member_id: code
                for member_id, code in session.execute(
                    select(Institution.id, Institution.code).where(Institution.id.in_(member_ids))
                )
            }
            return [
                _Job(
                    delivery_id=row.id,
                    claim=claim,
                    event_id=alerts[row.alert_id][0],
                    member=codes[row.institution_id],
                    url=urls.get(row.institution_id),
                    body=alerts[row.alert_id][1],
                )
                for row in rows
            ]

    def _finish(self, sessions: sessionmaker[Session], job: _Job, outcome: Outcome) -> str:
        """Record one attempt's outcome; returns the delivery's state afterwards."""
        with sessions() as session, session.begin():
            now = self._clock()
            row = session.get(AlertDelivery, job.delivery_id, with_for_update=True)
            if row is None:
                return "gone"  # the record was cleared meanwhile, and its alerts with it
            if row.state != DeliveryState.PENDING:
                return row.state
            if outcome.ok:
                # A success counts even if the lease ran out and another worker took the row:
                # the member has the alert, whatever that other attempt does.
                row.state = DeliveryState.DELIVERED.value
                row.delivered_at = now
                row.claim = None
                row.last_status, row.last_error = outcome.status, None
                return row.state
            if row.claim != job.claim:
                return row.state  # another worker owns the row now; its outcome will count
            row.claim = None
            row.last_status, row.last_error = outcome.status, outcome.error
            if outcome.error == "webhook_removed":
                row.state = DeliveryState.CANCELLED.value
            elif row.attempts >= self._policy.webhook_max_attempts:
                row.state = DeliveryState.DEAD.value
                row.dead_at = now
            else:
                delay = backoff_seconds(self._policy, row.attempts, self._jitter())
                row.next_attempt_at = now + dt.timedelta(seconds=delay)
            return row.state
