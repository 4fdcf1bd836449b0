"""Every route of the REST API answers bad input with a clear 4xx and changes nothing.

The routes are read from the Flask app's ``url_map`` at test time, so a route added
later is covered without touching this file. Each test sends one family of bad input
(malformed bodies, wrong content types, over-long bodies, bad path parameters, bad
query parameters, bad headers, wrong methods) to every route and method, collects
every answer that is a 5xx, lacks a parseable error body or changed the stored
nodes, ports or patches, and reports them all at once.

Path parameters of POST/PUT/PATCH routes name a real node and port, so a bad body
reaches the code that parses it; GET/DELETE routes and the StarlingX patching routes
(whose bodies are ignored) get names that exist nowhere, so no request here can do
a legitimate action (delete a node, create a release) or reach a BMC.
"""
from __future__ import annotations

import itertools
import json
import re

import pytest

from api import limits
from api.starlingx.patching import is_patch_path
from api.updates import RAW_BODIES

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
MAC = "52:54:00:aa:bb:01"
MISSING_UUID = "0b7c9e4e-2a5d-4a47-9a7c-5f3e2d1c0b9a"
BODY_METHODS = ("POST", "PUT", "PATCH")
#: Statuses a refusal of bad input may have.
CLIENT_ERRORS = {400, 404, 405, 406, 409, 413, 415}
#: Path parameter name -> the value bad-body requests use on POST/PUT/PATCH routes
#: ("node"/"port" are replaced by the fixture's objects). Unknown names get "..",
#: which is no valid node, port, patch, host or release.
BODY_ROUTE_ARGS = {"ident": "node", "node_ident": "node", "port_uuid": "port",
                   "name": "fake-hardware", "force": "force"}
#: Path parameter name -> a well-formed value that exists nowhere (GET/DELETE routes).
MISSING_ARGS = {"ident": MISSING_UUID, "node_ident": MISSING_UUID,
                "port_uuid": MISSING_UUID, "name": "no-such-driver", "force": "force"}
#: Endpoint -> a body that is otherwise valid, sent with bad path parameters.
VALID_BODIES = {"nodes.set_provision_state": {"target": "manage"},
                "nodes.set_power_state": {"target": "power on"},
                "nodes.update_node": [{"op": "add", "path": "/extra/x", "value": 1}],
                "ports.update_port": [{"op": "add", "path": "/extra/x", "value": 1}],
                "nodes.create_node": {"driver": "fake-hardware"},
                "agent.heartbeat": {"callback_url": "https://127.0.0.1:1",
                                    "agent_token": "x" * 32}}
#: Ironic routes that take an optional body: an empty one is fine there.
OPTIONAL_BODY = {"nodes.set_maintenance"}
#: The JSON document types; PATCH takes a list (JSON patch), the rest an object.
DOCUMENTS = {"object": b'{"driver": "fake-hardware"}', "list": b"[1, 2]",
             "string": b'"fake-hardware"', "number": b"42", "true": b"true",
             "null": b"null"}
MALFORMED = {
    "not json": b"this is not json",
    "truncated": b'{"driver": "fake-hard',
    "trailing garbage": b'{"driver": "fake-hardware"} x',
    "invalid utf-8": b'{"driver": "\xff\xfe"}',
    "NUL byte": b'{"driver": "fake\x00hardware"}',
    "deep nesting": b"[" * 100_000,
    "NaN": b'{"driver": "fake-hardware", "extra": {"x": NaN}}',
}
BAD_PATH_VALUES = {
    "dot-dot slash": "..%2F..",
    "dot-dot": "..",
    "300 chars": "n" * 300,
    "NUL": "%00",
    "NUL inside": "node%00name",
    "unicode": "n%C3%B8d%C3%A9-%E2%98%83",
    "invalid utf-8": "%FF%FE",
    "spaces and quotes": "a%20'%22%3B--",
    "percent": "%25",
}
BAD_QUERIES = {
    "limit=-1": {"limit": "-1"}, "limit=abc": {"limit": "abc"},
    "limit=huge": {"limit": "9" * 40}, "limit=1.5": {"limit": "1.5"},
    "sort_dir": {"sort_dir": "sideways"}, "sort_key": {"sort_key": "nonexistent"},
    "fields": {"fields": "nonexistent"}, "fields empty": {"fields": ","},
    "detail": {"detail": "maybe"}, "marker": {"marker": "no-such-marker"},
    "marker NUL": {"marker": "a\x00b"}, "maintenance": {"maintenance": "perhaps"},
    "node NUL": {"node": "\x00"}, "address": {"address": "not-a-mac"},
    "addresses": {"addresses": "%%%,,,"}, "node_uuid": {"node_uuid": "\x00"},
    "agent_mode": {"agent_mode": "guest"}, "show": {"show": "sideways"},
    "dir relative": {"dir0": "../.."}, "dir NUL": {"dir0": "/tmp/\x00"},
    "provision_state": {"provision_state": "\x00" * 3}, "unicode": {"name": "☃" * 100},
}
BAD_HEADERS = {
    "version garbage": {"X-OpenStack-Ironic-API-Version": "one.two"},
    "version too new": {"X-OpenStack-Ironic-API-Version": "1.9999"},
    "version huge": {"X-OpenStack-Ironic-API-Version": "9" * 5000 + ".1"},
    "generic version garbage": {"OpenStack-API-Version": "baremetal x.y"},
    "Accept xml": {"Accept": "application/xml"},
}


@pytest.fixture
def api(make_app):
    """(client, appliance, node uuid, port uuid): one enrolled node with one port."""
    client, appliance = make_app()
    node = client.post("/v1/nodes", json={"driver": "fake-hardware", "name": "bad-input"},
                       headers=LATEST)
    assert node.status_code == 201, node.get_json()
    uuid = node.get_json()["uuid"]
    port = client.post("/v1/ports", json={"node_uuid": uuid, "address": MAC}, headers=LATEST)
    assert port.status_code == 201, port.get_json()
    return client, appliance, uuid, port.get_json()["uuid"]


def routes(client) -> list[tuple]:
    """(rule, method, endpoint) for every route the app serves (HEAD/OPTIONS aside)."""
    found = []
    for rule in client.application.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((rule, method, rule.endpoint))
    assert len(found) > 40, "the url_map lost its routes"
    return found


def build(rule, values: dict) -> str:
    """The rule's path with each <arg> replaced by values[arg] (already URL-encoded)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values[m.group(1)], rule.rule)


def real_args(rule, method: str, node: str, port: str) -> dict:
    if method not in BODY_METHODS or is_patch_path(rule.rule):
        return {arg: MISSING_ARGS.get(arg, "..") for arg in rule.arguments}
    names = {"node": node, "port": port}
    return {arg: names.get(BODY_ROUTE_ARGS.get(arg, ".."), BODY_ROUTE_ARGS.get(arg, ".."))
            for arg in rule.arguments}


def snapshot(appliance) -> tuple:
    """Everything a request could change: nodes, ports, patches, patching files."""
    nodes = [repr(n) for n in appliance.store.list_nodes()]
    ports = [repr(p) for p in appliance.store.list_ports()]
    patching = appliance.service.patching
    files = sorted(str(p) for p in patching.store.root.rglob("*")) if patching else []
    patches = patching.query() if patching else None
    return nodes, ports, patches, files


def error_text(response) -> str | None:
    """The error's message in the route's format, or None when there is none."""
    if response.mimetype == "text/html":  # the console's pages (api/console/)
        found = re.search(r'role="alert"[^>]*>([^<]+)<', response.get_data(as_text=True))
        return found.group(1).strip() if found else None
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error_message"), str):
        inner = json.loads(body["error_message"])  # Ironic: JSON inside a string
        return inner.get("faultstring") or inner.get("description") or None  # 406
    if isinstance(body, dict) and body.get("error"):  # StarlingX patching
        return body["error"]
    if isinstance(body, dict) and isinstance(body.get("faultstring"), str):
        return body["faultstring"] or None          # StarlingX's VIM (wsme)
    return None


class Checker:
    """Sends requests and collects every answer that breaks the contract."""

    def __init__(self, api):
        self.client, self.appliance, self.node, self.port = api
        self.problems: list[str] = []
        self.state = snapshot(self.appliance)  # as the last request left it

    def send(self, label: str, method: str, path: str, expect: set | None = None,
             may_change: bool = False, **kw):
        """One request. ``expect``: statuses allowed (None: anything below 500, with an
        error message whenever it is 4xx); ``may_change``: the input is in fact valid."""
        kw.setdefault("headers", LATEST)
        before = self.state
        response = self.client.open(path, method=method, **kw)
        self.state = snapshot(self.appliance)
        status, where = response.status_code, f"{method} {path[:80]} [{label}]"
        if status >= 500 or (expect is not None and status not in expect):
            self.problems.append(f"{where}: {status} {response.get_data()[:300]!r}")
        elif status >= 400 and error_text(response) is None:
            self.problems.append(f"{where}: {status} without an error message: "
                                 f"{response.get_data()[:300]!r}")
        elif not may_change and self.state != before:
            self.problems.append(f"{where}: {status} but the stored state changed")
        return response

    def verdict(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def body_routes(checker):
    """(rule, method, endpoint, path) of every route that takes a request body."""
    for rule, method, endpoint in routes(checker.client):
        if method in BODY_METHODS:
            path = build(rule, real_args(rule, method, checker.node, checker.port))
            yield rule, method, endpoint, path


def strict(rule) -> bool:
    """Ironic routes parse a JSON body; StarlingX patching routes ignore theirs; the
    Omaha endpoint and the image upload take XML and raw bytes (tests/security/
    test_update_server.py sends them theirs); the console's routes take HTML forms
    behind a CSRF token, refused (403) without one (tests/integration/api/console/)."""
    return not is_patch_path(rule.rule) and rule.rule.rstrip("/") not in RAW_BODIES \
        and not rule.rule.startswith("/ui/")


def test_malformed_json_is_a_400(api):
    checker = Checker(api)
    for rule, method, _endpoint, path in body_routes(checker):
        for kind, data in MALFORMED.items():
            checker.send(kind, method, path, {400} if strict(rule) else None,
                         data=data, content_type="application/json")
    checker.verdict()


def test_wrong_top_level_json_type_is_a_400(api):
    checker = Checker(api)
    for rule, method, _endpoint, path in body_routes(checker):
        wanted = "list" if method == "PATCH" else "object"
        for kind, data in DOCUMENTS.items():
            if kind != wanted:
                checker.send(f"JSON {kind}", method, path, {400} if strict(rule) else None,
                             data=data, content_type="application/json")
    checker.verdict()


def test_empty_body_is_a_400_where_a_body_is_required(api):
    checker = Checker(api)
    for rule, method, endpoint, path in body_routes(checker):
        required = strict(rule) and endpoint not in OPTIONAL_BODY
        for content_type in ("application/json", None):
            checker.send(f"empty, {content_type}", method, path,
                         {400} if required else None, data=b"", content_type=content_type,
                         may_change=endpoint in OPTIONAL_BODY)
    checker.verdict()


def test_a_body_that_is_not_json_by_content_type_is_a_415(api):
    checker = Checker(api)
    for rule, method, endpoint, path in body_routes(checker):
        body = VALID_BODIES.get(endpoint, {"reason": "x"})
        for content_type in ("text/plain", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=x", "application/xml",
                             "application/json-seq"):
            checker.send(content_type, method, path, {415} if strict(rule) else None,
                         data=json.dumps(body), content_type=content_type)
    checker.verdict()


def test_an_over_long_body_is_a_413(api):
    """The declared length alone is refused: nothing is read or buffered (the cap is
    per route, api/limits.py; tests/security/test_api_bodies.py replays it on a socket)."""
    checker = Checker(api)
    caps = checker.client.application.extensions[limits.EXTENSION]
    for rule, method, _endpoint, path in body_routes(checker):
        limit = caps.cap(method, path)
        assert limit <= 1 << 30, "every route needs a body size limit"
        checker.send("over-long", method, path, {413} if strict(rule) else None,
                     data=b"{}", content_type="application/json",
                     environ_overrides={"CONTENT_LENGTH": str(limit + 1)})
    checker.verdict()


def test_bad_path_parameters_are_refused(api):
    checker = Checker(api)
    for rule, method, endpoint in routes(checker.client):
        if not rule.arguments:
            continue
        body = VALID_BODIES.get(endpoint, {}) if method in BODY_METHODS else None
        for kind, value in BAD_PATH_VALUES.items():
            path = build(rule, {arg: value for arg in rule.arguments})
            checker.send(kind, method, path, CLIENT_ERRORS if strict(rule) else None,
                         json=body)
    checker.verdict()


def test_bad_query_parameters_are_refused(api):
    """Unknown parameters may be ignored (2xx); known ones with bad values are 4xx."""
    checker = Checker(api)
    for (rule, method, endpoint), kind in itertools.product(routes(checker.client),
                                                            BAD_QUERIES):
        path = build(rule, real_args(rule, method, checker.node, checker.port)
                     if method in BODY_METHODS else
                     {a: MISSING_ARGS.get(a, "..") for a in rule.arguments})
        body = VALID_BODIES.get(endpoint, {}) if method in BODY_METHODS else None
        if method in BODY_METHODS and strict(rule):
            body = {"bogus": 1}  # a 4xx before any action: nothing may change
            if method == "PATCH":
                body = [{"op": "explode", "path": "/extra/x"}]
        checker.send(kind, method, path, query_string=BAD_QUERIES[kind], json=body)
    checker.verdict()


def test_bad_list_parameters_are_a_400(api):
    checker = Checker(api)
    for kind in ("limit=-1", "limit=abc", "limit=1.5", "sort_dir", "sort_key", "fields",
                 "detail", "maintenance"):
        for path in ("/v1/nodes", "/v1/nodes/detail"):
            if path.endswith("detail") and kind in ("fields", "detail"):
                continue
            checker.send(kind, "GET", path, {400}, query_string=BAD_QUERIES[kind])
        if kind not in ("sort_dir", "sort_key", "maintenance"):
            checker.send(kind, "GET", "/v1/ports", {400}, query_string=BAD_QUERIES[kind])
    checker.verdict()


def test_bad_version_headers_are_refused(api):
    checker = Checker(api)
    for rule, method, _endpoint in routes(checker.client):
        if method in BODY_METHODS:
            continue  # GET/DELETE on missing objects: nothing to change either way
        path = build(rule, {a: MISSING_ARGS.get(a, "..") for a in rule.arguments})
        for kind, headers in BAD_HEADERS.items():
            checker.send(kind, method, path, headers=headers)
    checker.verdict()


def test_wrong_methods_are_a_405(api):
    checker = Checker(api)
    adapter = checker.client.application.url_map.bind("localhost")
    for rule, _, _ in routes(checker.client):
        path = build(rule, {a: MISSING_ARGS.get(a, "..") for a in rule.arguments})
        served = set(adapter.allowed_methods(path))
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - served):
            response = checker.send("wrong method", method, path, {405}, data=b"{}",
                                    content_type="application/json")
            if response.status_code == 405 and not response.headers.get("Allow"):
                checker.problems.append(f"{method} {path}: 405 without an Allow header")
    checker.verdict()


def test_mutating_routes_leave_the_lists_unchanged(api):
    """The lists a client sees (not just the store) after a burst of bad requests."""
    client, _, node, port = api
    nodes_before = client.get("/v1/nodes/detail", headers=LATEST).get_json()
    ports_before = client.get("/v1/ports/detail", headers=LATEST).get_json()
    for method, path, data in (
            ("POST", "/v1/nodes", b'[{"driver": "fake-hardware"}]'),
            ("PATCH", f"/v1/nodes/{node}", b'{"op": "remove", "path": "/name"}'),
            ("PUT", f"/v1/nodes/{node}/maintenance", b'{"reason": "half'),
            ("PUT", f"/v1/nodes/{node}/maintenance", b'"just a string"'),
            ("PUT", f"/v1/nodes/{node}/states/provision", b'"manage"'),
            ("PUT", f"/v1/nodes/{node}/states/power", b"null"),
            ("POST", "/v1/ports", b'"52:54:00:aa:bb:02"'),
            ("PATCH", f"/v1/ports/{port}", b"[{]"),
            ("DELETE", f"/v1/nodes/{node}%00", b""),
            ("DELETE", f"/v1/ports/{port}x", b"")):
        response = client.open(path, method=method, data=data, headers=LATEST,
                               content_type="application/json")
        assert 400 <= response.status_code < 500, (method, path, response.get_data())
    assert client.get("/v1/nodes/detail", headers=LATEST).get_json() == nodes_before
    assert client.get("/v1/ports/detail", headers=LATEST).get_json() == ports_before


#: Endpoint -> well-formed JSON documents with wrong field names, types or values.
BAD_DOCUMENTS = {
    "nodes.create_node": [
        {}, {"driver": 5}, {"driver": "no-such-driver"}, {"driver": ""},
        {"driver": "fake-hardware", "name": 5}, {"driver": "fake-hardware", "name": "a/b"},
        {"driver": "fake-hardware", "name": "n" * 300},
        {"driver": "fake-hardware", "uuid": "not-a-uuid"},
        {"driver": "fake-hardware", "uuid": {"a": 1}},
        {"driver": "fake-hardware", "properties": "cpus=4"},
        {"driver": "fake-hardware", "driver_info": ["ipmi_address"]},
        {"driver": "fake-hardware", "extra": {"k": "v\u0000"}},
        {"driver": "fake-hardware", "description": "\ud800"},
        {"driver": "fake-hardware", "extra": {"\udfff": 1}},
        {"driver": "fake-hardware", "power_interface": "no-such-interface"},
        {"driver": "fake-hardware", "provision_state": "active"},
        {"driver": "fake-hardware", "maintenance": "yes"},
        {"driver": "fake-hardware", "resource_class": ["x"]},
        {"driver": "fake-hardware", "traits": "CUSTOM_X"},
        {"driver": "fake-hardware", "automated_clean": "sometimes"},
        {"driver": "fake-hardware", "created_at": "yesterday"}],
    "ports.create_port": [
        {}, {"address": MAC}, {"address": "not-a-mac", "node_uuid": "node"},
        {"address": 5, "node_uuid": "node"}, {"address": MAC, "node_uuid": MISSING_UUID},
        {"address": MAC, "node_uuid": "node"},  # a duplicate MAC: 409
        {"address": "52:54:00:aa:bb:09", "node_uuid": ["node"]},
        {"address": "52:54:00:aa:bb:09", "node_uuid": "node", "pxe_enabled": "no"},
        {"address": "52:54:00:aa:bb:09", "node_uuid": "node", "extra": "x"},
        {"address": "52:54:00:aa:bb:09", "node_uuid": "node",
         "local_link_connection": {"switch_id": 5}},
        {"address": "52:54:00:aa:bb:09", "node_uuid": "node", "bogus": 1}],
    "nodes.update_node": [
        [1], [None], ["replace"], [{"op": "add"}], [{"op": "add", "path": 5, "value": 1}],
        [{"op": "explode", "path": "/extra/x", "value": 1}],
        [{"op": "add", "path": "/extra/x"}], [{"op": "remove", "path": "/uuid"}],
        [{"op": "replace", "path": "/driver", "value": "no-such-driver"}],
        [{"op": "replace", "path": "/driver", "value": None}],
        [{"op": "add", "path": "/name", "value": {"a": 1}}],
        [{"op": "add", "path": "/name", "value": "a\u0000b"}],
        [{"op": "add", "path": "/", "value": {}}], [{"op": "add", "path": "", "value": 1}],
        [{"op": "add", "path": "/extra/a/b/c", "value": 1}],
        [{"op": "add", "path": "/properties/~2", "value": 1}],
        [{"op": "replace", "path": "/provision_state", "value": "active"}],
        [{"op": "replace", "path": "/power_interface", "value": "nope"}],
        [{"op": "move", "from": "/nowhere", "path": "/extra/x"}],
        [{"op": "copy", "from": 5, "path": "/extra/x"}],
        [{"op": "test", "path": "/name", "value": "other"}],
        [{"op": "add", "path": "/extra/x", "value": 1}, {"op": "remove", "path": "/nope"}],
        [{"op": "add", "path": "/bogus_field", "value": 1}]],
    "ports.update_port": [
        [1], [{"op": "add"}], [{"op": "replace", "path": "/address", "value": "zz"}],
        [{"op": "replace", "path": "/address", "value": 5}],
        [{"op": "remove", "path": "/address"}],
        [{"op": "replace", "path": "/node_uuid", "value": MISSING_UUID}],
        [{"op": "replace", "path": "/node_uuid", "value": 5}],
        [{"op": "replace", "path": "/pxe_enabled", "value": "maybe"}],
        [{"op": "replace", "path": "/uuid", "value": MISSING_UUID}],
        [{"op": "add", "path": "/extra", "value": []}]],
    "nodes.set_provision_state": [
        {}, {"target": 5}, {"target": None}, {"target": "explode"}, {"target": ""},
        {"target": "manage", "bogus": 1}, {"target": "active"},
        {"target": "clean", "clean_steps": "all"}, {"target": "clean", "clean_steps": [1]},
        {"target": "active", "configdrive": 5}, {"target": ["manage"]}],
    "nodes.set_power_state": [
        {}, {"target": 5}, {"target": "explode"}, {"target": "power on", "timeout": -1},
        {"target": "power on", "timeout": "soon"}, {"target": "power on", "timeout": 1.5},
        {"target": "power on", "timeout": True}, {"target": ["power on"]}],
    "nodes.set_maintenance": [{"reason": 5}, {"reason": ["x"]}, {"reason": {"a": 1}},
                              {"reason": "x", "bogus": 1}, {"why": "x"}],
    "agent.heartbeat": [
        {}, {"callback_url": 5}, {"callback_url": "https://127.0.0.1:1", "bogus": 1},
        {"callback_url": "https://127.0.0.1:1", "agent_token": 5},
        {"callback_url": "https://127.0.0.1:1", "agent_token": "wrong"},
        {"callback_url": "not a url", "agent_token": "x"},
        {"callback_url": "https://127.0.0.1:1", "agent_mode": 5},
        {"callback_url": "https://127.0.0.1:1", "patching": {}},
        {"callback_url": "https://127.0.0.1:1", "agent_mode": "host", "patching": "x"}],
}


def test_wrong_field_names_types_and_values_are_refused(api):
    """Well-formed JSON with bad contents: a 4xx from validation, before any action
    (the node is in enroll with fake power, so nothing here reaches a peer)."""
    checker = Checker(api)
    paths = {endpoint: path for rule, method, endpoint, path in body_routes(checker)}
    for endpoint, documents in BAD_DOCUMENTS.items():
        for document in documents:
            text = json.dumps(document).replace('"node"', f'"{checker.node}"')
            checker.send(text[:60], "PUT" if "state" in endpoint or "maint" in endpoint
                         else "PATCH" if "update" in endpoint else "POST",
                         paths[endpoint], CLIENT_ERRORS, data=text,
                         content_type="application/json")
    checker.verdict()


@pytest.mark.parametrize("method, path, query", [
    ("POST", "/patching/v1/upload_dir", {"dir0": "../.."}),
    ("POST", "/patching/v1/upload_dir", {"dir0": "/srv/patches", "dir1": "patches"}),
    ("POST", "/patching/v1/apply/NO_SUCH_PATCH", None),
    ("POST", "/patching/v1/remove/..", None),
    ("POST", "/patching/v1/delete/%2e%2e%2f", None),
    ("POST", "/patching/v1/commit/" + "P" * 300, None),
    ("POST", "/patching/v1/init_release/..", None),
    ("POST", "/patching/v1/del_release/a%20b", None),
    ("POST", "/patching/v1/upload", None),
    ("GET", "/patching/v1/what_requires/NO_SUCH_PATCH", None)])
def test_patching_refusals_are_starlingx_error_texts(api, method, path, query):
    """StarlingX answers a refused operation with HTTP 200 and its ``error`` text
    (sw-patch prints it); relative upload_dir paths would be the server's cwd."""
    checker = Checker(api)
    response = checker.send("patching", method, path, {200}, query_string=query)
    assert response.get_json()["error"].strip(), response.get_json()
    checker.verdict()


def test_no_route_serves_files_from_the_working_directory(make_app, tmp_path, monkeypatch):
    """Flask's default /static route served <cwd>/static/* (the app has no package)."""
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "secret.txt").write_text("not for the API")
    monkeypatch.chdir(tmp_path)
    client, _ = make_app()
    assert not [r for r in client.application.url_map.iter_rules() if r.endpoint == "static"]
    response = client.get("/static/secret.txt", headers=LATEST)
    assert response.status_code == 404 and b"not for the API" not in response.get_data()
