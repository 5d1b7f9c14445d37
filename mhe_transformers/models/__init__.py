"""Model definitions (layer 0: imports only torch and transformers)."""
