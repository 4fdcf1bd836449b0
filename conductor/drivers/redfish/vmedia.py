"""Virtual media on a Redfish system: find the CD (or DVD) drive, insert, eject.

Newer services put VirtualMedia under the System; older ones only under its
Managers. Like Ironic, a CD drive is preferred and a DVD drive is the fallback.
"""
from __future__ import annotations

import logging
import urllib.parse

import sushy
from sushy import exceptions as sushy_exc

from conductor import errors

LOG = logging.getLogger(__name__)

#: Media types usable for a bootable ISO, in order of preference.
CD_TYPES = (sushy.VirtualMediaType.CD, sushy.VirtualMediaType.DVD)


def check_url(url) -> str:
    """Only http(s) image URLs: that is what BMCs download from."""
    parts = urllib.parse.urlsplit(url if isinstance(url, str) else "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidParameter(
            f"Virtual media image must be an http(s) URL, not {url!r}.")
    return url


def devices(system) -> list:
    """Every virtual media device of ``system`` (system first, then its managers)."""
    try:
        return system.virtual_media.get_members()
    except sushy_exc.MissingAttributeError:
        found = []
        for manager in system.managers:
            try:
                found.extend(manager.virtual_media.get_members())
            except sushy_exc.MissingAttributeError:
                continue
        return found


def cd_drive(system, node: str):
    """The first CD drive, else the first DVD drive; InvalidParameter if none."""
    members = devices(system)
    for media_type in CD_TYPES:
        for device in members:
            if media_type in (device.media_types or []):
                return device
    offered = sorted({t.value for d in members for t in (d.media_types or [])})
    raise errors.InvalidParameter(
        f"The Redfish system of node {node} has no CD or DVD virtual media device "
        f"(it offers: {', '.join(offered) or 'none'}).")


def insert(system, url: str, node: str) -> str:
    """Insert ``url`` into the CD/DVD drive (ejecting another image first); its Id."""
    device = cd_drive(system, node)
    if device.inserted and device.image == url:
        LOG.info("Node %s: %s already inserted in %s", node, url, device.identity)
        return device.identity
    if device.inserted:
        LOG.info("Node %s: ejecting %s from %s first", node, device.image, device.identity)
        device.eject_media()
    device.insert_media(url, inserted=True, write_protected=True)
    LOG.info("Node %s: inserted %s into virtual %s", node, url, device.identity)
    return device.identity


def eject(system, node: str) -> list[str]:
    """Eject every inserted CD/DVD; the Ids of the drives that had media."""
    ejected = []
    for device in devices(system):
        if device.inserted and set(device.media_types or []) & set(CD_TYPES):
            device.eject_media()
            ejected.append(device.identity)
    LOG.info("Node %s: ejected virtual media from %s", node, ", ".join(ejected) or "nothing")
    return ejected
