"""The login body (api/identity/login.py) as Keystone's clients send it, and Keystone's
refusals: 400 for a malformed body, 401 for what it will not authenticate."""
from __future__ import annotations

import pytest

from api.identity.login import PasswordLogin, object_id, parse
from conductor import errors


def body(user: dict, scope=None, methods=("password",)) -> dict:
    auth: dict = {"identity": {"methods": list(methods), "password": {"user": user}}}
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


def test_keystoneauth_project_login():
    login = parse(body({"name": "alice", "password": "pw", "domain": {"name": "Default"}},
                       {"project": {"name": "admin", "domain": {"name": "Default"}}}))
    assert login == PasswordLogin(password="pw", user_name="alice", project_name="admin")
    assert login.scoped


@pytest.mark.parametrize("domain", [{"id": "default"}, {"name": "Default"},
                                    {"name": "default"}])
def test_the_default_domain_by_id_or_name(domain):
    login = parse(body({"name": "alice", "password": "pw", "domain": domain},
                       {"project": {"name": "admin", "domain": domain}}))
    assert login.user_name == "alice" and login.project_name == "admin"


@pytest.mark.parametrize("scope", [None, "unscoped"])
def test_unscoped(scope):
    login = parse(body({"name": "alice", "password": "pw", "domain": {"id": "default"}},
                       scope))
    assert not login.scoped and login.project_name is None


def test_user_and_project_by_id_need_no_domain():
    login = parse(body({"id": object_id("user", "alice"), "password": "pw"},
                       {"project": {"id": object_id("project", "admin")}}))
    assert login.user_id == object_id("user", "alice") and login.user_name is None
    assert login.project_id == object_id("project", "admin")


def test_ids_are_stable_and_keystone_shaped():
    assert object_id("user", "alice") == object_id("user", "alice")
    assert object_id("user", "alice") != object_id("project", "alice")
    assert len(object_id("user", "alice")) == 32


@pytest.mark.parametrize("bad", [
    {},
    {"auth": []},
    {"auth": {"identity": {"methods": "password"}}},
    {"auth": {"identity": {"methods": []}}},
    body({"name": "alice", "domain": {"id": "default"}}),               # no password
    body({"name": "alice", "password": 7, "domain": {"id": "default"}}),
    body({"password": "pw"}),                                           # no id, no name
    body({"name": "alice", "password": "pw"}),                          # name without domain
    body({"name": "", "password": "pw", "domain": {"id": "default"}}),
    body({"name": "alice", "password": "pw", "domain": {}}),
    body({"name": "alice", "password": "pw", "domain": {"id": "default"}},
         {"project": {"name": "admin"}}),                               # project without domain
    body({"name": "alice", "password": "pw", "domain": {"id": "default"}}, {"project": {}}),
])
def test_malformed_bodies_are_400(bad):
    with pytest.raises(errors.Invalid):
        parse(bad)


@pytest.mark.parametrize("refused", [
    body({"name": "alice", "password": "pw", "domain": {"id": "other"}}),
    body({"name": "alice", "password": "pw", "domain": {"name": "Other"}}),
    body({"name": "alice", "password": "pw", "domain": {"id": "default"}},
         {"project": {"name": "admin", "domain": {"id": "other"}}}),
    body({"name": "alice", "password": "pw", "domain": {"id": "default"}},
         {"domain": {"id": "default"}}),
    body({"name": "alice", "password": "pw", "domain": {"id": "default"}},
         {"system": {"all": True}}),
    body({"name": "alice", "password": "pw", "domain": {"id": "default"}},
         methods=("password", "totp")),
    {"auth": {"identity": {"methods": ["token"], "token": {"id": "x"}}}},
])
def test_what_keystone_will_not_authenticate_is_401(refused):
    with pytest.raises(errors.NotAuthorized) as caught:
        parse(refused)
    assert str(caught.value) == "The request you have made requires authentication."
