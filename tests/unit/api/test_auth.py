"""Password checks (api/auth.py): one bcrypt check of the file's cost for a known and
an unknown user alike, no check for a remembered credential or a password bcrypt
cannot take, and the public paths matched whole."""
from __future__ import annotations

import base64

import bcrypt
import pytest
from werkzeug import exceptions as http

from api import auth
from api.throttle import CheckBudget, CheckLimits
from conductor import errors


@pytest.fixture
def checks(monkeypatch):
    """Every bcrypt check made: the cost of the hash it was made against."""
    made: list[int] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        made.append(int(hashed.split(b"$")[2]))
        return real(password, hashed)
    monkeypatch.setattr(auth.bcrypt, "checkpw", counting)
    return made


def _htpasswd(tmp_path, *entries: tuple[str, str, int]):
    path = tmp_path / "htpasswd"
    path.write_text("".join(
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()}\n"
        for user, password, cost in entries))
    return path


def test_an_unknown_user_costs_one_check_of_the_same_cost_as_a_known_one(tmp_path, checks):
    checker = auth.HtpasswdAuth(_htpasswd(tmp_path, ("alice", "right", 5), ("bob", "b", 5),
                                          ("carol", "c", 4)))
    with pytest.raises(errors.NotAuthorized, match="Invalid user name or password"):
        checker.verify("alice", "wrong", client="192.0.2.1")
    with pytest.raises(errors.NotAuthorized, match="Invalid user name or password"):
        checker.verify("mallory", "wrong", client="192.0.2.1")
    assert checks == [5, 5]  # one each, at the cost most of the file's hashes have


def test_verified_credentials_are_remembered_without_a_check_or_a_slot(tmp_path, checks):
    budget = CheckBudget(CheckLimits(free_failures=1))
    checker = auth.HtpasswdAuth(_htpasswd(tmp_path, ("alice", "right", 4)), budget)
    assert checker.verify("alice", "right", client="192.0.2.1") == "alice"
    with pytest.raises(errors.NotAuthorized):
        checker.verify("alice", "wrong", client="192.0.2.1")  # now it must wait...
    with pytest.raises(http.TooManyRequests) as busy:
        checker.verify("alice", "other", client="192.0.2.1")
    assert busy.value.retry_after >= 1
    assert checker.verify("alice", "right", client="192.0.2.1") == "alice"  # ...not these
    assert len(checks) == 2
    header = "Basic " + base64.b64encode(b"alice:right").decode()
    assert checker.is_verified(header)
    assert not checker.is_verified(header.replace("YWxpY2U6cmlnaHQ=", "YWxpY2U6d3Jvbmc="))
    assert not checker.is_verified(None) and not checker.is_verified("Basic !!")


def test_a_changed_file_forgets_the_verified_credentials(tmp_path, checks):
    path = _htpasswd(tmp_path, ("alice", "right", 4))
    checker = auth.HtpasswdAuth(path)
    checker.verify("alice", "right", client="192.0.2.1")
    _htpasswd(tmp_path, ("alice", "new", 4))
    with pytest.raises(errors.NotAuthorized):
        checker.verify("alice", "right", client="192.0.2.1")


@pytest.mark.parametrize("password", ["x" * 73, "é" * 37, "right" + "x" * 68])
def test_a_password_over_72_bytes_is_refused_without_a_check(tmp_path, checks, password):
    checker = auth.HtpasswdAuth(_htpasswd(tmp_path, ("alice", "right", 4)))
    with pytest.raises(errors.NotAuthorized, match="at most 72 bytes"):
        checker.verify("alice", password, client="192.0.2.1")
    assert checks == []
    assert checker.verify("alice", "right", client="192.0.2.1") == "alice"


def test_a_malformed_hash_refuses_its_user_not_the_server(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text("alice:$2b$04$short\n")
    checker = auth.HtpasswdAuth(path)
    with pytest.raises(errors.NotAuthorized):
        checker.verify("alice", "anything", client="192.0.2.1")


@pytest.mark.parametrize(("path", "public"), [
    ("/", True), ("/v1", True), ("/v1/", True), ("/v1/lookup", True), ("/v1/lookup/", True),
    ("/v1/heartbeat/1be26c0b-03f2-4d2e-ae87-c02d7f33c123", True), ("/v1/heartbeat/n1/", True),
    ("/v3", True), ("/v3/auth/tokens", True),
    ("/v1/lookupfoo", False), ("/v1/lookup/x", False), ("/v1/heartbeat/", False),
    ("/v1/heartbeat/x/y", False), ("/v1/heartbeatfoo/x", False), ("/v1/nodes", False),
    ("/v1/lookup/../nodes", False), ("/v3foo", False), ("/v1//lookup", False)])
def test_public_paths_are_matched_whole(path, public):
    assert auth._is_public(path) is public
