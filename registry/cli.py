"""The operator's ``registry`` command: set up, migrate, admit members, manage their keys."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.orm import Session

from registry import alerts, members, notify, operators, portal_housekeeping
from registry.clearing import Clearer
from registry.db import make_engine, make_session_factory, upgrade_to_head
from registry.errors import RegistryError, SetupError
from registry.inquiries import Inquiries
from registry.policy import DEFAULT_POLICY
from registry.secrets import init_instance, load_key_material
from registry.settings import Settings
from registry.signin import enrol as enrol_borrower
from registry.sweep_log import record_sweep
from registry.webhooks import Deliverer


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _when(value: str | None) -> dt.datetime | None:
    """Parse an ISO 8601 instant; a value without a zone is taken as UTC."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "expected an ISO 8601 date-time such as 2026-12-01T00:00:00Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@contextmanager
def _session(ctx: click.Context) -> Iterator[Session]:
    settings: Settings = ctx.obj
    engine = make_engine(settings)
    session = make_session_factory(engine)()
    try:
        yield session
        session.commit()
    except RegistryError as exc:
        session.rollback()
        raise click.ClickException(f"{exc.detail} [{exc.code}]") from None
    finally:
        session.close()
        engine.dispose()


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Operate the shared delinquency registry (settings from REGISTRY_* variables)."""
    ctx.obj = Settings.from_env()


@cli.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the instance folder and any missing secret (never overwrites one)."""
    created = init_instance(ctx.obj)
    for path in created:
        click.echo(f"created {path} (mode 0600)")
    if not created:
        click.echo("instance already initialised; nothing created")


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Upgrade the database schema to the current head."""
    settings: Settings = ctx.obj
    engine = make_engine(settings)
    if settings.is_sqlite and engine.url.database:
        # NOTE: the file holds no plaintext personal data, but nobody else needs to read it;
        # SQLite gives its -wal and -shm files the same mode as the database file.
        path = Path(engine.url.database)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        upgrade_to_head(engine)
    finally:
        engine.dispose()
    click.echo("database at head")


@cli.group("members")
def members_group() -> None:
    """Admit, list and suspend member institutions."""


@members_group.command("add")
@click.argument("code")
@click.option("--name", required=True, help="the institution's legal name")
@click.pass_context
def members_add(ctx: click.Context, code: str, name: str) -> None:
    """Admit a member under CODE (2-32 characters of A-Z 0-9 _ -)."""
    with _session(ctx) as session:
        member = members.admit(session, code, name, _now())
        click.echo(f"admitted {member.code}")


@members_group.command("list")
@click.pass_context
def members_list(ctx: click.Context) -> None:
    """Every member, its status and its count of reports refused for breaking a cap."""
    with _session(ctx) as session:
        click.echo(f"{'CODE':<16} {'STATUS':<10} {'CAP VIOLATIONS':>14}  NAME")
        for member, violations in members.list_members(session):
            click.echo(f"{member.code:<16} {member.status:<10} {violations:>14}  {member.name}")


@members_group.command("suspend")
@click.argument("code")
@click.pass_context
def members_suspend(ctx: click.Context, code: str) -> None:
    """Suspend a member: its requests are refused until it is reinstated."""
    with _session(ctx) as session:
        members.suspend(session, code, _now())
        click.echo(f"suspended {code}")


@members_group.command("reinstate")
@click.argument("code")
@click.pass_context
def members_reinstate(ctx: click.Context, code: str) -> None:
    """Lift a suspension."""
    with _session(ctx) as session:
        members.reinstate(session, code)
        click.echo(f"reinstated {code}")


@cli.group("keys")
def keys_group() -> None:
    """Register, list and revoke members' Ed25519 keys."""


@keys_group.command("add")
@click.argument("code")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--not-before", help="start of validity (ISO 8601; default now)")
@click.option("--not-after", help="end of validity (ISO 8601; default none)")
@click.pass_context
def keys_add(
    ctx: click.Context, code: str, public_key: Path, not_before: str | None, not_after: str | None
) -> None:
    """Register PUBLIC_KEY (PEM) for member CODE and print its key id."""
    with _session(ctx) as session:
        key = members.add_key(
            session,
            code,
            public_key.read_bytes(),
            _now(),
            not_before=_when(not_before),
            not_after=_when(not_after),
        )
        click.echo(key.keyid)


@keys_group.command("list")
@click.argument("code", required=False)
@click.pass_context
def keys_list(ctx: click.Context, code: str | None) -> None:
    """Keys of every member, or of CODE, with their state now."""
    now = _now()
    with _session(ctx) as session:
        click.echo(f"{'KEYID':<34} {'MEMBER':<12} {'STATE':<14} NOT_BEFORE / NOT_AFTER / REVOKED")
        for key in members.list_keys(session, code):
            window = " / ".join(
                t.isoformat(timespec="seconds") if t else "-"
                for t in (key.not_before, key.not_after, key.revoked_at)
            )
            click.echo(
                f"{key.keyid:<34} {key.institution.code:<12} {key.state_at(now):<14} {window}"
            )


@keys_group.command("revoke")
@click.argument("keyid")
@click.option("--at", "at", help="revocation instant (ISO 8601; default now)")
@click.pass_context
def keys_revoke(ctx: click.Context, keyid: str, at: str | None) -> None:
    """Revoke KEYID; anything it signs from then on is refused."""
    with _session(ctx) as session:
        key = members.revoke_key(session, keyid, _now(), at=_when(at))
        click.echo(f"revoked {key.keyid} from {key.revoked_at}")


@cli.group("operators")
def operators_group() -> None:
    """Register, list and revoke operators (registry staff, regulators) and their keys."""


@operators_group.command("add")
@click.argument("name")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def operators_add(ctx: click.Context, name: str, public_key: Path) -> None:
    """Register operator NAME with PUBLIC_KEY (Ed25519 PEM) and print its key id."""
    with _session(ctx) as session:
        click.echo(operators.add(session, name, public_key.read_bytes(), _now()).keyid)


@operators_group.command("list")
@click.pass_context
def operators_list(ctx: click.Context) -> None:
    """Every operator, its key id and whether it is revoked."""
    with _session(ctx) as session:
        click.echo(f"{'NAME':<20} {'KEYID':<34} REVOKED")
        for op in operators.list_operators(session):
            revoked = op.revoked_at.isoformat(timespec="seconds") if op.revoked_at else "-"
            click.echo(f"{op.name:<20} {op.keyid:<34} {revoked}")


@operators_group.command("revoke")
@click.argument("name")
@click.pass_context
def operators_revoke(ctx: click.Context, name: str) -> None:
    """Revoke operator NAME's key from now on."""
    with _session(ctx) as session:
        operators.revoke(session, name, _now())
        click.echo(f"revoked operator {name}")


@cli.command("enrol")
@click.argument("national_id")
@click.option("--phone", help="a phone the person gave in person; later codes go there")
@click.pass_context
def enrol(ctx: click.Context, national_id: str, phone: str | None) -> None:
    """After checking NATIONAL_ID's identity in person: print a one-time enrolment code.

    The code signs the person in to the portal instead of an SMS code (valid 3 days, shown
    only now; the registry keeps its hash). Prefer typing the ID at the prompt of `registry
    enrol -` so that it stays out of the shell history.
    """
    settings: Settings = ctx.obj
    if national_id == "-":
        national_id = click.prompt("national ID", hide_input=True)
    material = load_key_material(settings)
    with _session(ctx) as session:
        code = enrol_borrower(session, material, national_id=national_id, phone=phone, now=_now())
    click.echo(code)


@cli.command("notifications")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def notifications(ctx: click.Context, as_json: bool) -> None:
    """Show the outbox's live messages, decrypted (the development notifier's inbox).

    Expired messages are purged first. With the webhook notifier, sent messages are no longer
    readable here: their content is destroyed on delivery.
    """
    settings: Settings = ctx.obj
    material = load_key_material(settings)
    with _session(ctx) as session:
        now = _now()
        notify.purge(session, now)
        for message in notify.outbox(session, material, now):
            if as_json:
                click.echo(json.dumps(message.as_json(), ensure_ascii=False))
                continue
            when = message.created_at.isoformat(timespec="seconds")
            to = message.to or "(no destination on file)"
            click.echo(f"{when} {message.ref} {message.audience} {message.template} -> {to}")
            for line in message.text.splitlines():
                click.echo(f"    {line}")


def _sweep_once(settings: Settings) -> str:
    engine = make_engine(settings)
    try:
        material = load_key_material(settings)
        clearer = Clearer(material, DEFAULT_POLICY)
        report = clearer.sweep(make_session_factory(engine), _now())
        with make_session_factory(engine)() as session, session.begin():
            record_sweep(session, report.cleared, _now())
        kept = alerts.housekeeping(make_session_factory(engine), DEFAULT_POLICY, _now())
        forgotten = Inquiries(material, DEFAULT_POLICY).expire(make_session_factory(engine), _now())
        chores = portal_housekeeping.sweep(make_session_factory(engine), settings, _now())
    finally:
        engine.dispose()
    cleared = ", ".join(f"{rule}={n}" for rule, n in report.cleared.items())
    return (
        f"cleared: {cleared}; certificates expired={report.certificates_expired}; "
        f"tombstones anonymised={report.tombstones_anonymised}; "
        f"nonces purged={report.nonces_purged}; disputes expired={report.disputes_expired}; "
        f"subscriptions ended={kept.subscriptions_ended}; alerts expired={kept.alerts_deleted}; "
        f"inquiries expired={forgotten}; {chores}"
    )


@cli.command()
@click.pass_context
def sweep(ctx: click.Context) -> None:
    """Apply every time-based rule once (retention, maximum age, certificate expiry).

    Idempotent, and safe to run while another sweep or the worker runs.
    """
    click.echo(_sweep_once(ctx.obj))


@cli.command()
@click.option("--interval", default=300, show_default=True, help="seconds between sweeps")
@click.option("--poll", default=2.0, show_default=True, help="seconds between outbox polls")
@click.option("--once", is_flag=True, help="run one sweep, deliver what is due, and exit")
@click.pass_context
def worker(ctx: click.Context, interval: int, poll: float, once: bool) -> None:
    """Run the sweeper on a schedule and deliver alert webhooks from the outbox, until stopped."""
    next_sweep = 0.0
    with _alert_deliverer(ctx.obj) as deliver, _notification_sender(ctx.obj) as send_messages:
        while True:
            if time.monotonic() >= next_sweep:
                click.echo(f"{_now().isoformat(timespec='seconds')} {_sweep_once(ctx.obj)}")
                next_sweep = time.monotonic() + interval
            deliver()
            send_messages()
            if once:
                return
            time.sleep(poll)


@contextmanager
def _notification_sender(settings: Settings) -> Iterator[Callable[[], None]]:
    """Hands due borrower/member messages to the SMS gateway (webhook notifier only)."""
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    notifier = notify.make_notifier(settings)
    material = load_key_material(settings)

    def send() -> None:
        if not notifier.delivers:
            return
        done = notify.deliver_pending(sessions, material, notifier, _now())
        if done.sent or done.retried or done.failed:
            click.echo(f"{_now().isoformat(timespec='seconds')} notifications: {done}")

    try:
        yield send
    finally:
        engine.dispose()


@contextmanager
def _alert_deliverer(settings: Settings, batch: int = 10) -> Iterator[Callable[[], None]]:
    """Sends every alert webhook due now, printing a line when something was attempted."""
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    deliverer = Deliverer(load_key_material(settings), settings, DEFAULT_POLICY)

    def deliver() -> None:
        done = deliverer.drain(sessions, batch=batch)
        if done.attempted:
            click.echo(f"{_now().isoformat(timespec='seconds')} webhooks: {done}")

    try:
        yield deliver
    finally:
        engine.dispose()


@cli.group("alerts")
def alerts_group() -> None:
    """Early-warning alerts: webhook delivery from the outbox."""


@alerts_group.command("deliver")
@click.option("--once", is_flag=True, help="deliver what is due now and exit")
@click.option("--poll", default=2.0, show_default=True, help="seconds between outbox polls")
@click.option("--batch", default=10, show_default=True, help="deliveries claimed at a time")
@click.pass_context
def alerts_deliver(ctx: click.Context, once: bool, poll: float, batch: int) -> None:
    """Deliver alert webhooks (what `registry worker` also does); safe beside other workers."""
    with _alert_deliverer(ctx.obj, batch) as deliver:
        while True:
            deliver()
            if once:
                return
            time.sleep(poll)


def main() -> None:
    try:
        cli()
    except SetupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
