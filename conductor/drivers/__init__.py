"""Hardware interfaces: one module per protocol behind small interfaces, each with a fake twin."""
