"""The ``metalcast`` CLI against a real server (API + conductor) on a loopback port."""
import json

import pytest

from api.server import Server
from cli import main as cli
from conductor import config


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = config.load(overrides={"data_dir": str(tmp_path_factory.mktemp("cli")),
                                      "api.port": 0, "pxe.enabled": False,
                                      "patching.listen_port": 0}, env={})
    srv = Server(settings)
    srv.start_in_thread()
    yield srv
    srv.close()


@pytest.fixture
def run(server, capsys):
    def invoke(*argv):
        code = cli.main(["--url", server.url, *argv])
        out, err = capsys.readouterr()
        return code, out, err
    return invoke


def as_json(run, *argv):
    code, out, err = run(*argv, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_node_lifecycle(run):
    node = as_json(run, "node", "create", "--driver", "fake-hardware", "--name", "cli-0",
                   "--driver-info", "ipmi_password=pw", "--property", "cpus=2")
    assert node["driver_info"] == {"ipmi_password": "******"}
    code, out, _ = run("port", "create", "52:54:00:10:00:01", "--node", "cli-0")
    assert code == 0 and "52:54:00:10:00:01" in out
    for verb in ("manage", "provide"):
        assert run("node", verb, "cli-0", "--wait", "60")[0] == 0
    code, out, _ = run("node", "deploy", "cli-0", "--instance-info",
                       "image_source=http://img/x.raw", "--wait")
    assert code == 0 and "is active" in out
    shown = as_json(run, "node", "show", "cli-0")
    assert shown["instance_info"] == {"image_source": "http://img/x.raw"}
    assert run("node", "power", "cli-0", "off")[0] == 0
    listed = as_json(run, "node", "list")
    assert [n["provision_state"] for n in listed if n["name"] == "cli-0"] == ["active"]
    code, out, _ = run("node", "list", "--long")
    assert code == 0 and "| driver" in out and "cli-0" in out
    assert run("node", "undeploy", "cli-0", "--wait")[0] == 0
    ports = as_json(run, "port", "list", "--node", "cli-0")
    assert [p["address"] for p in ports] == ["52:54:00:10:00:01"]
    assert run("port", "delete", ports[0]["uuid"])[0] == 0
    assert run("node", "delete", "cli-0")[0] == 0


def test_errors_are_clear(run, capsys):
    code, _, err = run("node", "show", "does-not-exist")
    assert code == 1 and "could not be found" in err
    code, _, err = run("node", "create", "--driver", "fake-hardware", "--driver-info", "oops")
    assert code == 1 and "KEY=VALUE" in err
    code = cli.main(["--url", "http://127.0.0.1:9", "node", "list"])
    assert code == 1 and "Cannot reach" in capsys.readouterr().err


def test_enroll_is_idempotent_and_dry_run_writes_nothing(run, tmp_path):
    yaml_file = tmp_path / "nodes.yaml"
    yaml_file.write_text("nodes:\n" + "".join(
        f"  - name: e{i}\n    driver: fake-hardware\n    ports:\n"
        f"      - address: 52:54:00:20:00:0{i}\n" for i in range(3)))
    dry = as_json(run, "node", "enroll", str(yaml_file), "--dry-run")
    assert [r["status"] for r in dry] == ["would create"] * 3
    assert not [n for n in as_json(run, "node", "list") if n["name"].startswith("e")]
    first = as_json(run, "node", "enroll", str(yaml_file))
    assert [r["status"] for r in first] == ["created"] * 3
    again = as_json(run, "node", "enroll", str(yaml_file))
    assert [r["status"] for r in again] == ["exists"] * 3
    assert [r["uuid"] for r in again] == [r["uuid"] for r in first]
    ports = as_json(run, "port", "list", "--node", "e1")
    assert [p["address"] for p in ports] == ["52:54:00:20:00:01"]


def test_enroll_reports_bad_rows_and_keeps_good_ones(run, tmp_path):
    csv_file = tmp_path / "nodes.csv"
    csv_file.write_text("name,driver,bmc_address,bmc_username,bmc_password,macs\n"
                        "c0,fake-hardware,10.0.0.1,admin,pw,52:54:00:30:00:01\n"
                        "c1,fake-hardware,10.0.0.2,admin,pw,zz:zz\n"
                        "c2,fake-hardware,10.0.0.3,admin,pw,52:54:00:30:00:01\n"
                        "c3,no-such-driver,10.0.0.4,admin,pw,52:54:00:30:00:04\n")
    code, out, _ = run("node", "enroll", str(csv_file), "--format", "json")
    results = {r["name"]: r for r in json.loads(out)}
    assert code == 1
    assert results["c0"]["status"] == "created"
    assert results["c1"]["status"] == "error" and "MAC" in results["c1"]["message"]
    assert results["c2"]["status"] == "error"
    assert "also listed at line 2" in results["c2"]["message"]
    assert results["c3"]["status"] == "error" and "no-such-driver" in results["c3"]["message"]
    names = {n["name"] for n in as_json(run, "node", "list")}
    assert "c0" in names and not names & {"c1", "c2", "c3"}
    taken = tmp_path / "taken.csv"
    taken.write_text("name,driver,macs\nc4,fake-hardware,52:54:00:30:00:01\n")
    code, out, _ = run("node", "enroll", str(taken), "--format", "json")
    assert code == 1 and "other node" in json.loads(out)[0]["message"]
    shown = as_json(run, "node", "show", "c0")
    assert shown["driver_info"] == {"ipmi_address": "10.0.0.1", "ipmi_username": "admin",
                                    "ipmi_password": "******"}


def test_help_names_the_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for word in ("serve", "node", "port", "demo", "METALCAST_URL"):
        assert word in out
