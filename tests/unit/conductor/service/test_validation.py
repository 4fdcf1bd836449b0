"""Input parsing: MACs, names, UUIDs, create bodies and RFC 6902 patches."""
import pytest

from conductor import errors
from conductor.service import validation


@pytest.mark.parametrize("raw,expected", [
    ("52:54:00:AB:cd:01", "52:54:00:ab:cd:01"),
    ("52-54-00-ab-cd-01", "52:54:00:ab:cd:01"),
    ("525400abcd01", "52:54:00:ab:cd:01"),
    (" 52:54:00:ab:cd:01 ", "52:54:00:ab:cd:01"),
])
def test_mac_normalised(raw, expected):
    assert validation.mac_address(raw) == expected


@pytest.mark.parametrize("raw", ["52:54:00:ab:cd", "52:54:00:ab:cd:01:02", "zz:54:00:ab:cd:01",
                                 "", None, 42, "52:54:00:ab:cd:0g"])
def test_bad_mac_rejected(raw):
    with pytest.raises(errors.InvalidParameter, match="MAC"):
        validation.mac_address(raw)


@pytest.mark.parametrize("name", ["node-0", "a.b_c~d", "X" * 255])
def test_good_names(name):
    assert validation.node_name(name) == name


@pytest.mark.parametrize("name", ["", "has space", "semi;colon", "x" * 256, "$(reboot)",
                                  "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", 5])
def test_bad_names(name):
    with pytest.raises(errors.InvalidParameter):
        validation.node_name(name)


def test_create_rejects_unknown_and_readonly_fields():
    with pytest.raises(errors.InvalidParameter, match="Unknown attribute.*bogus"):
        validation.parse_fields({"driver": "x", "bogus": 1}, validation.NODE_FIELDS, "node")
    with pytest.raises(errors.InvalidParameter, match="provision_state"):
        validation.parse_fields({"driver": "x", "provision_state": "active"},
                                validation.NODE_FIELDS, "node")


def test_create_requires_driver_and_types():
    with pytest.raises(errors.InvalidParameter, match="driver"):
        validation.parse_fields({"name": "n"}, validation.NODE_FIELDS, "node",
                                mandatory=validation.NODE_MANDATORY)
    with pytest.raises(errors.InvalidParameter, match="properties"):
        validation.parse_fields({"driver": "x", "properties": [1]}, validation.NODE_FIELDS,
                                "node")
    with pytest.raises(errors.InvalidParameter):
        validation.parse_fields(["driver"], validation.NODE_FIELDS, "node")


def test_patch_add_replace_remove():
    table = {k: validation.NODE_FIELDS[k] for k in ("name", "instance_info", "driver")}
    doc = {"name": "a", "instance_info": {"x": 1}, "driver": "fake-hardware"}
    changed = validation.apply_patch(doc, [
        {"op": "add", "path": "/instance_info/image_source", "value": "http://i"},
        {"op": "remove", "path": "/instance_info/x"},
        {"op": "replace", "path": "/name", "value": "b"}], table)
    assert changed == {"instance_info": {"image_source": "http://i"}, "name": "b"}
    assert doc == {"name": "a", "instance_info": {"x": 1}, "driver": "fake-hardware"}


@pytest.mark.parametrize("patch,message", [
    ([{"op": "replace", "path": "/provision_state", "value": "active"}], "internal attribute"),
    ([{"op": "remove", "path": "/driver"}], "mandatory"),
    ([{"op": "remove", "path": "/instance_info/missing"}], "Could not apply"),
    ([{"op": "frobnicate", "path": "/name", "value": 1}], "Could not apply"),
    ({"op": "add"}, "list"),
    ([{"op": "add", "path": "name", "value": "x"}], "path"),
    ([{"op": "replace", "path": "/name", "value": "bad name"}], "name"),
])
def test_bad_patches(patch, message):
    table = {k: validation.NODE_FIELDS[k] for k in ("name", "instance_info", "driver")}
    doc = {"name": "a", "instance_info": {}, "driver": "fake-hardware"}
    with pytest.raises(errors.InvalidParameter, match=message):
        validation.apply_patch(doc, patch, table, validation.NODE_MANDATORY)


def test_local_link_connection_keys_checked():
    with pytest.raises(errors.InvalidParameter, match="unknown keys"):
        validation.local_link({"switchid": "x"}, "local_link_connection")
