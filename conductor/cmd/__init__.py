"""conductor.cmd."""
