"""The virtual lab: simulated machines (BMCs first) for the demo and the tests.

Nothing here is imported by the appliance itself; it stands in for hardware.
"""
