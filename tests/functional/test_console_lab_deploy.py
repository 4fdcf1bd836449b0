"""Deploy a virtual-lab machine from the console's node page, in a real browser.

Issue 18, item 3: headless Chromium (selenium, Debian's ``chromium`` and
``chromium-driver``) against a real ``metalcast serve`` with http_basic
authentication and its TFTP/HTTP boot servers, and a virtual lab with ONE machine:
an IPMI BMC driven by the conductor's real ``ipmi`` driver, firmware that PXE-boots
through metalcast's boot servers and runs the real ``metalcast-agent`` on the
machine's disk file. The machine is enrolled (ipmi/ipxe/direct) and made
``available`` (manage, provide: cleaning by the agent) through the REST API; then,
in the browser, the operator opens the node page, clicks Deploy and watches the
provision state change to ``active`` with no reload (every text the state element
showed is recorded by a MutationObserver in the page). The end-to-end proof is the
machine's own status file: it booted the deployed OS from its disk.

Screenshots: $METALCAST_ARTIFACTS/console-screenshots or the pytest tmp dir.
"""
from __future__ import annotations

import os
import uuid

import bcrypt
import pytest
import requests
from selenium.webdriver.common.by import By

from cli.client import Client
from tests.functional.browser import (
    artifacts_dir,
    screenshot,
    send_credentials,
    start_chromium,
    text_of,
    wait_for,
)
from tests.functional.helpers import mac
from tests.functional.test_virtlab_machine import require_image_tools
from tests.functional.tools import require_all
from tests.waiting import wait_until
from virtlab import images
from virtlab.demo import lab as demo_lab
from virtlab.lab import start_lab, stop_lab

IMAGE_MIB, DISK_MIB = 24, 32        # the smallest lab image (ESP + root) and a disk for it
VERSION = "18.3"                     # the deployed OS's VERSION_ID, read back from the disk
WAIT = 180                           # generous for a loaded 2-core host; not a timing check

#: Records every text the provision-state and current-step elements show (in
#: window.__seen[id]), and sets a flag that a reload would lose.
WATCH_STATES = """
window.__not_reloaded = true;
window.__seen = {};
["provision-state", "current-step"].forEach(function (id) {
  var el = document.getElementById(id), seen = window.__seen[id] = [el.textContent.trim()];
  new MutationObserver(function () {
    var text = el.textContent.trim();
    if (text !== seen[seen.length - 1]) { seen.push(text); }
  }).observe(el, {childList: true, characterData: true, subtree: true});
});
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    """``metalcast serve`` (http_basic) with boot servers and the lab's v18.3 image."""
    require_all(("chromium", "chromedriver", "ipmitool"))
    require_image_tools()
    data_dir = tmp_path_factory.mktemp("console-lab")
    user, password = "operator", f"pw-{uuid.uuid4().hex[:12]}"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (data_dir / "htpasswd").write_text(f"{user}:{hashed}\n")
    running = demo_lab.start_appliance(data_dir, {
        "api": {"auth_strategy": "http_basic", "htpasswd_file": data_dir / "htpasswd"},
        "conductor": {"deploy_callback_timeout": 60}})
    running.auth = (user, password)
    image = images.build_image(running.httpboot / "lab-os.img", VERSION, IMAGE_MIB)
    running.image = demo_lab.image_fields(f"{running.http}/lab-os.img",
                                          demo_lab.sha256_of(image))
    yield running
    running.stop()
    assert not _alive(running.pid)


@pytest.fixture(scope="module")
def lab(appliance, tmp_path_factory):
    folder = tmp_path_factory.mktemp("console-lab-machines")
    machine = {"name": "m0", "mac": mac(), "disk": str(folder / "m0.img"),
               "disk_size_mib": DISK_MIB}
    running = start_lab(demo_lab.lab_config(folder, appliance, [machine]),
                        folder / "lab.json")
    yield running
    stop_lab(running)
    assert running.process.poll() is not None
    if running.bmc_pid:                      # the lab stops its BMC process with itself
        wait_until(lambda: not _alive(running.bmc_pid), 30, 0.1, "the lab's BMCs to stop")


@pytest.fixture(scope="module")
def browser(appliance):
    driver = start_chromium()
    send_credentials(driver, *appliance.auth)
    yield driver
    driver.quit()


def _available_node(appliance, lab) -> str:
    """Enrol the lab machine through the REST API and clean it (by the agent)."""
    client = Client(appliance.url, *appliance.auth)
    info = lab.machines["m0"]
    node = demo_lab.enrol(client, f"lab-{os.urandom(3).hex()}", info["bmc_port"],
                          info["mac"], appliance.image)
    for target, state in (("manage", "manageable"), ("provide", "available")):
        client.set_provision_state(node, target)
        done = demo_lab.wait_all(client, [node], (state, "clean failed"), WAIT)[node]
        assert done["provision_state"] == state, done["last_error"]
    return node


def _requested_or_asked(driver) -> bool:
    """The node page after the action (done=deploy), or a confirmation page."""
    return bool(("done=deploy" in driver.current_url and driver.find_elements(By.ID, "ready"))
                or driver.find_elements(By.ID, "confirm-yes"))



def test_deploy_a_lab_machine_from_the_node_page(appliance, lab, browser, tmp_path_factory):
    shots = artifacts_dir(tmp_path_factory.mktemp("console-screenshots"))
    node = _available_node(appliance, lab)
    cleaned = lab.status("m0")
    assert cleaned["boots"] == 1 and cleaned["phase"] == "off", cleaned   # the cleaning boot
    page = f"{appliance.url}/ui/nodes/{node}"
    assert requests.get(page, timeout=30).status_code == 401           # log in first
    browser.get(page)
    wait_for(browser, lambda d: d.find_elements(By.ID, "ready"), "the node page")
    assert text_of(browser, "provision-state") == "available"
    assert appliance.auth[1] not in browser.page_source and "******" in browser.page_source
    screenshot(browser, shots, "lab-node-available")

    browser.find_element(By.ID, "action-deploy").click()
    wait_for(browser, _requested_or_asked, "the deploy to be requested")
    if browser.find_elements(By.ID, "confirm-yes"):                    # if the console asks
        browser.find_element(By.ID, "confirm-yes").click()
        wait_for(browser, _requested_or_asked, "the confirmed deploy to be requested")
    assert "done=deploy" in browser.current_url, browser.current_url
    browser.execute_script(WATCH_STATES)
    wait_for(browser, lambda d: text_of(d, "provision-state") in ("active", "deploy failed"),
             "the deploy to end", timeout=WAIT)
    seen = browser.execute_script("return window.__seen;")
    states, steps = seen["provision-state"], seen["current-step"]
    print(f"the node page showed: {' -> '.join(states)}; steps: {' -> '.join(steps)}")
    assert text_of(browser, "provision-state") == "active", text_of(browser, "last-error")
    assert browser.execute_script("return window.__not_reloaded === true;")
    assert states[0] in ("deploying", "wait call-back") and states[-1] == "active", states
    assert "wait call-back" in states, states            # the ramdisk's call-back, live
    # The current step while deploying (events coalesce: which steps show may vary).
    assert any(step.startswith("deploy.") for step in steps) and steps[-1] == "none", steps
    wait_for(browser, lambda d: "to active" in text_of(d, "live-region"),
             "the history to show the node's last change")
    screenshot(browser, shots, "lab-node-active")

    booted = lab.wait("m0", lambda s: s["phase"] == "booted-disk", "booted from disk", WAIT)
    assert (booted["booted_os"] or {}).get("version_id") == VERSION, booted
    assert booted["boots"] == 3, booted              # cleaning, deploy ramdisk, the disk
    deployed = Client(appliance.url, *appliance.auth).get_node(node)
    assert (deployed["provision_state"], deployed["power_state"]) == ("active", "power on")
