"""The member bank's ``registry-client`` command: keys, signing, submission, receipts.

Exit codes let scripts tell outcomes apart: 0 success, 1 refused or invalid (do not retry
unchanged), 2 usage error (click), 3 registry unreachable or failing (safe to retry later: a
resubmitted envelope gets its original receipt).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from client import batch
from client import keys as keyfiles
from client.errors import ClientError, ReceiptInvalid, RegistryError, TransportError
from client.http import RegistryClient
from client.receipts import load_registry_keys, verify_receipt
from client.reports import sign_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

EXIT_REFUSED = 1
EXIT_UNAVAILABLE = 3

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(dir_okay=False, writable=True, path_type=Path)


class _Cli(click.Group):
    """Turns the client's errors into a message on stderr and an exit code, for every command."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RegistryError as exc:
            unavailable = exc.status >= 500 or exc.status == 429
            _fail(ctx, exc.describe(), EXIT_UNAVAILABLE if unavailable else EXIT_REFUSED)
        except TransportError as exc:
            _fail(ctx, str(exc), EXIT_UNAVAILABLE)
        except ReceiptInvalid as exc:
            _fail(ctx, f"receipt invalid: {exc}", EXIT_REFUSED)
        except ClientError as exc:
            _fail(ctx, str(exc), EXIT_REFUSED)
        return None


def _fail(ctx: click.Context, message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    ctx.exit(code)


def _client(url: str, key_path: Path, timeout: float, retries: int) -> RegistryClient:
    key: Ed25519PrivateKey = keyfiles.load_private_key(key_path)
    return RegistryClient(url, key, keyfiles.key_id(key), timeout=timeout, retries=retries)


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ClientError(f"cannot write {path}: {exc.strerror}") from None


def _echo_bytes(data: bytes) -> None:
    """Write bytes unchanged to stdout, so ``> file`` keeps them byte for byte.

    Only an interactive terminal gets a trailing newline, for the prompt's sake.
    """
    click.echo(data, nl=sys.stdout.isatty() and not data.endswith(b"\n"))


_url_option = click.option("--url", required=True, help="registry base URL, e.g. https://host")
_key_option = click.option(
    "--key", "key_path", required=True, type=_FILE, help="the member's private key (PEM)"
)
_timeout_option = click.option(
    "--timeout", default=30.0, show_default=True, help="seconds per HTTP attempt"
)
_retries_option = click.option(
    "--retries",
    default=3,
    show_default=True,
    help="extra attempts after a connection error, 429 or 5xx",
)


@click.group(cls=_Cli)
@click.version_option("0.1.0", prog_name="registry-client")
def cli() -> None:
    """Sign and submit delinquency reports to the shared registry; keep and check receipts."""


@cli.command()
@click.option(
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="directory for NAME.key.pem (mode 0600) and NAME.pub.pem",
)
@click.option("--name", default="member", show_default=True, help="file name prefix")
def keygen(out_dir: Path, name: str) -> None:
    """Generate an Ed25519 key pair and print its key id.

    Send NAME.pub.pem to the registry operator (who runs `registry keys add CODE FILE`);
    the private key never leaves the bank.
    """
    pair = keyfiles.generate_key_pair(out_dir, name)
    click.echo(f"private key: {pair.private_path}", err=True)
    click.echo(f"public key:  {pair.public_path}", err=True)
    click.echo(pair.keyid)


@cli.command()
@click.argument("public_pem", type=_FILE)
def keyid(public_pem: Path) -> None:
    """Print the key id of PUBLIC_PEM (first 32 hex digits of SHA-256 of the raw key)."""
    click.echo(keyfiles.key_id_of_public_pem(public_pem.read_bytes()))


@cli.command()
@click.argument("report", type=_FILE)
@_key_option
@click.option("--out", type=_OUT, help="write the envelope here instead of stdout")
def sign(report: Path, key_path: Path, out: Path | None) -> None:
    """Sign REPORT.json (its exact bytes) into a DSSE envelope."""
    key = keyfiles.load_private_key(key_path)
    envelope = sign_file(report, key, keyfiles.key_id(key))
    if out is None:
        _echo_bytes(envelope)
    else:
        _write(out, envelope)
        click.echo(f"envelope written to {out}", err=True)


@cli.command()
@click.argument("envelope", type=_FILE)
@_url_option
@_key_option
@click.option("--receipt-out", type=_OUT, help="also write the receipt to this file")
@click.option(
    "--registry-keys",
    "registry_keys",
    help="file or URL of the registry keys: verify the receipt against the envelope",
)
@_timeout_option
@_retries_option
def submit(
    envelope: Path,
    url: str,
    key_path: Path,
    receipt_out: Path | None,
    registry_keys: str | None,
    timeout: float,
    retries: int,
) -> None:
    """Submit ENVELOPE.json and print the registry's receipt.

    A resubmission of the same envelope is answered 200 with the original receipt.
    """
    raw = envelope.read_bytes()
    result = _client(url, key_path, timeout, retries).submit(raw)
    if registry_keys is not None:
        verified = verify_receipt(result.receipt, load_registry_keys(registry_keys), envelope=raw)
        click.echo(f"receipt verified: log_index {verified['log_index']}", err=True)
    if receipt_out is not None:
        _write(receipt_out, result.receipt)
    state = "accepted (201 Created)" if result.created else "already accepted (200 OK)"
    click.echo(state, err=True)
    _echo_bytes(result.receipt)


@cli.command("submit-batch")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@_url_option
@_key_option
@click.option(
    "--state",
    "state_path",
    type=_OUT,
    help="state file (JSON lines: outcome and receipt per envelope) [default: SOURCE.state]",
)
@click.option(
    "--batch-size",
    default=batch.DEFAULT_CHUNK,
    show_default=True,
    type=click.IntRange(1, batch.MAX_CHUNK),
    help="envelopes per request",
)
@click.option(
    "--registry-keys",
    "registry_keys",
    help="file or URL of the registry keys: verify every receipt before recording it",
)
@click.option("--quiet", is_flag=True, help="no progress bar")
@_timeout_option
@_retries_option
def submit_batch(
    source: Path,
    url: str,
    key_path: Path,
    state_path: Path | None,
    batch_size: int,
    registry_keys: str | None,
    quiet: bool,
    timeout: float,
    retries: int,
) -> None:
    """Submit SOURCE (JSON lines of envelopes, or a directory of envelope files) in batches.

    Every outcome and receipt is appended to the state file as soon as its batch is answered;
    run the same command again after an interruption and it goes on where it stopped, sending
    nothing twice. Exit 0 if every report was accepted, 1 if some were refused (listed on
    stderr and in the state file), 3 if the registry could not be reached (rerun later).
    """
    client = _client(url, key_path, timeout, retries)
    check = None
    if registry_keys is not None:
        trusted = load_registry_keys(registry_keys)

        def check(raw: bytes, outcome: batch.Outcome) -> None:
            assert outcome.receipt is not None
            verify_receipt(outcome.receipt, trusted, envelope=raw)

    progress = None if quiet else batch.Progress(batch.count_envelopes(source))
    state = batch.StateFile(state_path or source.with_name(source.name + ".state"))
    with state:
        summary = batch.submit_file(
            source, state, client.submit_batch, chunk=batch_size, progress=progress, check=check
        )
    click.echo(
        f"{summary.total} envelopes: {summary.accepted} accepted now "
        f"({summary.resent} of them already before), {summary.refused} refused, "
        f"{summary.skipped} skipped (answered in an earlier run); state in {state.path}",
        err=True,
    )
    if summary.refused_before:
        click.echo(
            f"  {summary.refused_before} refused in an earlier run (see the state file)", err=True
        )
    if summary.refused or summary.refused_before:
        for code, n in sorted(summary.refusals.items()):
            click.echo(f"  refused {n} x {code}", err=True)
        raise click.exceptions.Exit(EXIT_REFUSED)


@cli.group()
def receipt() -> None:
    """Fetch receipts again and verify them."""


@receipt.command("get")
@click.argument("report_id")
@_url_option
@_key_option
@click.option("--out", type=_OUT, help="write the receipt here instead of stdout")
@_timeout_option
@_retries_option
def receipt_get(
    report_id: str, url: str, key_path: Path, out: Path | None, timeout: float, retries: int
) -> None:
    """Fetch the receipt of REPORT_ID (one of this member's reports)."""
    body = _client(url, key_path, timeout, retries).receipt(report_id)
    if out is None:
        _echo_bytes(body)
    else:
        _write(out, body)


@receipt.command("verify")
@click.argument("receipt_file", metavar="RECEIPT.json", type=_FILE)
@click.option(
    "--registry-keys",
    "registry_keys",
    required=True,
    help="registry keys JSON file, a PEM public key, or the /v1/registry-keys URL",
)
@click.option(
    "--envelope",
    type=_FILE,
    help="the envelope as submitted: check the receipt names its digest and report id",
)
@click.option("--report-id", help="check the receipt is for this report id")
def receipt_verify(
    receipt_file: Path, registry_keys: str, envelope: Path | None, report_id: str | None
) -> None:
    """Verify RECEIPT.json and print its payload; exit 1 naming the failed check."""
    payload = verify_receipt(
        receipt_file.read_bytes(),
        load_registry_keys(registry_keys),
        envelope=envelope.read_bytes() if envelope is not None else None,
        report_id=report_id,
    )
    click.echo(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False))


def main() -> None:
    """Console entry point (``registry-client``)."""
    cli()
