"""Anonymous endpoints: liveness and the registry's public keys. Nothing personal is here."""
