"""Enrolment file parsing: baremetal-create YAML/JSON and CSV."""
import json

import pytest

from cli import enroll
from cli.errors import InvalidInput
from conductor import errors
from conductor.service import validation


def test_yaml_baremetal_create_format(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text("""
nodes:
  - name: n0
    driver: ipmi
    driver_info: {ipmi_address: 10.0.0.1, ipmi_password: pw}
    properties: {cpus: 4}
    ports:
      - address: 52:54:00:00:00:01
    portgroups:
      - name: pg
        ports: [{address: 52-54-00-00-00-02}]
chassis:
  - description: rack 1
    nodes:
      - {name: n1, driver: fake-hardware}
""")
    entries = enroll.load(path)
    assert [e.body["name"] for e in entries] == ["n0", "n1"]
    assert entries[0].macs == ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    assert "ports" not in entries[0].body and entries[0].body["properties"] == {"cpus": 4}
    assert all(e.error is None for e in entries)


def test_json_with_bad_entries(tmp_path):
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"nodes": [
        {"name": "ok", "driver": "fake-hardware", "ports": [{"address": "52:54:00:00:00:03"}]},
        {"name": "badmac", "driver": "fake-hardware", "ports": [{"address": "nope"}]},
        {"name": "nodriver"}, "not-a-mapping"]}))
    entries = enroll.load(path)
    assert [e.error is None for e in entries] == [True, False, False, False]
    assert "MAC" in entries[1].error and "driver" in entries[2].error


def test_csv(tmp_path):
    path = tmp_path / "nodes.csv"
    path.write_text("name,driver,bmc_address,bmc_username,bmc_password,bmc_port,macs\n"
                    "r0,redfish,https://10.0.0.9,admin,pw,,52:54:00:00:00:04\n"
                    "i0,ipmi,10.0.0.10,admin,pw,6230,52:54:00:00:00:05;52:54:00:00:00:06\n")
    r0, i0 = enroll.load(path)
    assert r0.body["driver_info"] == {"redfish_address": "https://10.0.0.9",
                                      "redfish_username": "admin", "redfish_password": "pw"}
    assert i0.body["driver_info"]["ipmi_port"] == "6230"
    assert i0.macs == ["52:54:00:00:00:05", "52:54:00:00:00:06"]


@pytest.mark.parametrize("name,text,message", [
    ("x.csv", "host,macs\nn0,52:54:00:00:00:01\n", "header"),
    ("x.yaml", "nodes: [unclosed\n", "not valid"),
    ("x.json", '{"nodes": 5}', "nodes"),
    ("x.yaml", "ports: []\n", "unknown top-level"),
])
def test_bad_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message):
        enroll.load(path)


@pytest.mark.parametrize("raw", ["52:54:00:AB:cd:01", "52-54-00-ab-cd-01", "525400abcd01",
                                 " 52:54:00:ab:cd:01 ", "52:5400-abcd01", 5, None,
                                 "zz:zz", "52:54:00:ab:cd", "52:54:00:ab:cd:01:02", ""])
def test_mac_check_matches_the_api(raw):
    # The client checks MACs itself (it does not import the server) the way the API does.
    try:
        expected = validation.mac_address(raw)
    except errors.InvalidParameter as exc:
        with pytest.raises(InvalidInput) as caught:
            enroll.mac_address(raw)
        assert str(caught.value) == str(exc)
    else:
        assert enroll.mac_address(raw) == expected == "52:54:00:ab:cd:01"
