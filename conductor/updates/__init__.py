"""Image updates: payloads (full and delta), channels and versions."""
