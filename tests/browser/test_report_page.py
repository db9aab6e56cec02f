"""The admin's evaluation-report page in a real browser: the heat map is styled by the static CSS,
every figure loads through the staff-only view, and the console shows no CSP violation."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from classifier.reports.services import evaluation_report_import
from tests.browser.conftest import admin_login, console_errors
from tests.classifier.factories import PASSWORD, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_report_page_renders_heatmap_and_figures(browser, live_server, media_root, reported_bundle, screenshot):
    UserFactory(username="root", is_staff=True, is_superuser=True)
    report = evaluation_report_import(bundle_dir=reported_bundle)
    wait = WebDriverWait(browser, 15, poll_frequency=0.1)
    browser.set_window_size(1400, 2000)
    admin_login(browser, live_server.url, "root", PASSWORD)

    browser.get(f"{live_server.url}/admin/classifier/evaluationreport/{report.id}/change/")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "table.cm td.cm-diag")))
    wait.until(lambda b: b.execute_script("return Array.from(document.images).every(i => i.complete)"))
    figures = browser.execute_script(
        "return Array.from(document.querySelectorAll('.report-figure img')).map(i => [i.alt, i.naturalWidth])"
    )
    assert len(figures) == 3 and all(alt and width > 100 for alt, width in figures), figures
    # the shade classes come from static/css/admin-reports.css: a shaded cell is not transparent
    colours = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.cm td.cm-diag:not(.cm-0)'))"
        ".map(td => getComputedStyle(td).backgroundColor)"
    )
    assert colours and all(c not in ("rgba(0, 0, 0, 0)", "transparent") for c in colours), colours
    assert console_errors(browser) == []
    screenshot("admin-evaluation-report")  # BROWSER_SCREENSHOT_DIR keeps it
