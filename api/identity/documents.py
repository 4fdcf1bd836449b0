"""What Keystone answers: the v3 version document, the token body and the catalog.

The catalog names metalcast's APIs the way OpenStack and StarlingX clients look them
up: ``baremetal`` (name ``ironic``) for openstacksdk and the ``baremetal`` CLI,
``patching`` for sw-patch and the VIM, ``nfv`` (name ``vim``) for sw-manager, and
``identity`` (``keystone``) itself; each in one region with public, internal and
admin interfaces at the same URL.
"""
from __future__ import annotations

import datetime
import urllib.parse
import uuid

from api.identity.login import DOMAIN_ID, DOMAIN_NAME, ID_NAMESPACE, object_id
from conductor.config import Settings, is_loopback
from conductor.identity import IdentityToken

#: The Identity API version Keystone has reported since Ussuri.
VERSION_ID = "v3.14"
VERSION_UPDATED = "2020-04-07T00:00:00Z"
MEDIA_TYPES = [{"base": "application/json",
                "type": "application/vnd.openstack.identity-v3+json"}]
DOMAIN = {"id": DOMAIN_ID, "name": DOMAIN_NAME}
#: Every htpasswd user may do everything (as with basic auth): Keystone's three
#: default roles, on the project the token is scoped to.
ROLES = [{"id": object_id("role", name), "name": name}
         for name in ("admin", "member", "reader")]
INTERFACES = ("public", "internal", "admin")
#: Listen addresses that name no host a client could use.
WILDCARDS = ("", "0.0.0.0", "::")


def version(base: str) -> dict:
    """The v3 entry of a version document (``GET /v3`` wraps it in ``version``)."""
    return {"id": VERSION_ID, "status": "stable", "updated": VERSION_UPDATED,
            "links": [{"rel": "self", "href": f"{base}/v3/"}],
            "media-types": MEDIA_TYPES}


def timestamp(when: datetime.datetime) -> str:
    """Keystone's time format: UTC, microseconds, ``Z``."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def token(record: IdentityToken, catalog: list[dict] | None) -> dict:
    """The ``{"token": ...}`` body of a login or a validation; a scoped token carries
    its project, roles and (unless None) the catalog, as Keystone's do."""
    body: dict = {
        "methods": list(record.methods or ["password"]),
        "user": {"id": object_id("user", record.user_name), "name": record.user_name,
                 "domain": DOMAIN, "password_expires_at": None},
        "audit_ids": [record.audit_id],
        "expires_at": timestamp(record.expires_at),
        "issued_at": timestamp(record.issued_at),
    }
    if record.project_name is not None:
        body["project"] = {"id": object_id("project", record.project_name),
                           "name": record.project_name, "domain": DOMAIN}
        body["is_domain"] = False
        body["roles"] = ROLES
        if catalog is not None:
            body["catalog"] = catalog
    return {"token": body}


def service_urls(settings: Settings, base: str) -> list[tuple[str, str, str]]:
    """(type, name, URL) of every service in the catalog; ``base`` is the API's URL."""
    identity = settings.identity
    return [("identity", "keystone", f"{base}/v3"),
            ("baremetal", "ironic", base),
            ("patching", "patching", identity.patching_url or patching_url(settings, base)),
            ("nfv", "vim", identity.orchestration_url or orchestration_url(settings, base))]


def orchestration_url(settings: Settings, base: str) -> str:
    """The orchestration API: the VIM listener ([api] vim_port) when there is one,
    else the API's own URL (it serves /api/orchestration/ too)."""
    if not settings.api.vim_port:
        return base
    host = settings.api.host
    if host in WILDCARDS:
        host = urllib.parse.urlsplit(base).hostname or host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.api.vim_port}"


def patching_url(settings: Settings, base: str) -> str:
    """The patch API where the client can reach it: the patching listener ([patching]
    listen_host/listen_port, StarlingX's 127.0.0.1:5487), unless it listens on loopback
    and the client came from elsewhere; else the API port's ``/patching`` (sw-patch
    takes host and port of it, the VIM strips the version and adds ``/v1/...``)."""
    patching = settings.patching
    api_host = urllib.parse.urlsplit(base).hostname or ""
    if patching.enabled and patching.listen_port:
        host = patching.listen_host
        if host in WILDCARDS:
            host = api_host
        if not is_loopback(host) or is_loopback(api_host):
            host = f"[{host}]" if ":" in host else host
            return f"http://{host}:{patching.listen_port}"
    return f"{base}/patching"


def catalog(settings: Settings, base: str) -> list[dict]:
    """Keystone's catalog: one entry per service, one endpoint per interface."""
    region = settings.identity.region
    entries = []
    for kind, name, url in service_urls(settings, base):
        url = url.rstrip("/")
        entries.append({
            "id": uuid.uuid5(ID_NAMESPACE, f"service:{kind}").hex, "type": kind,
            "name": name,
            "endpoints": [{"id": uuid.uuid5(ID_NAMESPACE, f"endpoint:{kind}:{i}").hex,
                           "interface": i, "region": region, "region_id": region,
                           "url": url} for i in INTERFACES]})
    return entries
