"""Errors of the crypto package; each names what failed, never any key material."""


class CryptoError(Exception):
    """Base of every crypto failure."""


class MalformedEnvelope(CryptoError):
    """The bytes are not a valid DSSE JSON envelope."""


class SignatureInvalid(CryptoError):
    """No signature by a known key verifies."""


class DecryptionError(CryptoError):
    """Ciphertext, key or associated data do not match."""


class RequestSignatureError(CryptoError):
    """An RFC 9421 request signature is missing or does not hold.

    ``reason`` is a stable machine code for logs and API problems; ``detail`` is one human
    sentence that never contains secrets.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class StrictJSONError(CryptoError):
    """JSON refused by the strict parser; ``rule`` is a stable code naming the broken rule."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail
