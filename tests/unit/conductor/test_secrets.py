"""conductor.secrets: the key file, the Cipher, echoed masks."""
from __future__ import annotations

import os
import stat

import pytest
from cryptography.fernet import Fernet

from api.v1 import views
from conductor import errors, secrets
from conductor.config import from_options


@pytest.fixture
def cipher(tmp_path):
    return secrets.Cipher(secrets.load_or_create_key(tmp_path / "keys" / "k"),
                          tmp_path / "keys" / "k")


INFO = {"ipmi_address": "10.0.0.5", "ipmi_username": "admin", "ipmi_password": "s3cret-ipmi",
        "redfish_password": "s3cret-redfish", "ipmi_hex_kg_key": "00ff00ff00ff",
        "auth_token": 12345678, "empty_password": "", "none_password": None}


def test_round_trip_encrypts_only_secret_values(cipher):
    sealed = cipher.encrypt_dict(INFO)
    for key in ("ipmi_password", "redfish_password", "ipmi_hex_kg_key", "auth_token"):
        assert secrets.is_encrypted(sealed[key]), key
        assert str(INFO[key]) not in sealed[key]
    for key in ("ipmi_address", "ipmi_username", "empty_password", "none_password"):
        assert sealed[key] == INFO[key]
    assert cipher.decrypt_dict(sealed) == INFO  # types survive: 1234 stays an int


def test_encryption_is_idempotent(cipher):
    sealed = cipher.encrypt_dict(INFO)
    assert cipher.encrypt_dict(sealed) == sealed
    mixed = dict(sealed, ipmi_password="new")  # a PATCH of one key
    again = cipher.encrypt_dict(mixed)
    assert again["redfish_password"] == sealed["redfish_password"]
    assert cipher.decrypt_dict(again) == dict(INFO, ipmi_password="new")


def test_plaintext_passes_decryption(cipher):
    assert cipher.decrypt_dict({"ipmi_password": "legacy"}) == {"ipmi_password": "legacy"}
    assert cipher.decrypt_dict(None) == {}


def test_wrong_key_names_the_key_file(cipher, tmp_path):
    sealed = cipher.encrypt_dict({"ipmi_password": "pw"})
    other = secrets.Cipher(Fernet.generate_key(), tmp_path / "other.key")
    with pytest.raises(errors.SecretsError) as info:
        other.decrypt_dict(sealed)
    text = str(info.value)
    assert "driver_info.ipmi_password" in text and str(tmp_path / "other.key") in text
    assert "another key" in text and "pw" not in text.replace("password", "")


def test_garbage_after_the_tag_is_a_clear_error(cipher):
    with pytest.raises(errors.SecretsError, match="Cannot decrypt driver_info.x_token"):
        cipher.decrypt_dict({"x_token": secrets.TAG + "not-a-token"})


def test_key_file_is_created_private_and_reused(tmp_path):
    settings = from_options({"data_dir": str(tmp_path / "data")})
    path = secrets.key_path(settings)
    assert path == tmp_path / "data" / "keys" / "secrets.key"
    first = secrets.Cipher.from_settings(settings)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = first.encrypt_dict({"ipmi_password": "pw"})
    second = secrets.Cipher.from_settings(settings)
    assert second.decrypt_dict(sealed) == {"ipmi_password": "pw"}
    assert [p.name for p in path.parent.iterdir()] == ["secrets.key"]  # no temp files left


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "keys" / "secrets.key"
    secrets.load_or_create_key(path)
    os.chmod(path, mode)
    with pytest.raises(errors.ConfigError, match=f"chmod 600 {path}") as info:
        secrets.load_or_create_key(path)
    assert f"{mode:04o}" in str(info.value)


def test_key_directory_writable_by_others_is_refused(tmp_path):
    path = tmp_path / "keys" / "secrets.key"
    secrets.load_or_create_key(path)
    os.chmod(path.parent, 0o777)
    with pytest.raises(errors.ConfigError, match="could replace the key"):
        secrets.load_or_create_key(path)


def test_invalid_key_content_is_refused(tmp_path):
    path = tmp_path / "k"
    path.write_text("not a key\n")
    os.chmod(path, 0o600)
    with pytest.raises(errors.ConfigError, match="not hold a valid Fernet key"):
        secrets.Cipher.from_settings(from_options({"secrets.key_file": str(path)}))


def test_echoed_mask_keeps_the_stored_secret():
    stored = {"ipmi_password": "fernet:v1:abc", "ipmi_username": "admin"}
    new = {"ipmi_password": secrets.MASK, "ipmi_username": "root"}
    assert secrets.restore_masked(stored, new) == {"ipmi_password": "fernet:v1:abc",
                                                   "ipmi_username": "root"}
    # A non-secret key may legitimately hold six asterisks.
    assert secrets.restore_masked({}, {"description": secrets.MASK}) == {
        "description": secrets.MASK}
    with pytest.raises(errors.InvalidParameter, match="driver_info.ipmi_password"):
        secrets.restore_masked({}, {"ipmi_password": secrets.MASK})


def test_api_masks_with_the_same_marker_list(cipher):
    assert views.mask is secrets.mask  # one masking function, one marker list
    shown = views.mask_secrets(cipher.encrypt_dict(INFO))
    assert shown == {k: (secrets.MASK if secrets.is_secret_key(k) and v not in (None, "")
                         else v) for k, v in INFO.items()}
    assert not hasattr(views, "_SECRET_MARKERS")


NESTED = {"ipmi_address": "h", "nested": {"password": "pw-n", "user": "u",
                                          "list": [{"auth_token": 7}, "plain"]}}


def test_nested_secrets_are_encrypted_masked_and_decrypted(cipher):
    sealed = cipher.encrypt_dict(NESTED)
    assert secrets.is_encrypted(sealed["nested"]["password"])
    assert secrets.is_encrypted(sealed["nested"]["list"][0]["auth_token"])
    assert sealed["nested"]["user"] == "u" and sealed["nested"]["list"][1] == "plain"
    assert cipher.encrypt_dict(sealed) == sealed
    assert cipher.decrypt_dict(sealed) == NESTED
    assert secrets.mask(sealed) == {"ipmi_address": "h", "nested": {
        "password": secrets.MASK, "user": "u",
        "list": [{"auth_token": secrets.MASK}, "plain"]}}
    # A whole value under a secret-named key is one secret, whatever its type.
    assert secrets.mask({"password": {"a": 1}, "x_password": ""}) == {
        "password": secrets.MASK, "x_password": ""}


def test_only_secret_named_keys_are_decrypted(cipher):
    token = cipher.encrypt_dict({"ipmi_password": "pw"})["ipmi_password"]
    info = {"deploy_kernel": token, "extra": {"note": token}, "ipmi_password": token}
    opened = cipher.decrypt_dict(info)
    assert opened == {"deploy_kernel": token, "extra": {"note": token},
                      "ipmi_password": "pw"}


def test_nested_echoed_mask_is_restored_and_a_planted_ciphertext_refused():
    stored = {"nested": {"password": "fernet:v1:abc"}, "ipmi_password": "fernet:v1:def"}
    new = {"nested": {"password": secrets.MASK}, "ipmi_password": "fernet:v1:def"}
    assert secrets.restore_masked(stored, new) == stored
    with pytest.raises(errors.InvalidParameter, match=r"driver_info\.nested\.other_password"):
        secrets.restore_masked(stored, {"nested": {"other_password": secrets.MASK}})
    # Another node's ciphertext, or this node's under another key: refused.
    for planted in ({"ipmi_password": "fernet:v1:xyz"},
                    {"redfish_password": "fernet:v1:def"},
                    {"nested": {"password": "fernet:v1:def"}}):
        with pytest.raises(errors.InvalidParameter, match="encrypted itself"):
            secrets.restore_masked(stored, planted)


DOC = {"driver_info": {"ipmi_password": "fernet:v1:abc", "ipmi_address": "h",
                       "nested": {"password": "fernet:v1:x"}, "plain": {"a": 1}},
       "extra": {"note": 1}, "instance_info": {"configdrive": "data"}}


@pytest.mark.parametrize("op", [
    {"op": "copy", "from": "/driver_info/ipmi_password", "path": "/extra/x"},
    {"op": "move", "from": "/driver_info/ipmi_password", "path": "/extra/x"},
    {"op": "copy", "from": "/driver_info", "path": "/extra/x"},
    {"op": "move", "from": "/driver_info/nested", "path": "/driver_info/other"},
    {"op": "copy", "from": "/driver_info/nested/password", "path": "/extra/x"},
    {"op": "copy", "from": "", "path": "/extra/x"},
    {"op": "copy", "from": "/instance_info/configdrive", "path": "/extra/x"},
    {"op": "test", "path": "/driver_info/ipmi_password", "value": "fernet:v1:abc"},
    {"op": "test", "path": "/driver_info", "value": {}},
    {"op": "test", "path": "/driver_info/missing_password", "value": "guess"},
    {"op": "copy", "from": "/driver_info/x~1password", "path": "/extra/x"},  # escaped "/"
])
def test_patch_operations_that_read_a_secret_are_refused(op):
    ops = [{"op": "add", "path": "/extra/y", "value": 1}, op]
    with pytest.raises(errors.InvalidParameter, match="cannot read"):
        secrets.refuse_secret_reads(ops, DOC)


@pytest.mark.parametrize("op", [
    {"op": "copy", "from": "/driver_info/ipmi_address", "path": "/extra/x"},
    {"op": "move", "from": "/driver_info/plain", "path": "/extra/x"},
    {"op": "test", "path": "/extra/note", "value": 1},
    {"op": "add", "path": "/driver_info/ipmi_password", "value": "new"},
    {"op": "replace", "path": "/driver_info/ipmi_password", "value": secrets.MASK},
    {"op": "remove", "path": "/driver_info/nested"},
    {"op": "copy", "from": "not a pointer", "path": "/extra/x"},  # the patch reports it
    {"op": ["copy"], "from": "/driver_info"},
    "not an operation",
])
def test_other_patch_operations_pass(op):
    secrets.refuse_secret_reads([op], DOC)
