"""The virtual lab: simulated machines (BMCs first) for the demo and the tests.

``python -m virtlab.lab --config lab.json`` (virtlab.lab) runs machines
(virtlab.machine): a MAC, a disk image file and an IPMI BMC (virtlab.bmc) each,
whose firmware (virtlab.firmware) network-boots through metalcast's TFTP/HTTP
servers (virtlab.ipxe) into the real ``metalcast-agent``, or boots the OS found
on the disk image (virtlab.disk; images from virtlab.images).

Nothing here is imported by the appliance itself; it stands in for hardware.
"""
