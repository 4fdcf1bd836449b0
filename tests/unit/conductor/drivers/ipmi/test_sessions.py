"""Which session a BMC command may reuse: the SessionKey of its credentials."""
from __future__ import annotations

import dataclasses

from conductor.drivers.ipmi.client import BmcAddress, session_key

SALT = b"s" * 32
BMC = BmcAddress("10.0.0.5", 623, "admin", "pw-correct", 4)


def test_same_credentials_share_a_key():
    assert session_key(BMC, SALT) == session_key(dataclasses.replace(BMC), SALT)


def test_any_other_credential_or_session_parameter_is_another_key():
    key = session_key(BMC, SALT)
    for change in ({"password": "pw-wrong"}, {"password": ""}, {"username": "root"},
                   {"priv_level": 2}, {"port": 624}, {"host": "10.0.0.6"}):
        assert session_key(dataclasses.replace(BMC, **change), SALT) != key, change


def test_the_key_holds_no_password():
    key = session_key(BMC, SALT)
    assert "pw-correct" not in repr(key) and b"pw-correct" not in key.digest
    assert key.digest != session_key(BMC, b"t" * 32).digest  # keyed per process
    assert (key.host, key.port, key.username) == ("10.0.0.5", 623, "admin")


def test_the_password_stays_out_of_reprs():
    assert "pw-correct" not in repr(BMC) and "admin" in repr(BMC)
