"""conductor.drivers.deploy."""
