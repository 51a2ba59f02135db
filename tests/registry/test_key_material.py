"""The registry's key material: its signing key id is derived once and never drifts."""

from __future__ import annotations

import dataclasses

from crypto import ed25519
from registry.secrets import load_key_material
from registry.settings import Settings


def test_the_signing_key_id_is_the_keys_own_and_stays_after_a_copy(settings: Settings) -> None:
    material = load_key_material(settings)
    derived = ed25519.key_id(ed25519.public_key_raw(material.signing_key))
    assert material.signing_keyid == derived
    assert material.signing_keyid == derived  # the cached value
    other = dataclasses.replace(material, signing_key=ed25519.generate_private_key())
    assert other.signing_keyid == ed25519.key_id(ed25519.public_key_raw(other.signing_key))
    assert other.signing_keyid != material.signing_keyid
    assert material.signing_keyid in repr(material)
    assert other == dataclasses.replace(other)  # the cache takes no part in equality
