"""The operator's API: registry staff and regulators, signing with operator keys only."""
