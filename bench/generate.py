"""Synthetic, realistic data for the benchmarks: signed reports, and bulk rows for big tables.

Two outputs:

- ``ReportStream``: signed DSSE envelopes as members would send them (valid GB 11643 IDs,
  several members, log-normal amounts within the charging caps, days past due skewed towards
  the first months, a share of accounts settled later in the stream);
- ``bulk_load``: rows written straight into the tables (borrowers, data keys, records) for
  the data-size benchmarks. What is measured there is the registry's answer time on a big
  table, not the cost of making it, so the rows are inserted in bulk with precomputed blind
  indexes. Only the rows a benchmark will read (``readable``) get real per-row data keys and
  ciphertexts; the others carry random bytes of the same sizes (never decrypted).

Run it alone to write a JSON-lines file of envelopes for the CLI:
``python bench/generate.py --members 3 --reports 10000 --out bench/data/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, insert, select

from crypto import dsse, ed25519
from crypto import envelope_encryption as ee
from registry.models import Borrower, DataKey, Delinquency, Institution
from registry.national_id import check_character
from registry.payload import PAYLOAD_TYPE
from registry.secrets import KeyMaterial
from registry.vault import DATA_KEY_VERSION

REGIONS = ("110101", "310104", "440305", "330106", "510107", "420102", "320102", "610113")
PRODUCTS = ("credit_card", "consumer_loan", "online_loan", "mortgage", "business_loan")
PRODUCT_WEIGHTS = (0.45, 0.25, 0.2, 0.05, 0.05)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀英华"
CENT = Decimal("0.01")


def national_id(serial: int) -> str:
    """A valid, unique GB 11643 number for each ``serial`` below about 80 million."""
    region = REGIONS[(serial // 18_000_000) % len(REGIONS)]
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=(serial // 1000) % 18_000)
    first17 = f"{region}{birth:%Y%m%d}{serial % 1000:03d}"
    return first17 + check_character(first17)


@dataclass
class Member:
    code: str
    key: Ed25519PrivateKey
    keyid: str

    @classmethod
    def new(cls, code: str) -> Member:
        key = ed25519.generate_private_key()
        return cls(code, key, ed25519.key_id(ed25519.public_key_raw(key)))

    def public_pem(self) -> bytes:
        return ed25519.public_key_to_pem(ed25519.public_key_raw(self.key))


@dataclass(frozen=True)
class Account:
    member: int
    account_ref: str
    serial: int
    principal: Decimal
    days_past_due: int
    product: str


class ReportStream:
    """Open reports for fresh accounts, and settlements of a share of them, signed."""

    def __init__(
        self, members: list[Member], *, seed: int = 7, settle_share: float = 0.2, tag: str = "b"
    ) -> None:
        self.members = members
        self.rng = random.Random(seed)
        self.settle_share = settle_share
        self.tag = tag
        self.today = dt.datetime.now(dt.UTC).date()
        self._next = 0

    def account(self, serial: int | None = None) -> Account:
        n = self._next
        self._next += 1
        rng = self.rng
        # Amounts: log-normal around 8,000 (cards and small loans), a long tail of big loans.
        principal = Decimal(math.exp(rng.gauss(9.0, 1.1))).quantize(CENT, ROUND_HALF_UP)
        principal = max(Decimal("50.00"), min(principal, Decimal("5000000.00")))
        # Days past due: most delinquencies are young; a few run for years.
        dpd = max(1, min(int(rng.expovariate(1 / 75)) + 1, 1500))
        product = rng.choices(PRODUCTS, PRODUCT_WEIGHTS)[0]
        return Account(
            member=n % len(self.members),
            account_ref=f"{self.tag}-{n:09d}",
            serial=n if serial is None else serial,
            principal=principal,
            days_past_due=dpd,
            product=product,
        )

    def open_document(self, account: Account) -> dict[str, Any]:
        rng, member = self.rng, self.members[account.member]
        cap_interest = (account.principal * Decimal("0.24") * account.days_past_due / 365).quantize(
            CENT, ROUND_HALF_UP
        )
        interest = (cap_interest * Decimal(rng.random())).quantize(CENT, ROUND_HALF_UP)
        penalty = (account.principal * Decimal("0.01") * Decimal(rng.random())).quantize(
            CENT, ROUND_HALF_UP
        )
        first = self.today - dt.timedelta(days=account.days_past_due - 1)
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
        return {
            "version": 1,
            "report_id": f"{account.account_ref}-1",
            "institution": member.code,
            "account_ref": account.account_ref,
            "sequence": 1,
            "kind": "open",
            "borrower": {
                "national_id": national_id(account.serial),
                "name": name,
                "phone": f"+86139{rng.randrange(10**8):08d}",
            },
            "product": account.product,
            "currency": "CNY",
            "overdue_principal": str(account.principal),
            "overdue_interest": str(interest),
            "penalty": str(penalty),
            "days_past_due": account.days_past_due,
            "first_delinquency_date": first.isoformat(),
            "as_of_date": self.today.isoformat(),
            "contact": {"status": "reachable"},
            "collection_stage": rng.choice(("reminder", "repayment_plan", "collection_agency")),
        }

    def settle_document(self, account: Account) -> dict[str, Any]:
        return {
            "version": 1,
            "report_id": f"{account.account_ref}-2",
            "institution": self.members[account.member].code,
            "account_ref": account.account_ref,
            "sequence": 2,
            "kind": "settle",
            "settlement": {"type": "paid_in_full", "date": self.today.isoformat()},
        }

    def sign(self, member: Member, document: dict[str, Any]) -> bytes:
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        return dsse.sign_envelope(PAYLOAD_TYPE, body, member.key, member.keyid)

    def batches(self, member: int, size: int) -> Iterator[list[bytes]]:
        """Endless batches for one member: opens, and settlements of earlier opens."""
        waiting: list[Account] = []
        while True:
            batch: list[bytes] = []
            while len(batch) < size:
                if waiting and self.rng.random() < self.settle_share:
                    account = waiting.pop(0)
                    batch.append(self.sign(self.members[member], self.settle_document(account)))
                    continue
                account = self.account()
                account = Account(member, *(getattr(account, f) for f in _ACCOUNT_TAIL))
                batch.append(self.sign(self.members[member], self.open_document(account)))
                waiting.append(account)
            yield batch

    def single(self, member: int) -> bytes:
        account = self.account()
        account = Account(member, *(getattr(account, f) for f in _ACCOUNT_TAIL))
        return self.sign(self.members[member], self.open_document(account))


_ACCOUNT_TAIL = ("account_ref", "serial", "principal", "days_past_due", "product")


# --- bulk rows -----------------------------------------------------------------------------


@dataclass
class Loaded:
    """What a bulk load made: the serials whose rows can be read (real keys and ciphertexts)."""

    borrowers: int
    readable: list[tuple[int, int]]  # (serial, member index)


def _ids_from(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as c:
        return tuple(  # type: ignore[return-value]
            (c.scalar(select(func.coalesce(func.max(m.id), 0))) or 0) + 1
            for m in (DataKey, Borrower, Delinquency)
        )


def bulk_load(
    engine: Engine,
    material: KeyMaterial,
    institutions: list[int],
    *,
    start: int,
    count: int,
    readable_every: int,
    settled_days_ago: int | None = None,
    chunk: int = 5_000,
    seed: int = 11,
) -> Loaded:
    """Insert ``count`` borrowers with one record each (serials ``start`` .. ``start+count-1``).

    Every ``readable_every``-th row gets real keys and ciphertexts. With ``settled_days_ago``
    every record is settled that long ago (for the sweeper benchmark).
    """
    rng = random.Random(seed + start)
    index = material.blind_index
    key_id, borrower_id, record_id = _ids_from(engine)
    today = dt.datetime.now(dt.UTC).date()
    now = dt.datetime.now(dt.UTC)
    readable: list[tuple[int, int]] = []
    keyring = material.keyring
    for offset in range(0, count, chunk):
        keys: list[dict[str, Any]] = []
        borrowers: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        for serial in range(start + offset, start + min(count, offset + chunk)):
            member = serial % len(institutions)
            nid = national_id(serial)
            real = serial % readable_every == 0 or settled_days_ago is not None
            b_ref, r_ref = secrets.token_hex(16), secrets.token_hex(16)
            account_ref = f"bulk-{serial:09d}"
            b_key_ref, r_key_ref = secrets.token_hex(16), secrets.token_hex(16)
            if real:
                b_plain, r_plain = ee.new_data_key(), ee.new_data_key()
                b_version, b_wrapped = ee.wrap_data_key(keyring, b_plain, key_ref=b_key_ref)
                r_version, r_wrapped = ee.wrap_data_key(keyring, r_plain, key_ref=r_key_ref)

                def seal(key: bytes, table: str, column: str, ref: str, value: str) -> bytes:
                    aad = ee.field_aad(table, column, ref, DATA_KEY_VERSION)
                    return ee.encrypt_field(key, value.encode(), aad)

                nid_ct = seal(b_plain, "borrowers", "national_id", b_ref, nid)
                account_ct = seal(r_plain, "delinquencies", "account_ref", r_ref, account_ref)
                name_ct = seal(r_plain, "delinquencies", "name", r_ref, "王伟")
                phone_ct = seal(r_plain, "delinquencies", "phone", r_ref, "+8613900000000")
                readable.append((serial, member))
            else:
                b_version = r_version = 1
                b_wrapped, r_wrapped = secrets.token_bytes(60), secrets.token_bytes(60)
                nid_ct = secrets.token_bytes(46)
                account_ct, name_ct, phone_ct = (secrets.token_bytes(40) for _ in range(3))
            keys.append(
                {
                    "id": key_id,
                    "ref": b_key_ref,
                    "master_version": b_version,
                    "wrapped": b_wrapped,
                    "created_at": now,
                }
            )
            keys.append(
                {
                    "id": key_id + 1,
                    "ref": r_key_ref,
                    "master_version": r_version,
                    "wrapped": r_wrapped,
                    "created_at": now,
                }
            )
            borrowers.append(
                {
                    "id": borrower_id,
                    "ref": b_ref,
                    "id_index": index.digest("national_id", nid),
                    "data_key_id": key_id,
                    "national_id_ct": nid_ct,
                    "created_at": now,
                }
            )
            dpd = max(1, min(int(rng.expovariate(1 / 75)) + 1, 1500))
            principal = Decimal(math.exp(rng.gauss(9.0, 1.1))).quantize(CENT, ROUND_HALF_UP)
            code = f"BENCH{member}"
            records.append(
                {
                    "id": record_id,
                    "ref": r_ref,
                    "institution_id": institutions[member],
                    "account_index": index.digest("account_ref", f"{code}\x00{account_ref}"),
                    "borrower_id": borrower_id,
                    "data_key_id": key_id + 1,
                    "account_ref_ct": account_ct,
                    "name_ct": name_ct,
                    "phone_ct": phone_ct,
                    "address_ct": None,
                    "product": rng.choices(PRODUCTS, PRODUCT_WEIGHTS)[0],
                    "currency": "CNY",
                    "overdue_principal": principal,
                    "overdue_interest": Decimal("0.00"),
                    "penalty": Decimal("0.00"),
                    "days_past_due": dpd,
                    "first_delinquency_date": today - dt.timedelta(days=dpd - 1),
                    "as_of_date": today,
                    "contact_status": "reachable",
                    "lost_contact_since": None,
                    "channels_tried": "",
                    "collection_stage": "reminder",
                    "classification": "special_mention",
                    "status": "settled" if settled_days_ago is not None else "open",
                    "settled_on": (
                        today - dt.timedelta(days=settled_days_ago)
                        if settled_days_ago is not None
                        else None
                    ),
                    "settlement_type": "paid_in_full" if settled_days_ago is not None else None,
                    "suppressed_at": None,
                    "sequence": 1,
                    "opened_at": now,
                    "updated_at": now,
                }
            )
            key_id += 2
            borrower_id += 1
            record_id += 1
        with engine.begin() as c:
            c.execute(insert(DataKey), keys)
            c.execute(insert(Borrower), borrowers)
            c.execute(insert(Delinquency), records)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            # The rows came with explicit ids: move each id sequence past them, or the
            # registry's own next insert would collide.
            for table in ("data_keys", "borrowers", "delinquencies"):
                c.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            c.exec_driver_sql("ANALYZE data_keys, borrowers, delinquencies")
    return Loaded(borrowers=count, readable=readable)


def institution_ids(engine: Engine, codes: list[str]) -> list[int]:
    with engine.connect() as c:
        found = dict(c.execute(select(Institution.code, Institution.id)).all())
    return [int(found[code]) for code in codes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True, help="directory for keys and files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    members = [Member.new(f"BENCH{i}") for i in range(args.members)]
    stream = ReportStream(members)
    for i, member in enumerate(members):
        (args.out / f"{member.code}.pub.pem").write_bytes(member.public_pem())
        private = member.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (args.out / f"{member.code}.key.pem").write_bytes(private)
        (args.out / f"{member.code}.key.pem").chmod(0o600)
        per_member = args.reports // len(members)
        batch = next(stream.batches(i, per_member))
        (args.out / f"{member.code}.jsonl").write_bytes(b"\n".join(batch) + b"\n")
    print(f"wrote {args.reports} envelopes for {len(members)} members to {args.out}")


if __name__ == "__main__":
    main()
