"""StarlingX's patch API under /patch/, /v1/ and /patching/v1/, beside Ironic's /v1 on the
API port and alone on the patching listener's app (api/starlingx/patching.py)."""
from __future__ import annotations

import bcrypt
import pytest

from api import create_patching_app
from api.starlingx.patching import OPERATIONS, PREFIXES, RELEASE_HEADER, ROOT_TEXT

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
#: Operations that change something: POST only (no page can make a browser GET them).
CHANGING = {"apply", "remove", "delete", "upload", "upload_dir", "commit",
            "commit_dry_run", "host_install", "host_install_async", "drop_host",
            "report_app_dependencies", "init_release", "del_release"}
NO_ARGUMENTS = {"query", "query_hosts", "query_app_dependencies", "upload", "upload_dir"}


def test_no_starlingx_operation_meets_an_ironic_route(make_app):
    client, _ = make_app()
    urls = client.application.url_map.bind("localhost")
    for prefix in PREFIXES:
        for operation in sorted(OPERATIONS):
            method = "POST" if operation in CHANGING else "GET"
            argument = "" if operation in NO_ARGUMENTS else "/P_1"
            endpoint, _args = urls.match(f"{prefix}/{operation}{argument}", method)
            assert endpoint.startswith("patching_"), (prefix, operation, endpoint)
    for path, endpoint in (("/v1", "root.v1"), ("/v1/nodes", "nodes.list_nodes"),
                           ("/v1/lookup", "agent.lookup")):
        assert urls.match(path, "GET")[0] == endpoint


def test_the_same_api_on_every_prefix_and_ironic_s_v1_beside_it(make_app):
    client, _ = make_app()
    for prefix in PREFIXES:
        reply = client.get(f"{prefix}/query")
        assert (reply.status_code, reply.get_json()) == (200, {"pd": {}}), prefix
        assert reply.headers[RELEASE_HEADER] == "1.0"
        # No Ironic microversion applies: a version Ironic would refuse is ignored.
        reply = client.post(f"{prefix}/apply/NOPE_1",
                            headers={"X-OpenStack-Ironic-API-Version": "99.99"})
        assert reply.get_json() == {"info": "", "warning": "",
                                    "error": "Patch NOPE_1 does not exist\n"}, prefix
        assert client.get(f"{prefix}/apply/NOPE_1").status_code == 405
        assert client.get(f"{prefix}/show/NOPE_1").get_json()["error"] == \
            "NOPE_1 is unrecognized\n"
    assert client.get("/patch").get_json() == {"pd": {}}        # StarlingX's index
    assert client.get("/patching/").get_data(as_text=True) == ROOT_TEXT
    assert client.get("/v1", headers=LATEST).get_json()["id"] == "v1"
    assert client.get("/v1/nodes", headers=LATEST).get_json() == {"nodes": []}
    assert client.get("/v1/nodes", headers={
        "X-OpenStack-Ironic-API-Version": "99.99"}).status_code == 406


@pytest.mark.parametrize("path,error", [
    ("/patch/apply", "Patch ID must be specified\n"),
    ("/v1/commit_dry_run/", "Patch ID must be specified\n"),
    ("/patch/host_install_async", "Host must be specified for install"),
    ("/patch/drop_host/", "Host must be specified"),
    ("/patch/init_release", "Release must be specified"),
    ("/patch/host_install/controller-0", "Deprecated: Use host_install_async"),
    ("/patch/upload", "Error: No file uploaded"),
    ("/patch/upload_dir", "No patches found")])
def test_missing_arguments_get_starlingx_s_answers(make_app, path, error):
    client, _ = make_app()
    reply = client.post(path)
    assert (reply.status_code, reply.get_json()["error"]) == (200, error)


def test_the_listener_app_serves_the_patch_api_alone(make_app):
    _, appliance = make_app()
    client = create_patching_app(appliance.service).test_client()
    assert client.get("/").get_data(as_text=True) == ROOT_TEXT
    for path in ("/patch/query", "/v1/query", "/patching/v1/query", "/patch"):
        assert client.get(path).get_json() == {"pd": {}}, path
    for path in ("/v1", "/v1/nodes", "/v3", "/fm/v1/alarms"):
        assert client.get(path, headers=LATEST).status_code == 404, path
    reply = client.post("/v1/host_install_async/nosuchhost")
    assert reply.get_json()["error"] == "Unknown host specified: nosuchhost\n"


def test_the_listener_app_asks_for_credentials_as_the_api_does(make_app, tmp_path):
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"operator:{hashed}\n")
    _, appliance = make_app({"api.auth_strategy": "http_basic",
                             "api.htpasswd_file": str(tmp_path / "htpasswd")})
    client = create_patching_app(appliance.service).test_client()
    assert client.get("/").status_code == 200                 # the version text only
    for path in ("/patch/query", "/v1/query_hosts", "/patch"):
        assert client.get(path).status_code == 401, path
    reply = client.get("/patch/query", auth=("operator", "secret"))
    assert (reply.status_code, reply.get_json()) == (200, {"pd": {}})
