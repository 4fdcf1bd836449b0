"""conductor.drivers.boot."""
