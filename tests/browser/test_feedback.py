"""A real browser: the result page offers the feedback box once its job is done (in place, while
the page polls), and the box records a correction."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from classifier import services
from classifier.evaluation.models import Feedback
from tests.browser.conftest import console_errors, run_task
from tests.browser.test_pages import UUID_PATH, sign_up, wait
from tests.conftest import make_image_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture
def queue(monkeypatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr(services, "enqueue_classification", lambda cid: sent.append(str(cid)) or True)
    return sent


def test_feedback_box_appears_when_done_and_records_a_correction(
    browser, live_server, tiny_bundle, media_root, queue, tmp_path, screenshot
):
    sign_up(browser, live_server, "fay")
    picture = tmp_path / "boat.png"
    picture.write_bytes(make_image_bytes("png", size=(64, 48), color=(20, 60, 160)))
    browser.find_element(By.ID, "id_images").send_keys(str(picture))
    browser.find_element(By.CSS_SELECTOR, ".upload-form button[type=submit]").click()
    # upload.js sends the file to the API and gives it a card; its link opens the result page.
    wait(browser).until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#file-list a.file-link"))).click()
    wait(browser).until(EC.url_matches(UUID_PATH.pattern))
    [job_id] = queue
    assert not browser.find_element(By.ID, "feedback").is_displayed()  # nothing to judge yet
    run_task(job_id)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "status"), "Done"))
    wait(browser).until(EC.visibility_of_element_located((By.ID, "feedback")))
    screenshot("result-feedback")

    top = browser.find_element(By.CSS_SELECTOR, "#predictions .prediction-label").text
    other = next(name for name in ("ship", "cat") if name != top)
    Select(browser.find_element(By.ID, "feedback-label")).select_by_value(other)
    browser.find_element(By.CSS_SELECTOR, "#feedback button[value=wrong]").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "feedback-current")))
    assert f"wrong, it is a {other}" in browser.find_element(By.ID, "feedback-current").text
    feedback = Feedback.objects.get()
    assert (str(feedback.classification_id), feedback.correct, feedback.label) == (job_id, False, other)
    assert console_errors(browser) == []
