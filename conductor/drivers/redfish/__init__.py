"""Redfish power and management interfaces on sushy (Ironic's "redfish" names).

``info`` parses driver_info, ``client`` owns sessions and error translation,
``power`` / ``management`` / ``vmedia`` are the operations.
"""
from conductor.drivers.redfish.management import RedfishManagement
from conductor.drivers.redfish.power import RedfishPower

__all__ = ["RedfishManagement", "RedfishPower"]
