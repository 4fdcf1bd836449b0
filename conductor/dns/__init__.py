"""conductor.dns."""
