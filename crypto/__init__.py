"""Cryptographic building blocks over bytes; never imports the domain, the database or Flask."""
