"""api.starlingx."""
