"""Keystone's documents (api/identity/documents.py): the version entry, the token body
and a catalog in which each peer client finds its service."""
from __future__ import annotations

import datetime

from api.identity import documents
from api.identity.login import object_id
from conductor import config
from conductor.db.records import IdentityToken

BASE = "http://192.0.2.1:6385"
ISSUED = datetime.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)


def record(project: str | None = "admin") -> IdentityToken:
    return IdentityToken(id=1, token_hash="0" * 64, audit_id="a" * 22, user_name="alice",
                         project_name=project, methods=["password"], credential="c" * 64,
                         issued_at=ISSUED, expires_at=ISSUED + datetime.timedelta(hours=1),
                         revoked_at=None)


def endpoints(catalog: list[dict], kind: str, name: str) -> dict[str, str]:
    """interface -> URL of service (kind, name): how nfv-client and keystoneauth look."""
    entry = next(e for e in catalog if e["type"] == kind and e["name"] == name)
    return {e["interface"]: e["url"] for e in entry["endpoints"]}


def test_version_entry_as_keystone():
    assert documents.version(BASE) == {
        "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{BASE}/v3/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.identity-v3+json"}]}


def test_scoped_token_body():
    catalog = documents.catalog(config.Settings(), BASE)
    token = documents.token(record(), catalog)["token"]
    assert token["expires_at"] == "2026-01-01T13:00:00.123456Z"
    assert token["issued_at"] == "2026-01-01T12:00:00.123456Z"
    assert token["methods"] == ["password"] and token["audit_ids"] == ["a" * 22]
    assert token["user"] == {"id": object_id("user", "alice"), "name": "alice",
                             "domain": {"id": "default", "name": "Default"},
                             "password_expires_at": None}
    assert token["project"]["name"] == "admin"
    assert token["project"]["id"] == object_id("project", "admin")
    assert {r["name"] for r in token["roles"]} == {"admin", "member", "reader"}
    assert token["catalog"] is catalog and token["is_domain"] is False


def test_unscoped_token_has_no_project_roles_or_catalog():
    token = documents.token(record(None), [])["token"]
    assert not {"project", "roles", "catalog"} & set(token)


def test_catalog_defaults():
    catalog = documents.catalog(config.Settings(), BASE)
    for kind, name, url in [("baremetal", "ironic", BASE), ("identity", "keystone",
                                                            f"{BASE}/v3"),
                            ("patching", "patching", f"{BASE}/patching"),
                            ("nfv", "vim", BASE)]:
        assert endpoints(catalog, kind, name) == dict.fromkeys(
            ("public", "internal", "admin"), url)
    regions = {(e["region"], e["region_id"]) for s in catalog for e in s["endpoints"]}
    assert regions == {("RegionOne", "RegionOne")}
    assert len({s["id"] for s in catalog}) == len(catalog)


def test_catalog_settings():
    settings = config.from_options({"identity.region": "SystemController",
                                    "identity.patching_url": "http://192.0.2.9:5487/",
                                    "identity.orchestration_url": "http://192.0.2.9:4545"})
    catalog = documents.catalog(settings, BASE)
    assert endpoints(catalog, "patching", "patching")["internal"] == "http://192.0.2.9:5487"
    assert endpoints(catalog, "nfv", "vim")["public"] == "http://192.0.2.9:4545"
    assert {e["region"] for s in catalog for e in s["endpoints"]} == {"SystemController"}


def test_patching_is_the_listener_where_the_client_can_reach_it():
    listener = {"patching.listen_host": "127.0.0.1", "patching.listen_port": 5487}
    local = config.from_options(listener)
    assert documents.patching_url(local, "http://127.0.0.1:6385") == "http://127.0.0.1:5487"
    assert documents.patching_url(local, "http://localhost:6385") == "http://127.0.0.1:5487"
    # a remote client cannot reach a loopback listener: the API port serves it too
    assert documents.patching_url(local, BASE) == f"{BASE}/patching"
    wildcard = config.from_options({"patching.listen_host": "0.0.0.0",
                                    "patching.listen_port": 15491})
    assert documents.patching_url(wildcard, BASE) == "http://192.0.2.1:15491"
    v6 = config.from_options({"patching.listen_host": "::", "patching.listen_port": 15491})
    assert documents.patching_url(v6, "http://[2001:db8::1]:6385") == \
        "http://[2001:db8::1]:15491"
    for off in ({"patching.listen_port": 0}, {"patching.enabled": False}):
        assert documents.patching_url(config.from_options(off), "http://127.0.0.1:6385") \
            == "http://127.0.0.1:6385/patching"
