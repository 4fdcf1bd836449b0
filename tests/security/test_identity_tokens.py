"""Identity v3 tokens on a real ``metalcast serve`` (loopback, http_basic users): each
replay tries to get work done with a token it should not have, or to get a token with a
password it does not know. Each gets a 401 (the login a Keystone 401, the APIs their
own) and nothing is done: no node is created or deleted, no token is issued.
"""
from __future__ import annotations

import hashlib
import secrets
import sqlite3
import uuid

import bcrypt
import pytest
import requests

from tests.functional.conftest import start_server, stop_server
from tests.waiting import wait_until

ALICE, BOB = "alice", "bob"
LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}


class Appliance:
    """One running server with two htpasswd users, and what a test needs of it."""

    def __init__(self, tmp_path_factory, **sections):
        data_dir = tmp_path_factory.mktemp("identity-security")
        self.passwords = {ALICE: f"pw-{uuid.uuid4().hex[:10]}",
                          BOB: f"pw-{uuid.uuid4().hex[:10]}"}
        (data_dir / "htpasswd").write_text("".join(
            f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}\n"
            for user, pw in self.passwords.items()))
        api = {"auth_strategy": "http_basic", "htpasswd_file": data_dir / "htpasswd",
               **sections.pop("api", {})}
        self.server = start_server(data_dir, {"api": api, **sections})
        self.url, self.data_dir = self.server.url, data_dir

    def login(self, user: str = ALICE, password: str | None = None) -> requests.Response:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "password": password or self.passwords[user],
            "domain": {"id": "default"}}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        return requests.post(f"{self.url}/v3/auth/tokens", json=body, timeout=30)

    def token(self, user: str = ALICE) -> str:
        response = self.login(user)
        assert response.status_code == 201, response.text
        return response.headers["X-Subject-Token"]

    def call(self, method: str, path: str, token: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, timeout=30,
                                headers={"X-Auth-Token": token, **LATEST}, **kwargs)

    def as_admin(self, method: str, path: str, **kwargs) -> requests.Response:
        """A request with basic credentials: how the test checks what happened."""
        return requests.request(method, self.url + path, timeout=30, headers=LATEST,
                                auth=(BOB, self.passwords[BOB]), **kwargs)

    def node_names(self) -> set[str]:
        return {n["name"] for n in self.as_admin("GET", "/v1/nodes").json()["nodes"]}

    def tokens_issued(self) -> int:
        return self.server.output().count("Identity token issued")

    def stop(self) -> None:
        stop_server(self.server.process)


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    lab = Appliance(tmp_path_factory)
    yield lab
    lab.stop()


def refused_work(lab: Appliance, token: str) -> None:
    """``token`` neither creates nor deletes a node, nor reads the patch API or alarms."""
    name = f"attack-{uuid.uuid4().hex[:8]}"
    victim = lab.as_admin("POST", "/v1/nodes", json={"driver": "fake-hardware",
                                                     "name": f"victim-{name}"})
    assert victim.status_code == 201, victim.text
    assert lab.call("POST", "/v1/nodes", token, json={"driver": "fake-hardware",
                                                      "name": name}).status_code == 401
    assert lab.call("DELETE", f"/v1/nodes/victim-{name}", token).status_code == 401
    for path in ("/v1/nodes", "/patching/v1/query", "/fm/v1/alarms"):
        assert lab.call("GET", path, token).status_code == 401, path
    names = lab.node_names()
    assert name not in names and f"victim-{name}" in names


def test_wrong_password_gets_no_token(appliance):
    before = appliance.tokens_issued()
    for user, password in [(ALICE, "wrong"), (ALICE, appliance.passwords[BOB]),
                           ("mallory", appliance.passwords[ALICE])]:
        response = appliance.login(user, password)
        assert response.status_code == 401 and "X-Subject-Token" not in response.headers
        assert response.json()["error"]["message"] == \
            "The request you have made requires authentication."
    assert appliance.tokens_issued() == before


def test_forged_tokens(appliance):
    real = appliance.token()
    changed = real[:-1] + ("A" if real[-1] != "A" else "B")
    stored = hashlib.sha256(real.encode()).hexdigest()   # what a stolen row holds
    for forged in (secrets.token_urlsafe(32), changed, stored, real + "x", "x" * 5000, ""):
        refused_work(appliance, forged)
    assert appliance.call("GET", "/v1/nodes", real).status_code == 200


def test_the_database_holds_no_usable_token(appliance):
    real = appliance.token()
    with sqlite3.connect(appliance.data_dir / "metalcast.sqlite") as conn:
        rows = conn.execute("SELECT token_hash FROM identity_tokens").fetchall()
    hashes = {row[0] for row in rows}
    assert hashlib.sha256(real.encode()).hexdigest() in hashes
    assert real not in hashes


def test_revoked_token(appliance):
    token, holder = appliance.token(), appliance.token(BOB)
    response = requests.delete(f"{appliance.url}/v3/auth/tokens", timeout=30, headers={
        "X-Auth-Token": holder, "X-Subject-Token": token})
    assert response.status_code == 204
    refused_work(appliance, token)
    # nor can it validate or revoke another token
    other = appliance.token()
    for method in ("GET", "DELETE"):
        response = requests.request(method, f"{appliance.url}/v3/auth/tokens", timeout=30,
                                    headers={"X-Auth-Token": token, "X-Subject-Token": other})
        assert response.status_code == 401
    assert appliance.call("GET", "/v1/nodes", other).status_code == 200


def test_own_revocation(appliance):
    token = appliance.token()
    response = requests.delete(f"{appliance.url}/v3/auth/tokens", timeout=30, headers={
        "X-Auth-Token": token, "X-Subject-Token": token})
    assert response.status_code == 204
    refused_work(appliance, token)


def test_a_token_is_its_users_only(appliance):
    alice = appliance.token(ALICE)
    shown = requests.get(f"{appliance.url}/v3/auth/tokens", timeout=30, headers={
        "X-Auth-Token": appliance.token(BOB), "X-Subject-Token": alice}).json()["token"]
    assert shown["user"]["name"] == ALICE
    # Alice's token is no password: not Bob's, not hers
    for user in (BOB, ALICE):
        assert requests.get(f"{appliance.url}/v1/nodes", auth=(user, alice), timeout=30,
                            headers=LATEST).status_code == 401
        assert appliance.login(user, alice).status_code == 401
    # a subject that is not a token validates as nothing
    for subject in (alice[:-1] + "x", appliance.passwords[ALICE], ALICE):
        response = requests.get(f"{appliance.url}/v3/auth/tokens", timeout=30, headers={
            "X-Auth-Token": alice, "X-Subject-Token": subject})
        assert response.status_code == 404


def test_a_changed_password_ends_the_token(tmp_path_factory):
    lab = Appliance(tmp_path_factory)
    try:
        token = lab.token(ALICE)
        lines = (lab.data_dir / "htpasswd").read_text().splitlines()
        new = bcrypt.hashpw(b"new-password", bcrypt.gensalt(4)).decode()
        (lab.data_dir / "htpasswd").write_text("".join(
            (f"{ALICE}:{new}" if line.startswith(f"{ALICE}:") else line) + "\n"
            for line in lines))
        refused_work(lab, token)
    finally:
        lab.stop()


def test_expired_token(tmp_path_factory):
    lab = Appliance(tmp_path_factory, identity={"token_expiration": 1})
    try:
        token = lab.token()
        wait_until(lambda: lab.call("GET", "/v1/nodes", token).status_code == 401, 30, 0.2,
                   "the 1 s token to expire")
        refused_work(lab, token)
        response = requests.get(f"{lab.url}/v3/auth/tokens", timeout=30, headers={
            "X-Auth-Token": lab.token(), "X-Subject-Token": token})
        assert response.status_code == 404
    finally:
        lab.stop()


def test_password_guessing_at_the_login_is_throttled(tmp_path_factory):
    lab = Appliance(tmp_path_factory, api={"auth_failures_before_backoff": 3})
    try:
        statuses = [lab.login(ALICE, f"guess-{n}").status_code for n in range(6)]
        assert statuses[:3] == [401] * 3 and 429 in statuses[3:], statuses
        response = lab.login(ALICE, "guess-again")
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == 429
        assert lab.tokens_issued() == 0
    finally:
        lab.stop()
