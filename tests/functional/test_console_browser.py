"""The operator console in a real browser: headless Chromium (selenium) against a
real ``metalcast serve`` with http_basic authentication.

* log in, filter the fleet from the keyboard, watch a row change live;
* deploy a machine from its node page and watch it reach ``active`` without a
  reload: deploy_interface ``direct`` with the real ``metalcast-agent`` writing the
  machine's disk file (fake power: the agent process is the "boot", as in
  test_agent_deploy.py; the QEMU lab would add minutes, not coverage of the console);
* a destructive action asks for confirmation first; a bad form input gets a clear
  message; a patch built with rpmbuild and sw-patch-build is uploaded and applied;
* CSRF replayed against the real server: a POST without the token, with another
  session's token or from another origin is refused;
* the updates page (images uploaded over the REST API, instances made by Omaha checks):
  the roll-out chart, a group paused after its confirmation, a new instance shown live;
  the conductors page.

Screenshots of every page are saved ($METALCAST_ARTIFACTS/console-screenshots or the
pytest tmp dir; the paths are printed).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import bcrypt
import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from conductor.updates.catalogue import METALCAST_APPID
from ramdisk_agent.wire import omaha
from tests.functional.browser import (
    PHONE,
    artifacts_dir,
    screenshot,
    send_credentials,
    start_chromium,
    text_of,
    wait_for,
)
from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import agent_sections, api_call, mac, provision, unique
from tests.functional.rpm_tools import build_rpm
from tests.functional.test_agent_deploy import AGENT, DISK_MIB, image  # noqa: F401 - fixture
from tests.functional.tools import require
from virtlab.process import start_ready, stop

BIN = Path(sys.executable).parent
TOKEN_RE = re.compile(r'name="csrf-token" content="([0-9a-f]*)"')


@pytest.fixture(scope="module")
def console_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("console")
    user, password = "operator", f"pw-{uuid.uuid4().hex[:12]}"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (data_dir / "htpasswd").write_text(f"{user}:{hashed}\n")
    sections = agent_sections(power_off_wait=1, callback_timeout=60)
    sections.update(api={"auth_strategy": "http_basic", "htpasswd_file": data_dir / "htpasswd"},
                    patching={"release": "1.0"})
    server = start_server(data_dir, sections)
    server.username, server.password = user, password
    subprocess.run([BIN / "metalcast", "patch", "keygen", "--data-dir", data_dir],
                   check=True, capture_output=True)
    yield server
    stop_server(server.process)


@pytest.fixture(scope="module")
def auth(console_server):
    return (console_server.username, console_server.password)


@pytest.fixture(scope="module")
def browser(console_server):
    driver = start_chromium()
    send_credentials(driver, console_server.username, console_server.password)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return artifacts_dir(tmp_path_factory.mktemp("console-screenshots"))


def _open(driver, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.find_elements(By.ID, "ready"), f"{url} to load")



def _mark_page(driver) -> None:
    """A flag that a reload would lose: it proves the page updated itself."""
    driver.execute_script("window.__not_reloaded = true;")


def _not_reloaded(driver) -> bool:
    return driver.execute_script("return window.__not_reloaded === true;")


def test_log_in_and_filter_the_fleet_live(console_server, auth, browser, shots):
    url = console_server.url
    refused = requests.get(f"{url}/ui/fleet", timeout=30)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic")   # the browser asks
    prefix = unique("rack")
    names = [f"{prefix}-a1", f"{prefix}-a2", f"{prefix}-b1"]
    for name in names:
        api_call(url, "POST", "/v1/nodes", {"name": name, "driver": "fake-hardware"},
                 ok=(201,), auth=auth)
    _open(browser, f"{url}/ui/fleet")
    screenshot(browser, shots, "fleet")
    search = browser.find_element(By.NAME, "q")
    search.send_keys(f"{prefix}-a", Keys.ENTER)            # the keyboard submits the filter
    wait_for(browser, lambda d: "q=" in d.current_url and d.find_elements(By.ID, "ready"),
             "the filtered page")
    shown = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#node-table tbody td a")]
    assert shown == names[:2]
    _mark_page(browser)
    api_call(url, "PATCH", f"/v1/nodes/{names[0]}",
             [{"op": "replace", "path": "/maintenance", "value": True}], auth=auth)
    cell = 'tr[data-node] td[data-field="maintenance"]'
    wait_for(browser, lambda d: "maintenance" in d.find_elements(By.CSS_SELECTOR, cell)[0].text,
             "the row to show maintenance without a reload")
    assert _not_reloaded(browser)
    screenshot(browser, shots, "fleet-filtered-live")
    browser.set_window_size(*PHONE)
    try:
        screenshot(browser, shots, "fleet-phone")
    finally:
        browser.set_window_size(1366, 900)


@pytest.fixture(scope="module")
def machine(console_server, auth, image, tmp_path_factory):  # noqa: F811 - the fixture
    """An available node (direct deploy) with a NIC and a disk file; its agent process
    is started when the node waits for its ramdisk, and stopped by PID."""
    image_url, _slow, digest, _data = image
    folder = tmp_path_factory.mktemp("console-machine")
    address = mac()
    disk = folder / "disk.img"
    disk.write_bytes(b"\xee" * (DISK_MIB << 20))
    node = api_call(console_server.url, "POST", "/v1/nodes", {
        "name": unique("web"), "driver": "fake-hardware", "deploy_interface": "direct",
        "driver_info": {"ipmi_password": "never-shown-7"},
        "instance_info": {"image_source": image_url, "image_os_hash_algo": "sha256",
                          "image_os_hash_value": digest}}, ok=(201,), auth=auth)
    api_call(console_server.url, "POST", "/v1/ports",
             {"node_uuid": node["uuid"], "address": address}, ok=(201,), auth=auth)
    provision(console_server.url, node["uuid"], "manage", "manageable", auth=auth)
    api_call(console_server.url, "PATCH", f"/v1/nodes/{node['uuid']}",
             [{"op": "replace", "path": "/automated_clean", "value": False}], auth=auth)
    provision(console_server.url, node["uuid"], "provide", "available", auth=auth)
    agents = []

    def boot():
        cmd = [AGENT, "--api-url", console_server.url, "--mac", address, "--disk", str(disk),
               "--listen", "127.0.0.1:0", "--advertise-host", "127.0.0.1",
               "--power-action", "exit", "--state-file", str(folder / "agent.state"),
               "--cmdline-file", "", "--lookup-timeout", "30"]
        process, _ready, _log = start_ready(cmd, "METALCAST-AGENT ", 60, "metalcast-agent")
        agents.append(process)

    node["boot"] = boot
    yield node
    for process in agents:
        stop(process.pid, process)


def test_deploy_from_the_node_page_reaches_active_without_reload(console_server, machine,
                                                                 browser, shots):
    page = f"{console_server.url}/ui/nodes/{machine['uuid']}"
    _open(browser, page)
    assert "never-shown-7" not in browser.page_source and "******" in browser.page_source
    browser.find_element(By.ID, "action-deploy").click()
    wait_for(browser, lambda d: "done=deploy" in d.current_url
             and d.find_elements(By.ID, "ready"), "the deploy to be requested")
    _mark_page(browser)
    wait_for(browser, lambda d: text_of(d, "provision-state") == "wait call-back",
             "the node to wait for its ramdisk")
    screenshot(browser, shots, "node-deploying")
    machine["boot"]()   # the ramdisk boots: the real agent writes the image
    wait_for(browser, lambda d: text_of(d, "provision-state") in ("active", "deploy failed"),
             "the deploy to end", timeout=180)
    assert text_of(browser, "provision-state") == "active", text_of(browser, "last-error")
    wait_for(browser, lambda d: "to active" in text_of(d, "live-region"),
             "the history to show the node's last change")
    assert _not_reloaded(browser)              # every state arrived over the event stream
    screenshot(browser, shots, "node-active")


def test_a_destructive_action_asks_first(console_server, auth, machine, browser, shots):
    page = f"{console_server.url}/ui/nodes/{machine['uuid']}"
    _open(browser, page)
    browser.find_element(By.ID, "action-undeploy").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "confirm-warning"), "the confirmation")
    assert "tears down" in text_of(browser, "confirm-warning")
    screenshot(browser, shots, "confirm-undeploy")
    browser.find_element(By.ID, "confirm-no").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "ready") and "/ui/nodes/" in d.current_url,
             "the node page again")
    node = api_call(console_server.url, "GET", f"/v1/nodes/{machine['uuid']}", auth=auth)
    assert node["provision_state"] == "active" and node["target_provision_state"] is None


def test_a_bad_form_input_gets_a_clear_message(console_server, auth, machine, browser, shots):
    _open(browser, f"{console_server.url}/ui/nodes/{machine['uuid']}")
    browser.find_element(By.ID, "maintenance-reason").send_keys("x" * 300)
    browser.find_element(By.ID, "action-maintenance").click()
    wait_for(browser, lambda d: "at most 255 characters" in d.page_source, "the message")
    screenshot(browser, shots, "bad-input")
    node = api_call(console_server.url, "GET", f"/v1/nodes/{machine['uuid']}", auth=auth)
    assert node["maintenance"] is False


def _install_release(data_dir: Path, rpms: Path) -> None:
    """Release 1.0's base feed (one package, as patch_lab.Walkthrough lays it out): a
    patch is accepted only for an installed release."""
    feed = data_dir / "httpboot" / "feed" / "rel-1.0"
    (feed / "Packages" / "noarch").mkdir(parents=True, exist_ok=True)
    shutil.copy(build_rpm(rpms, "tool", "1.0"), feed / "Packages" / "noarch")
    subprocess.run([require("createrepo_c"), "-q", str(feed)], check=True)


def test_upload_and_apply_a_patch(console_server, browser, shots, tmp_path):
    _install_release(console_server.data_dir, tmp_path / "rpms")
    rpm = build_rpm(tmp_path / "rpms", "tool", "1.1")
    pid = f"BX_{uuid.uuid4().hex[:6].upper()}"
    built = subprocess.run([BIN / "sw-patch-build", "--id", pid, "--release", "1.0",
                            "--data-dir", console_server.data_dir, "-o", tmp_path / "out",
                            rpm], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    _open(browser, f"{console_server.url}/ui/patches")
    browser.find_element(By.ID, "patch-file").send_keys(str(tmp_path / "out" / f"{pid}.patch"))
    browser.find_element(By.ID, "upload").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-patch="{pid}"]'),
             "the uploaded patch")
    state = f'tr[data-patch="{pid}"] .repostate'
    assert browser.find_element(By.CSS_SELECTOR, state).text == "Available"
    browser.find_element(By.ID, f"apply-{pid}").click()
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, state).text
             == "Applied", "the patch to be applied")
    assert not browser.find_elements(By.ID, "result-error")
    screenshot(browser, shots, "patches")
    _open(browser, f"{console_server.url}/ui/patches?show={pid}")
    assert pid in text_of(browser, "h-details")
    _open(browser, f"{console_server.url}/ui/orchestration")
    screenshot(browser, shots, "orchestration")


def test_csrf_replay_against_the_server_is_refused(console_server, auth, machine):
    url = console_server.url
    action = f"{url}/ui/nodes/{machine['uuid']}/actions/maintenance-on"
    session = requests.Session()
    session.auth = auth
    token = TOKEN_RE.search(session.get(f"{url}/ui/nodes/{machine['uuid']}",
                                        timeout=30).text).group(1)
    other = requests.Session()
    other.auth = auth
    other.get(f"{url}/ui/fleet", timeout=30)
    for client, data, headers in (
            (session, {"reason": "no token"}, {}),
            (session, {"csrf_token": token}, {"Origin": "http://attacker.example"}),
            (other, {"csrf_token": token}, {}),          # a token replayed in another session
            (requests.Session(), {"csrf_token": token}, {})):
        refused = client.post(action, data=data, headers=headers, timeout=30,
                              auth=auth, allow_redirects=False)
        assert refused.status_code == 403, (data, headers)
        assert "CSRF" in refused.text
    node = api_call(url, "GET", f"/v1/nodes/{machine['uuid']}", auth=auth)
    assert node["maintenance"] is False


def _omaha_check(url: str, machine: str, version: str, events=(), updatecheck=True) -> None:
    body = omaha.render_request(omaha.Request((omaha.AppRequest(
        METALCAST_APPID, version, "stable", machineid=machine, bootid="{b}",
        updatecheck=updatecheck, ping=True, events=tuple(events)),)))
    answered = requests.post(f"{url}/v1/update/", data=body, timeout=30,
                             headers={"Content-Type": "text/xml"})
    assert answered.status_code == 200, answered.text


def test_the_updates_and_conductors_pages(console_server, auth, browser, shots):
    url = console_server.url
    for version, seed in (("1.0.0", b"\x01"), ("2.0.0", b"\x02")):
        uploaded = requests.post(f"{url}/updates/v1/images?version={version}&channel=stable",
                                 data=seed * 65536, auth=auth, timeout=30)
        assert uploaded.status_code == 201, uploaded.text
        if version == "1.0.0":
            for machine in ("a" * 32, "b" * 32, "c" * 32):
                _omaha_check(url, machine, "1.0.0")
    _omaha_check(url, "a" * 32, "1.0.0")                      # granted 2.0.0
    _omaha_check(url, "a" * 32, "2.0.0", [omaha.Event(3, 2, previous_version="1.0.0")],
                 updatecheck=False)
    _open(browser, f"{url}/ui/updates")
    assert "2.0.0" in text_of(browser, "counts-version")
    assert browser.find_elements(By.CSS_SELECTOR, "#rollout-chart polygon")
    screenshot(browser, shots, "updates")
    browser.set_window_size(*PHONE)
    try:
        screenshot(browser, shots, "updates-phone")
    finally:
        browser.set_window_size(1366, 900)
    browser.find_element(By.ID, "pause-stable").click()        # asks first
    wait_for(browser, lambda d: d.find_elements(By.ID, "confirm-yes"), "the confirmation")
    browser.find_element(By.ID, "confirm-yes").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "resume-stable"), "the paused group")
    assert "paused" in browser.find_element(By.CSS_SELECTOR,
                                            'tr[data-group="stable"] .group-state').text
    _mark_page(browser)
    _omaha_check(url, "d" * 32, "1.0.0")                       # a new instance, live
    wait_for(browser, lambda d: 'data-instance="' + "d" * 32 + '"' in d.page_source,
             "the new instance without a reload")
    assert _not_reloaded(browser)
    _open(browser, f"{url}/ui/conductors")
    assert "alive" in browser.find_element(By.ID, "conductor-table").text
    screenshot(browser, shots, "conductors")
