"""conductor.drivers.ipmi.interfaces."""
