"""Cryptographic building blocks over bytes: Ed25519, DSSE, RFC 9421, envelope encryption.

Nothing here imports the domain, the database or Flask, so every piece can be tested (and
reviewed) on its own.
"""
