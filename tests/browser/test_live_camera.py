"""The live camera page in headless Chromium with a fake camera: frames are classified continuously
and not stored; "keep this frame" stores one; a pasted image is classified too.

Tasks run in-process (the test settings), so each frame goes through the real classify_frame task
and the real TorchScript bundle (``tiny_bundle``) inside the live server. The page's own frame
rate is printed (run with -s to see it); it is not asserted: timings belong in benchmarks.
"""

from __future__ import annotations

import base64

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from classifier.models import Classification
from tests.browser.conftest import console_errors
from tests.browser.test_pages import sign_up
from tests.conftest import CIFAR10_CLASSES, make_image_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def frames_classified(browser) -> int:
    return int(browser.find_element(By.ID, "live-frames").text or 0)


def top_labels(browser) -> list[str]:
    # read in one script: the list is redrawn with every frame (15/s), so element handles go stale
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#live-predictions .prediction-label'), e => e.textContent.trim());"
    )


def test_live_camera_classifies_frames_keeps_one_and_takes_a_paste(
    camera_browser, live_server, tiny_bundle, media_root, settings, screenshot, tmp_path
):
    import json
    import shutil

    settings.PUSH_REDIS_URL = ""  # the live server answers frames in-process
    bundle = tmp_path / "with-sets"  # answer sets that take every class above 0.1%
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["prediction_set"] = {"threshold": 0.001, "coverage": 0.95}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    settings.MODEL_BUNDLE = str(bundle)
    browser = camera_browser
    sign_up(browser, live_server, "camille")
    browser.get(live_server.url + "/live/")
    browser.find_element(By.ID, "live-start").click()

    WebDriverWait(browser, 150, poll_frequency=0.2).until(
        lambda b: frames_classified(b) >= 25
    )  # the last 10 give the rate
    labels = top_labels(browser)
    assert len(labels) == 5 and set(labels) <= set(CIFAR10_CLASSES)
    assert browser.find_element(By.ID, "live-set").text.startswith("At 95% coverage it could be “")
    print(f"\nlive camera in headless Chromium: {browser.find_element(By.ID, 'live-fps').text} frames/s, "
          f"last round trip {browser.find_element(By.ID, 'live-latency').text}")  # fmt: skip
    screenshot("live-camera")
    assert Classification.objects.count() == 0  # frames classified live are not stored

    browser.find_element(By.ID, "live-keep").click()
    link = WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.ID, "live-kept-link"))[0]
    [kept] = Classification.objects.all()
    assert link.get_attribute("href").endswith(f"/classifications/{kept.id}/")
    assert kept.original_filename == "camera-frame.jpg" and kept.image_format == "jpg"

    browser.find_element(By.ID, "live-stop").click()
    count = frames_classified(browser)
    png = base64.b64encode(make_image_bytes("png", size=(64, 48), color=(30, 90, 200))).decode()
    browser.execute_script(
        "var bytes = Uint8Array.from(atob(arguments[0]), function (c) { return c.charCodeAt(0); });"
        "var data = new DataTransfer(); data.items.add(new File([bytes], 'pasted.png', {type: 'image/png'}));"
        "document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true}));",
        png,
    )
    WebDriverWait(browser, 60).until(lambda b: "Pasted image classified" in b.find_element(By.ID, "live-status").text)
    assert frames_classified(browser) > count
    assert Classification.objects.count() == 1  # the paste was not stored either
    assert console_errors(browser) == []
