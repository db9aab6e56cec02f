"""Under the real Content-Security-Policy the pages, the admin and Swagger UI work in a browser and
the console shows no violation (a blocked script or style would show up there)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import console_errors
from tests.classifier.factories import PASSWORD, ClassificationFactory, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_no_csp_violations_on_pages_admin_and_api_docs(browser, live_server, media_root, screenshot):
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    job = ClassificationFactory(owner=staff, done=True)
    queued = ClassificationFactory(owner=staff)
    wait = WebDriverWait(browser, 15, poll_frequency=0.1)

    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.ID, "id_username").send_keys("root")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait.until(EC.url_to_be(live_server.url + "/upload/"))
    assert console_errors(browser) == []

    pages = {
        "/classifications/": "table.history",
        f"/classifications/{job.id}/": "#predictions progress",
        f"/classifications/{queued.id}/": "#status",
        "/admin/": "#content",
        "/admin/classifier/classification/": "#result_list",
        f"/admin/classifier/classification/{job.id}/change/": "#content-main",
        "/api/v1/docs/": ".swagger-ui .info .title",  # rendered by Swagger UI's scripts
    }
    for path, selector in pages.items():
        browser.get(live_server.url + path)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, selector)))
        errors = console_errors(browser)
        assert errors == [], (path, errors)
    screenshot("api-docs")
    # The queued page's script ran: live.js opened its event stream (a blocked script would not).
    browser.get(live_server.url + f"/classifications/{queued.id}/")
    wait.until(lambda b: b.execute_script("return document.documentElement.getAttribute('data-live')") == "stream")
    assert console_errors(browser) == []
