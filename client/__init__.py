"""What a member bank installs to talk to the shared delinquency registry.

It signs reports (DSSE envelopes over the exact payload bytes), submits them with RFC 9421 request
signatures, fetches receipts again and verifies the registry's signature on them, so the bank
holds proof of every accepted report. It depends only on ``crypto`` and the standard library
(``urllib.request`` for HTTP), so it can be vendored into a bank's own tooling; the wire protocol
itself is described in ``docs/protocol.md`` for banks integrating in another language.
"""
