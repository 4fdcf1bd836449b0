"""Headless Chromium driven by selenium for the console's browser tests: Debian's
``chromium`` and ``chromium-driver`` (a missing one fails the test, never skips it),
basic credentials sent on every request the page makes (CDP extra headers: page
loads, fetch() and EventSource alike), screenshots saved as test artifacts."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.functional.tools import require

LAPTOP = (1366, 900)
PHONE = (390, 844)
WAIT = 60  # seconds; generous for a loaded 2-core machine, never a timing assertion


def start_chromium(size: tuple[int, int] = LAPTOP) -> webdriver.Chrome:
    """A headless Chromium (no sandbox: the tests run as root in a container)."""
    options = webdriver.ChromeOptions()
    options.binary_location = require("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(arg)
    # The driver is Debian's: selenium must not look one up on the network.
    return webdriver.Chrome(service=Service(require("chromedriver")), options=options)


def send_credentials(driver: webdriver.Chrome, user: str, password: str) -> None:
    """Log in with basic auth: every request of every page carries the credentials."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {token}"}})


def wait_for(driver: webdriver.Chrome, condition, what: str, timeout: float = WAIT):
    """``condition(driver)`` true within ``timeout``; else fail with the page's alerts
    and state (what a person would have seen)."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        seen = [e.text for e in driver.find_elements(
            By.CSS_SELECTOR, "[role=alert], #provision-state, #last-error, #live-status")]
        pytest.fail(f"waiting for {what} at {driver.current_url}: the page shows {seen}")


def text_of(driver: webdriver.Chrome, element_id: str, attempts: int = 5) -> str:
    """The text of the element with ``element_id``. A live page re-renders parts of
    itself (server-sent events): an element found just before such a re-render is
    stale when read, so it is looked up again, as a person would read it again."""
    for _ in range(attempts - 1):
        try:
            return driver.find_element(By.ID, element_id).text
        except StaleElementReferenceException:
            continue
    return driver.find_element(By.ID, element_id).text


def artifacts_dir(fallback: Path) -> Path:
    """$METALCAST_ARTIFACTS/console-screenshots, else ``fallback`` (pytest's tmp)."""
    root = os.environ.get("METALCAST_ARTIFACTS")
    folder = Path(root) / "console-screenshots" if root else fallback
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver: webdriver.Chrome, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"console screenshot: {path}")
    return path
