"""The registry's domain: members, keys, reports and their persistence.

Nothing here imports Flask; the HTTP layer in ``api/`` calls into these modules.
"""
