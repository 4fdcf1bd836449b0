"""Identity v3 through Flask's test client: Keystone's login, validation and revocation,
and the token taken by every API (Ironic /v1, StarlingX patching, FM alarms)."""
from __future__ import annotations

import base64
import json

import bcrypt
import pytest

from api.identity.login import object_id

USER, PASSWORD = "alice", "pw-alice-1"
OTHER, OTHER_PASSWORD = "bob", "pw-bob-2"
REFUSED = "The request you have made requires authentication."


def htpasswd_line(user: str, password: str) -> str:
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"


@pytest.fixture
def htpasswd(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(htpasswd_line(USER, PASSWORD) + htpasswd_line(OTHER, OTHER_PASSWORD))
    return path


@pytest.fixture
def basic(htpasswd):
    return {"api.auth_strategy": "http_basic", "api.htpasswd_file": str(htpasswd)}


@pytest.fixture
def client(make_app, basic):
    return make_app(basic)[0]


def login_body(user=USER, password=PASSWORD, project: str | None = "admin", **user_fields):
    fields = {"name": user, "password": password, "domain": {"name": "Default"},
              **user_fields}
    auth: dict = {"identity": {"methods": ["password"], "password": {"user": fields}}}
    if project is not None:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return {"auth": auth}


def login(client, query: str = "", **kwargs):
    return client.post("/v3/auth/tokens" + query, json=login_body(**kwargs))


def token_of(client, **kwargs) -> str:
    response = login(client, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.headers["X-Subject-Token"]


def keystone_error(response, code: int) -> str:
    assert response.status_code == code, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code and error["title"]
    return error["message"]


def service_urls(token: dict) -> dict[tuple[str, str], str]:
    return {(s["type"], s["name"]): e["url"] for s in token["catalog"]
            for e in s["endpoints"] if e["interface"] == "public"}


# -- discovery ------------------------------------------------------------------
def test_version_documents(client):
    for path in ("/v3", "/v3/"):
        version = client.get(path).get_json()["version"]
        assert version["id"] == "v3.14" and version["status"] == "stable"
        assert version["links"] == [{"rel": "self", "href": "http://localhost/v3/"}]
        assert version["media-types"][0]["type"] == \
            "application/vnd.openstack.identity-v3+json"
    # GET / stays Ironic's alone: keystoneauth's discovery of the baremetal endpoint
    # would take a v3 listed there for the newest baremetal version.
    assert [v["id"] for v in client.get("/").get_json()["versions"]] == ["v1"]


# -- login ----------------------------------------------------------------------
def test_project_login_as_keystone(client):
    response = login(client)
    assert response.status_code == 201
    token = response.get_json()["token"]
    assert len(response.headers["X-Subject-Token"]) >= 43
    assert token["user"]["name"] == USER and token["project"]["name"] == "admin"
    assert token["methods"] == ["password"] and token["roles"]
    assert token["expires_at"].endswith("Z") and token["issued_at"] < token["expires_at"]
    assert service_urls(token) == {
        ("identity", "keystone"): "http://localhost/v3",
        ("baremetal", "ironic"): "http://localhost",
        ("patching", "patching"): "http://127.0.0.1:5487",     # the patching listener
        ("nfv", "vim"): "http://localhost"}


def test_unscoped_login_and_nocatalog(client):
    token = login(client, project=None).get_json()["token"]
    assert "catalog" not in token and "project" not in token
    token = login(client, query="?nocatalog").get_json()["token"]
    assert "catalog" not in token and token["project"]["name"] == "admin"


def test_login_by_user_and_project_ids(client):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "id": object_id("user", OTHER), "password": OTHER_PASSWORD}}},
        "scope": {"project": {"id": object_id("project", "admin")}}}}
    response = client.post("/v3/auth/tokens", json=body)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["token"]["user"]["name"] == OTHER


@pytest.mark.parametrize("kwargs", [{"password": "wrong"}, {"user": "mallory"},
                                    {"user": USER, "password": OTHER_PASSWORD},
                                    {"project": "other-project"}])
def test_refused_logins_are_401_with_one_message(client, kwargs):
    response = login(client, **kwargs)
    assert keystone_error(response, 401) == REFUSED
    assert "X-Subject-Token" not in response.headers
    assert response.headers["WWW-Authenticate"] == 'Keystone uri="http://localhost/v3"'


def test_malformed_logins_are_400_415_413(client):
    assert "domain" in keystone_error(client.post("/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": USER, "password": PASSWORD}}}}}), 400)
    keystone_error(client.post("/v3/auth/tokens", data="{", content_type="application/json"),
                   400)
    keystone_error(client.post("/v3/auth/tokens", data="x", content_type="text/plain"), 415)
    # Over [api] max_request_body_size: refused before any route runs (api/limits.py).
    assert client.post("/v3/auth/tokens", data=b"{" + b" " * 200_000 + b"}",
                       content_type="application/json").status_code == 413
    assert client.put("/v3/auth/tokens").status_code == 405   # routing: Ironic's body


def test_login_needs_no_basic_credentials_but_other_routes_do(client):
    assert client.get("/v1/nodes").status_code == 401
    assert login(client).status_code == 201


# -- the token on every API -----------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/nodes", "/patching/v1/query", "/fm/v1/alarms"])
def test_every_api_takes_the_token(client, path):
    token = token_of(client)
    assert client.get(path, headers={"X-Auth-Token": token}).status_code == 200
    assert client.get(path, headers={"X-Auth-Token": token[:-1] + "x"}).status_code == 401


def test_a_bad_token_is_refused_even_with_good_basic_credentials(client):
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert client.get("/v1/nodes", headers={"Authorization": f"Basic {basic}"}
                      ).status_code == 200
    response = client.get("/v1/nodes", headers={"Authorization": f"Basic {basic}",
                                                "X-Auth-Token": "forged"})
    assert response.status_code == 401
    assert "token" in json.loads(response.get_json()["error_message"])["faultstring"]


# -- validation and revocation --------------------------------------------------
def test_validate(client):
    mine, theirs = token_of(client), token_of(client, user=OTHER, password=OTHER_PASSWORD)
    response = client.get("/v3/auth/tokens", headers={"X-Auth-Token": mine,
                                                       "X-Subject-Token": theirs})
    assert response.status_code == 200 and response.headers["X-Subject-Token"] == theirs
    assert response.get_json()["token"]["user"]["name"] == OTHER
    assert "catalog" in response.get_json()["token"]
    assert client.head("/v3/auth/tokens", headers={"X-Auth-Token": mine,
                                                   "X-Subject-Token": mine}).status_code == 200
    assert keystone_error(client.get("/v3/auth/tokens", headers={
        "X-Auth-Token": mine, "X-Subject-Token": theirs[:-1] + "x"}), 404)
    assert keystone_error(client.get("/v3/auth/tokens", headers={"X-Auth-Token": mine}), 404)
    assert keystone_error(client.get("/v3/auth/tokens", headers={
        "X-Subject-Token": mine}), 401) == REFUSED


def test_revoke(client):
    token = token_of(client)
    holder = token_of(client)
    headers = {"X-Auth-Token": holder, "X-Subject-Token": token}
    assert client.delete("/v3/auth/tokens", headers=headers).status_code == 204
    assert client.get("/v1/nodes", headers={"X-Auth-Token": token}).status_code == 401
    assert keystone_error(client.get("/v3/auth/tokens", headers=headers), 404)
    assert keystone_error(client.delete("/v3/auth/tokens", headers=headers), 404)
    assert client.get("/v1/nodes", headers={"X-Auth-Token": holder}).status_code == 200


def test_a_new_password_ends_the_users_tokens(client, htpasswd):
    token = token_of(client)
    htpasswd.write_text(htpasswd_line(USER, "new-password") +
                        htpasswd_line(OTHER, OTHER_PASSWORD) + "# changed\n")
    assert client.get("/v1/nodes", headers={"X-Auth-Token": token}).status_code == 401
    assert login(client).status_code == 401
    assert login(client, password="new-password").status_code == 201


# -- processes and strategies ---------------------------------------------------
def test_a_second_process_on_the_database_accepts_and_revokes(make_app, basic, tmp_path):
    shared = {**basic, "database.connection": f"sqlite:///{tmp_path / 'shared.sqlite'}"}
    # Two processes on one database are two conductors: each has its own name.
    first = make_app(shared)[0]
    second = make_app({**shared, "conductor.host": "second-conductor"})[0]
    token = token_of(first)
    assert second.get("/v1/nodes", headers={"X-Auth-Token": token}).status_code == 200
    assert second.delete("/v3/auth/tokens", headers={"X-Auth-Token": token,
                                                     "X-Subject-Token": token}
                         ).status_code == 204
    assert first.get("/v1/nodes", headers={"X-Auth-Token": token}).status_code == 401


def test_with_auth_strategy_none_nobody_logs_in(make_app):
    client = make_app()[0]
    assert keystone_error(login(client), 401) == REFUSED
    assert client.get("/v3").status_code == 200
    assert client.get("/v1/nodes").status_code == 200     # loopback clients use no auth


def test_catalog_region_and_urls_from_settings(make_app, basic):
    client = make_app({**basic, "identity.region": "SystemController",
                       "identity.patching_url": "http://127.0.0.1:5487",
                       "api.public_endpoint": "http://192.0.2.7:6385"})[0]
    token = login(client).get_json()["token"]
    urls = service_urls(token)
    assert urls[("patching", "patching")] == "http://127.0.0.1:5487"
    assert urls[("baremetal", "ironic")] == "http://192.0.2.7:6385"
    assert {e["region"] for s in token["catalog"] for e in s["endpoints"]} == \
        {"SystemController"}
