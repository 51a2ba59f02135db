"""Envelope encryption of personal fields: one data key per record, wrapped by the master key.

Each ciphertext's associated data names its table, column, row and data-key version, so a
ciphertext copied to another row or column fails to decrypt. Deleting a ``DataKey`` row
destroys every field encrypted under it (crypto-shredding).
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy.orm import Session

from crypto import envelope_encryption as ee
from crypto.keyring import MasterKeyring
from registry.models import DataKey

DATA_KEY_VERSION = 1


class Vault:
    def __init__(self, keyring: MasterKeyring) -> None:
        self._keyring = keyring

    def new_key(self, session: Session, now: dt.datetime) -> tuple[DataKey, bytes]:
        """A fresh data key row (wrapped) and its plaintext, for one record."""
        plain = ee.new_data_key()
        ref = secrets.token_hex(16)
        version, wrapped = ee.wrap_data_key(self._keyring, plain, key_ref=ref)
        row = DataKey(ref=ref, master_version=version, wrapped=wrapped, created_at=now)
        session.add(row)
        return row, plain

    def new_key_values(self, now: dt.datetime) -> tuple[dict[str, object], bytes]:
        """A fresh data key as the column values of a ``data_keys`` row, and its plaintext.

        For bulk inserts (batch intake), where building ORM rows one by one costs more than
        the cryptography.
        """
        plain = ee.new_data_key()
        ref = secrets.token_hex(16)
        version, wrapped = ee.wrap_data_key(self._keyring, plain, key_ref=ref)
        return {"ref": ref, "master_version": version, "wrapped": wrapped, "created_at": now}, plain

    def open_key(self, row: DataKey) -> bytes:
        return ee.unwrap_data_key(self._keyring, row.master_version, row.wrapped, key_ref=row.ref)

    @staticmethod
    def seal(key: bytes, table: str, column: str, row_ref: str, value: bytes) -> bytes:
        return ee.encrypt_field(key, value, ee.field_aad(table, column, row_ref, DATA_KEY_VERSION))

    @staticmethod
    def unseal(key: bytes, table: str, column: str, row_ref: str, blob: bytes) -> bytes:
        return ee.decrypt_field(key, blob, ee.field_aad(table, column, row_ref, DATA_KEY_VERSION))
