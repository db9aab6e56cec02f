"""A real browser against the live server: sign up, upload, watch the result page fill in by itself.

The queue is the one thing the test controls: `enqueue_classification` records the job id instead
of sending it to a broker, so the page can be seen in each state. The job then runs through the
real Celery task and the real TorchScript bundle (``tiny_bundle``), in this process, while the
page polls the JSON API.
"""

from __future__ import annotations

import re

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from classifier import services
from classifier.models import Classification
from tests.browser.conftest import console_errors, run_task
from tests.conftest import CIFAR10_CLASSES, make_image_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

PASSWORD = "correct-horse-battery-staple-42"
UUID_PATH = re.compile(r"/classifications/([0-9a-f-]{36})/$")


@pytest.fixture
def queue(monkeypatch) -> list[str]:
    """Job ids that would have gone to the broker, in order."""
    sent: list[str] = []

    def record(classification_id) -> bool:
        sent.append(str(classification_id))
        return True

    monkeypatch.setattr(services, "enqueue_classification", record)
    return sent


def wait(browser, seconds: float = 10) -> WebDriverWait:
    return WebDriverWait(browser, seconds, poll_frequency=0.1)


def images_loaded(browser, selector: str) -> int:
    """How many images matching `selector` have loaded with real pixels (images stream from owner-checked views)."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".filter(function (img) { return img.complete && img.naturalWidth > 0; }).length",
        selector,
    )


def user_with_password(username: str):
    """A user who can sign in through the form with PASSWORD."""
    from tests.classifier.factories import UserFactory

    user = UserFactory(username=username)
    user.set_password(PASSWORD)
    user.save()
    return user


def log_in(browser, live_server, username: str) -> None:
    """Sign in through the login form; it lands on the upload page."""
    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait(browser).until(EC.url_to_be(live_server.url + "/upload/"))


def sign_up(browser, live_server, username: str) -> None:
    browser.get(live_server.url + "/accounts/signup/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password1").send_keys(PASSWORD)
    browser.find_element(By.ID, "id_password2").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait(browser).until(EC.url_to_be(live_server.url + "/upload/"))


def test_sign_up_upload_and_watch_the_result_arrive(
    browser, live_server, tiny_bundle, media_root, queue, tmp_path, screenshot
):
    sign_up(browser, live_server, "dana")
    screenshot("upload")

    picture = tmp_path / "ship.png"
    picture.write_bytes(make_image_bytes("png", size=(64, 48), color=(20, 60, 160)))
    browser.find_element(By.ID, "id_images").send_keys(str(picture))
    assert "ship.png" in browser.find_element(By.ID, "file-list").text  # upload.js lists the chosen file
    browser.find_element(By.CSS_SELECTOR, ".upload-form button[type=submit]").click()
    # upload.js sends the file to the API and gives it a card; its link opens the result page.
    wait(browser).until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#file-list a.file-link"))).click()

    wait(browser).until(EC.url_matches(UUID_PATH.pattern))
    [job_id] = queue
    assert UUID_PATH.search(browser.current_url).group(1) == job_id
    assert browser.find_element(By.ID, "status").text == "Queued"
    assert browser.find_elements(By.CSS_SELECTOR, "#predictions progress") == []
    wait(browser).until(lambda b: images_loaded(b, ".result-image img") == 1)
    # A marker that a reload would wipe: the page must update in place.
    browser.execute_script("window.__noReload = true;")
    screenshot("result-queued")

    services.classification_start(classification_id=job_id)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "status"), "Running"))
    assert "Classifying" in browser.find_element(By.ID, "pending").text
    run_task(job_id)  # the real task and model, as a worker would run it
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "status"), "Done"))

    bars = browser.find_elements(By.CSS_SELECTOR, "#predictions progress")
    assert len(bars) == 5
    values = [float(bar.get_attribute("value")) for bar in bars]
    assert values == sorted(values, reverse=True)
    assert 0 < sum(values) <= 1.0001
    labels = [el.text for el in browser.find_elements(By.CSS_SELECTOR, "#predictions .prediction-label")]
    assert set(labels) <= set(CIFAR10_CLASSES) and len(set(labels)) == 5
    job = Classification.objects.get(pk=job_id)
    assert labels[0] == job.top_label
    assert job.heatmaps_requested and job.explanation.heatmaps_status == "ready"  # the form asks for the maps
    assert browser.find_element(By.ID, "model-version").text == job.model_version == "tiny-test-0"
    assert browser.find_element(By.ID, "run-time").text.endswith(" s")
    assert not browser.find_element(By.ID, "pending").is_displayed()
    assert browser.execute_script("return window.__noReload === true")
    assert console_errors(browser) == []  # no CSP violation, no failed request, no script error
    screenshot("result-done")


def test_upload_several_then_delete_one_from_history(
    browser, live_server, tiny_bundle, media_root, queue, tmp_path, screenshot
):
    sign_up(browser, live_server, "erin")
    paths = []
    for i, color in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        path = tmp_path / f"pic{i}.jpg"
        path.write_bytes(make_image_bytes("jpg", size=(50, 40), color=color))
        paths.append(str(path))
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    browser.find_element(By.ID, "id_images").send_keys("\n".join([*paths, str(bad)]))
    browser.find_element(By.CSS_SELECTOR, ".upload-form button[type=submit]").click()

    # One card per file: three accepted by the API, the fake PNG refused next to its own name.
    wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#file-list a.file-link")) == 3)
    bad_card = wait(browser).until(
        lambda b: next((c for c in b.find_elements(By.CSS_SELECTOR, ".file-card-error") if c.text), None)
    )
    assert "notes.png" in bad_card.text and "The file is not an image" in bad_card.text
    # The one console error so far is the API's 400 for that file (Chrome logs every 4xx).
    assert all("/api/v1/classifications/" in e and "400" in e for e in console_errors(browser))
    assert len(queue) == 3
    browser.get(live_server.url + "/classifications/")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.history tbody tr")
    assert len(rows) == 3
    wait(browser).until(lambda b: images_loaded(b, "img.thumb") == 3)
    screenshot("history")

    # The delete button asks first; dismissing keeps the row, accepting deletes it.
    rows[0].find_element(By.CSS_SELECTOR, "button.button-danger").click()
    wait(browser).until(EC.alert_is_present()).dismiss()
    assert Classification.objects.count() == 3
    browser.find_elements(By.CSS_SELECTOR, "table.history tbody tr")[0].find_element(
        By.CSS_SELECTOR, "button.button-danger"
    ).click()
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "table.history tbody tr")) == 2)
    assert Classification.objects.count() == 2

    # The remaining rows fill in by themselves when their jobs finish.
    for job_id in queue:
        run_task(job_id)
    wait(browser).until(
        lambda b: [el.text for el in b.find_elements(By.CSS_SELECTOR, "[data-field=status]")] == ["Done", "Done"]
    )
    confidences = [el.text for el in browser.find_elements(By.CSS_SELECTOR, "[data-field=confidence]")]
    assert all(re.fullmatch(r"\d+\.\d%", text) for text in confidences)
    assert console_errors(browser) == []
    screenshot("history-done")


def test_result_page_reloads_itself_without_javascript(
    browser_without_js, live_server, tiny_bundle, media_root, queue, tmp_path
):
    browser = browser_without_js
    sign_up(browser, live_server, "fern")
    picture = tmp_path / "frog.png"
    picture.write_bytes(make_image_bytes("png", size=(32, 32), color=(30, 160, 40)))
    browser.find_element(By.ID, "id_images").send_keys(str(picture))
    browser.find_element(By.CSS_SELECTOR, ".upload-form button[type=submit]").click()
    wait(browser).until(EC.url_matches(UUID_PATH.pattern))
    assert browser.find_element(By.ID, "status").text == "Queued"
    assert browser.find_elements(By.CSS_SELECTOR, "#predictions progress") == []
    run_task(queue[0])
    # The <noscript> meta refresh (3 s) brings the finished page; the server renders the bars.
    wait(browser, 15).until(EC.text_to_be_present_in_element((By.ID, "status"), "Done"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#predictions progress")) == 5


def test_heatmaps_are_drawn_in_place_when_they_follow_the_answer(browser, live_server, tiny_bundle, media_root):
    """The answer is on the page first; the Grad-CAM maps, computed after it, are pushed and drawn
    without a reload (live.js keeps following a done job while its maps are pending)."""
    from django.utils import timezone

    from classifier.explanations import heatmaps
    from classifier.models import Explanation
    from tests.classifier.factories import ClassificationFactory

    user = user_with_password("erin")
    job = ClassificationFactory(owner=user, heatmaps_requested=False)
    services.classification_process(classification_id=job.id)  # answered; maps not asked for
    Explanation.objects.filter(classification=job).update(
        heatmaps_status=Explanation.HeatmapsStatus.PENDING, heatmaps_requested_at=timezone.now()
    )  # as right after the answer of a job that asked for maps

    log_in(browser, live_server, "erin")
    browser.get(live_server.url + f"/classifications/{job.id}/")
    assert "Drawing the heatmaps" in browser.find_element(By.ID, "heatmaps-pending").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#predictions progress")) == 5  # the answer is there
    wait(browser).until(lambda b: b.execute_script("return document.documentElement.getAttribute('data-live')"))
    browser.execute_script("window.__noReload = true;")

    heatmaps.heatmaps_process(classification_id=job.id)  # what the worker's explain step does, then pushes
    wait(browser).until(EC.presence_of_element_located((By.ID, "cam-overlay")))
    wait(browser).until(lambda b: images_loaded(b, "#cam-overlay") == 1)
    assert browser.find_elements(By.ID, "heatmaps-pending") == []
    assert browser.find_element(By.ID, "explanation").get_attribute("data-heatmaps") == "ready"
    assert browser.find_element(By.ID, "agreement").text  # the rest of the explanation is redrawn too
    assert browser.execute_script("return window.__noReload === true")
    assert console_errors(browser) == []


def test_a_not_sure_answer_arriving_live_links_to_the_model_page(
    browser, live_server, tiny_bundle, media_root, settings, tmp_path
):
    """The "Not sure" notice, drawn when the answer arrives on an open result page, links to the
    model card's "When not to trust it" (a bundle whose threshold makes every answer "not sure"); the
    answer set arrives with it and links to the card's "Answer sets" (a threshold that takes every class)."""
    import json
    import shutil

    from tests.classifier.factories import ClassificationFactory

    bundle = tmp_path / "unsure"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["uncertain"] = {"threshold": 1.01}  # no answer is that sure
    manifest["prediction_set"] = {"threshold": 0.0, "coverage": 0.95}  # every class in every set
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    settings.MODEL_BUNDLE = str(bundle)
    user = user_with_password("frank")
    job = ClassificationFactory(owner=user)  # queued

    log_in(browser, live_server, "frank")
    browser.get(live_server.url + f"/classifications/{job.id}/")
    wait(browser).until(lambda b: b.execute_script("return document.documentElement.getAttribute('data-live')"))
    assert browser.find_elements(By.ID, "uncertain-notice") == []

    services.classification_process(classification_id=job.id)
    notice = wait(browser).until(EC.presence_of_element_located((By.ID, "uncertain-notice")))
    link = notice.find_element(By.TAG_NAME, "a")
    assert link.get_attribute("href") == live_server.url + "/model/#trust-heading"
    answer_set = browser.find_element(By.ID, "answer-set")
    assert answer_set.text.startswith("Answer set: 10 classes. At 95% coverage it could be “")
    assert answer_set.find_element(By.TAG_NAME, "a").get_attribute("href") == live_server.url + "/model/#sets-heading"
    browser.refresh()  # the page as the server renders it says the same
    assert browser.find_element(By.ID, "answer-set").text == answer_set_text(job)
    assert console_errors(browser) == []


def answer_set_text(job) -> str:
    from classifier.explanations.selectors import prediction_set_summary

    job.refresh_from_db()
    e = job.explanation
    return f"Answer set: 10 classes. {prediction_set_summary(e.prediction_set, e.prediction_set_coverage)['text']} What this means."
