"""Headless Debian Chromium for browser tests; the tests are skipped (with the reason) when it is missing.

Install it with ``apt-get install -y chromium chromium-driver``. Set ``BROWSER_SCREENSHOT_DIR`` to
keep screenshots of the pages the tests visit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def _chromium(javascript: bool = True, extra_flags: tuple[str, ...] = ()) -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}); apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
        *extra_flags,
    ):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to read CSP violations from the console
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[object]:
    yield from _chromium(javascript=True)


@pytest.fixture
def camera_browser() -> Iterator[object]:
    """Chromium with a fake camera (a generated test pattern) that needs no permission prompt."""
    yield from _chromium(
        javascript=True, extra_flags=("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    )


@pytest.fixture
def browser_without_js() -> Iterator[object]:
    yield from _chromium(javascript=False)


@pytest.fixture
def screenshot(browser) -> object:
    """screenshot(name): save the current page to $BROWSER_SCREENSHOT_DIR/<name>.png when that is set."""
    directory = os.environ.get("BROWSER_SCREENSHOT_DIR")

    def take(name: str) -> None:
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(Path(directory) / f"{name}.png"))

    return take


def admin_login(browser, base_url: str, username: str, password: str, seconds: float = 15) -> None:
    """Sign in through the admin's login form and wait for the signed-in header.

    The login page has the admin's ``#site-name`` header too, so waiting for it can return before
    the form's POST has answered; ``#user-tools`` is only drawn for a signed-in staff user.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(base_url + "/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, seconds, poll_frequency=0.1).until(EC.presence_of_element_located((By.ID, "user-tools")))


def console_errors(browser) -> list[str]:
    """Console errors since the last call (CSP violations, failed loads, script errors)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def run_task(job_id: str, attempts: int = 20) -> None:
    """Run the real classify task for ``job_id`` here, as a worker would, retrying it as the worker
    does (autoretry on transient database errors). Written when SQLite's test database was in memory
    with a shared cache, where a write that met a reader of the table failed at once with "database
    table is locked" (about one run in six of a test whose page watches its jobs). The test database
    is now a file with a busy timeout (webapp/settings/test.py); the retry stays as the worker's own."""
    from celery.exceptions import Retry

    from worker.tasks import classify

    for attempt in range(attempts):
        try:
            classify.apply(args=[job_id])
            return
        except Retry:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)


@pytest.fixture
def queue(monkeypatch) -> list[str]:
    """Job ids that would have gone to the broker, in order (the tests run them with the real task)."""
    from classifier import services

    sent: list[str] = []

    def record(classification_id) -> bool:
        sent.append(str(classification_id))
        return True

    monkeypatch.setattr(services, "enqueue_classification", record)
    return sent
