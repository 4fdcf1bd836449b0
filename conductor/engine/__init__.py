"""conductor.engine."""
