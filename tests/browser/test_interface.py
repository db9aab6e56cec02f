"""The interface in headless Chromium: drop two files (a real DataTransfer drop event), paste one,
see previews, per-file progress (upload throttled through the DevTools protocol) and refusals
made in the browser, then result cards that fill in by themselves; history filtered by class,
bulk delete and the export button; the demo without an account; axe-core on every main page in
light and dark mode (0 serious or critical violations); screenshots of every main page at desktop
and phone widths under ``artifacts/screenshots/`` (or ``$BROWSER_SCREENSHOT_DIR``).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from classifier import services
from classifier.models import Classification
from classifier.reports.services import evaluation_report_import
from tests.browser.axe import serious_violations
from tests.browser.conftest import admin_login, console_errors, run_task
from tests.browser.test_pages import images_loaded, sign_up, wait
from tests.classifier.factories import PASSWORD, ClassificationFactory, UserFactory
from tests.conftest import CIFAR10_CLASSES, make_image_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("BROWSER_SCREENSHOT_DIR") or ROOT / "artifacts" / "screenshots")
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}

ADD_FILES_JS = """
var files = arguments[0].map(function (f) {
  var bin = atob(f.b64), bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new File([bytes], f.name, {type: f.type});
});
var dt = new DataTransfer();
files.forEach(function (f) { dt.items.add(f); });
return dt;
"""


def noise_png(side: int, seed: int = 0) -> bytes:
    """Random pixels: PNG cannot compress them, so the file is about 3 * side**2 bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def js_file(name: str, data: bytes, content_type: str) -> dict:
    return {"name": name, "b64": base64.b64encode(data).decode(), "type": content_type}


def drop(browser, files: list[dict]) -> bool:
    """Dispatch dragenter then drop on the drop zone; returns whether dragenter highlighted it."""
    return browser.execute_script(
        "var dt = (function () {" + ADD_FILES_JS + "}).apply(null, [arguments[0]]);"
        "var zone = document.getElementById('drop-zone');"
        "zone.dispatchEvent(new DragEvent('dragenter', {bubbles: true, cancelable: true, dataTransfer: dt}));"
        "var highlighted = zone.classList.contains('drag-over');"
        "zone.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: dt}));"
        "return highlighted && !zone.classList.contains('drag-over');",
        files,
    )


def paste(browser, files: list[dict]) -> None:
    browser.execute_script(
        "var dt = (function () {" + ADD_FILES_JS + "}).apply(null, [arguments[0]]);"
        "document.dispatchEvent(new ClipboardEvent('paste', {bubbles: true, cancelable: true, clipboardData: dt}));",
        files,
    )


def cards(browser) -> dict[str, object]:
    return {
        card.find_element(By.CSS_SELECTOR, ".filename").text: card
        for card in browser.find_elements(By.CSS_SELECTOR, "#file-list .file-card")
    }


def full_page_screenshot(browser, path: Path) -> None:
    """The whole page, not just the viewport (DevTools protocol), at the current window width."""
    metrics = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def check_page(browser, name: str) -> None:
    """axe-core in light and dark mode, then screenshots at desktop and phone widths."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
        )
        problems = serious_violations(browser)
        assert problems == [], f"{name} ({scheme}): {problems}"
        for size_name, (width, height) in SIZES.items():
            browser.set_window_size(width, height)
            full_page_screenshot(browser, SHOTS / f"{name}-{size_name}-{scheme}.png")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    browser.set_window_size(*SIZES["desktop"])


def test_drop_paste_previews_progress_and_result_cards(
    browser,
    live_server,
    tiny_bundle,
    media_root,
    queue,
    settings,
    tmp_path,
):
    import json
    import shutil

    settings.MAX_UPLOAD_BYTES = 400_000
    bundle = tmp_path / "with-sets"  # answer sets that hold every class: each card says "or ..."
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["prediction_set"] = {"threshold": 0.0, "coverage": 0.95}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    settings.MODEL_BUNDLE = str(bundle)
    browser.set_window_size(*SIZES["desktop"])
    sign_up(browser, live_server, "gwen")
    form = browser.find_element(By.ID, "upload-form")
    assert form.get_attribute("data-max-bytes") == "400000"
    check_page(browser, "upload-empty")
    browser.execute_script("window.__noReload = true;")

    # Two files dropped at once: a small JPEG and a 196 KB PNG (slow to upload below).
    slow = noise_png(256)
    assert 150_000 < len(slow) < 400_000
    highlighted = drop(
        browser,
        [
            js_file("red.jpg", make_image_bytes("jpg", size=(48, 40), color=(220, 20, 20)), "image/jpeg"),
            js_file("noise.png", slow, "image/png"),
        ],
    )
    assert highlighted, "the drop zone is highlighted while something is dragged over it"
    # One pasted from the clipboard (browsers name it image.png; the page renames it), and two the
    # browser itself refuses: over the size limit, and a type that is not an image.
    paste(browser, [js_file("image.png", make_image_bytes("png", size=(32, 32), color=(10, 200, 10)), "image/png")])
    huge = noise_png(400, seed=1)
    drop(browser, [js_file("huge.png", huge, "image/png"), js_file("notes.txt", b"hello", "text/plain")])
    wait(browser).until(lambda b: len(cards(b)) == 5)
    found = cards(browser)
    assert set(found) == {"red.jpg", "noise.png", "pasted-image-1.png", "huge.png", "notes.txt"}
    # Previews are drawn from the files (no network), sizes are shown.
    wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#file-list canvas.preview-canvas")) == 4)
    assert "KB" in found["noise.png"].find_element(By.CSS_SELECTOR, ".file-size").text
    # The browser's refusals use the server's messages and limits, next to the file.
    assert services.MSG_FILE_TOO_LARGE.format(size=f"{len(huge)} bytes", limit="400000 bytes") in found["huge.png"].text
    assert "not an image we can read" in found["notes.txt"].text
    assert "HEIC" in found["notes.txt"].text  # the accepted list is in the message
    check_page(browser, "upload-chosen")

    # Upload with the connection throttled to ~50 KB/s so progress can be seen moving.
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 50_000},
    )
    browser.find_element(By.ID, "upload-button").click()
    bar = found["noise.png"].find_element(By.CSS_SELECTOR, "progress.file-progress")
    wait(browser, 20).until(lambda b: 0 < float(bar.get_attribute("value")) < 100)
    browser.save_screenshot(str(SHOTS / "upload-progress-desktop-light.png"))
    wait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#file-list a.file-link")) == 3)
    browser.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )

    # Only the three good files reached the server; the refused ones were never sent.
    assert len(queue) == 3
    assert sorted(Classification.objects.values_list("original_filename", flat=True)) == [
        "noise.png",
        "pasted-image-1.png",
        "red.jpg",
    ]

    # The real task runs each job; every card turns Done with a CIFAR class, without a reload.
    for job_id in queue:
        run_task(job_id)
    wait(browser, 20).until(
        lambda b: sum(1 for c in cards(b).values() if c.get_attribute("data-status") == "done") == 3
    )
    for name in ("red.jpg", "noise.png", "pasted-image-1.png"):
        label = cards(browser)[name].find_element(By.CSS_SELECTOR, ".file-top-label").text
        job = Classification.objects.get(original_filename=name)
        assert label.lower() == job.top_label and label.lower() in CIFAR10_CLASSES
        others = cards(browser)[name].find_element(By.CSS_SELECTOR, ".file-set").text
        assert others == "or " + ", ".join(c for c in job.explanation.prediction_set if c != job.top_label)
    assert browser.execute_script("return window.__noReload === true")
    errors = [e for e in console_errors(browser) if "favicon" not in e]
    assert errors == [], errors
    check_page(browser, "upload-results")

    # The result page: larger image, keyboard shortcuts for history (h) and another upload (n).
    cards(browser)["red.jpg"].find_element(By.CSS_SELECTOR, "a.file-link").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "status"), "Done"))
    wait(browser).until(lambda b: images_loaded(b, ".result-image img") == 1)
    assert browser.find_element(By.CSS_SELECTOR, ".result-image img").size["width"] >= 300
    tz_text = browser.find_element(By.ID, "finished-at").text
    assert tz_text and tz_text != "—" and "T" not in tz_text.split()[0]  # formatted by the browser
    check_page(browser, "result")
    browser.find_element(By.TAG_NAME, "body").send_keys("h")
    wait(browser).until(EC.url_to_be(live_server.url + "/classifications/"))
    browser.back()
    wait(browser).until(EC.presence_of_element_located((By.ID, "result")))
    browser.find_element(By.TAG_NAME, "body").send_keys("n")
    wait(browser).until(EC.url_to_be(live_server.url + "/upload/"))


def test_a_file_the_browser_cannot_draw_says_so_and_the_server_gives_the_reason(
    browser, live_server, tiny_bundle, media_root, queue
):
    sign_up(browser, live_server, "hana")
    good = make_image_bytes("jpg", size=(48, 40), color=(20, 20, 220))
    drop(browser, [js_file("blue.jpg", good, "image/jpeg"), js_file("broken.jpg", good[:300], "image/jpeg")])
    wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#file-list canvas.preview-canvas")) == 1)
    wait(browser).until(
        lambda b: "no preview" in cards(b)["broken.jpg"].find_element(By.CSS_SELECTOR, ".file-state").text
    )
    assert cards(browser)["blue.jpg"].find_element(By.CSS_SELECTOR, ".file-state").text == "Ready"
    browser.find_element(By.ID, "upload-button").click()
    wait(browser, 20).until(lambda b: "truncated or corrupt" in cards(b)["broken.jpg"].text)
    assert len(queue) == 1  # only the good file became a job


def test_history_filter_by_class_bulk_delete_and_export(
    browser,
    live_server,
    tiny_bundle,
    media_root,
    queue,
):
    browser.set_window_size(*SIZES["desktop"])
    sign_up(browser, live_server, "hana")
    user = get_user_model().objects.get(username="hana")
    for i, label in enumerate(["cat", "dog", "cat", "ship"]):
        ClassificationFactory(owner=user, done=True, top_label=label, original_filename=f"{label}-{i}.png")
    browser.get(live_server.url + "/classifications/")
    wait(browser).until(lambda b: images_loaded(b, "img.thumb") == 4)
    zone = browser.find_element(By.CSS_SELECTOR, "[data-time-zone]").text
    assert zone  # the browser's zone is named on the page
    assert browser.find_element(By.CSS_SELECTOR, "input[name=tz]").get_attribute("value") == zone
    check_page(browser, "history")

    options = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "id_label")).options]
    assert options == ["", *CIFAR10_CLASSES]
    Select(browser.find_element(By.ID, "id_label")).select_by_value("cat")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait(browser).until(EC.url_contains("label=cat"))
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "td[data-label=File] a")]
    assert sorted(names) == ["cat-0.png", "cat-2.png"]

    # Select all on the page, delete both (after the confirmation), the filter is kept.
    browser.find_element(By.ID, "select-all").click()
    assert browser.find_element(By.ID, "selected-count").text == "2 selected"
    browser.find_element(By.ID, "bulk-delete-button").click()
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".messages"), "Deleted 2 classifications."))
    assert "label=cat" in browser.current_url
    assert sorted(Classification.objects.values_list("top_label", flat=True)) == ["dog", "ship"]

    # The CSV export: one button, carrying the page's filters, and it downloads.
    buttons = browser.find_elements(By.ID, "export-csv")
    assert len(buttons) == 1 and "label=cat" in buttons[0].get_attribute("href")
    status = browser.execute_async_script(
        "var done = arguments[0]; fetch(document.getElementById('export-csv').href, {credentials: 'same-origin'})"
        ".then(function (r) { done([r.status, r.headers.get('content-type')]); });"
    )
    assert status[0] == 200 and "csv" in status[1]


def test_demo_without_an_account(browser, live_server, tiny_bundle, media_root, tmp_path):
    browser.set_window_size(*SIZES["desktop"])
    browser.get(live_server.url + "/")
    assert "discarded" in browser.find_element(By.ID, "demo-privacy").text
    check_page(browser, "home")
    picture = tmp_path / "plane.png"
    picture.write_bytes(make_image_bytes("png", size=(64, 64), color=(180, 200, 230)))
    browser.find_element(By.ID, "id_image").send_keys(str(picture))
    browser.find_element(By.CSS_SELECTOR, "#demo-form button[type=submit]").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "demo-result")))
    bars = browser.find_elements(By.CSS_SELECTOR, "#demo-result progress")
    assert len(bars) == 5
    assert "The image has been discarded." in browser.find_element(By.ID, "demo-result").text
    assert Classification.objects.count() == 0
    check_page(browser, "demo-result")
    for path in ("/accounts/signup/", "/accounts/login/"):
        browser.get(live_server.url + path)
        check_page(browser, path.strip("/").replace("/", "-"))


def test_staff_report_page(browser, live_server, media_root, reported_bundle):
    UserFactory(username="root", is_staff=True, is_superuser=True)
    report = evaluation_report_import(bundle_dir=reported_bundle)
    browser.set_window_size(*SIZES["desktop"])
    admin_login(browser, live_server.url, "root", PASSWORD)
    browser.get(f"{live_server.url}/admin/classifier/evaluationreport/{report.id}/change/")
    # The markdown is rendered: ablations.md's table is a real table in the page.
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".report-markdown table")))
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, ".report-markdown td")]
    assert "no augment" in cells
    assert console_errors(browser) == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size_name, (width, height) in SIZES.items():
        browser.set_window_size(width, height)
        full_page_screenshot(browser, SHOTS / f"admin-report-{size_name}.png")


def test_about_the_model_page(browser, live_server, settings, tmp_path):
    """The model card of the shipped bundle (its manifest and report, not its weights), reached from
    the visitors' home page: readable in both colour schemes and at phone width."""
    import json
    import shutil

    from classifier.model_card import FIGURES

    shipped = ROOT / "bundles" / "default"
    bundle = tmp_path / "bundle"
    (bundle / "report").mkdir(parents=True)
    shutil.copy(shipped / "manifest.json", bundle / "manifest.json")
    shutil.copy(shipped / "report" / "report.json", bundle / "report" / "report.json")
    for figure in FIGURES:
        shutil.copy(shipped / "report" / figure.file, bundle / "report" / figure.file)
    settings.MODEL_BUNDLE = str(bundle)
    browser.set_window_size(*SIZES["desktop"])
    browser.get(live_server.url + "/")
    browser.find_element(By.LINK_TEXT, "What it knows, and how often it is right").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "model-accuracy")))
    assert "airplane, automobile" in browser.find_element(By.ID, "model-classes").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#model-per-class tbody tr")
    per_class = json.loads((bundle / "report" / "report.json").read_text())["per_class"]
    weakest = min(per_class, key=lambda row: row["f1"])["class"]
    assert len(rows) == len(CIFAR10_CLASSES) and rows[0].text.startswith(weakest)  # weakest first
    assert "Not sure" in browser.find_element(By.ID, "model-uncertain").text
    pictures = browser.find_elements(By.CSS_SELECTOR, ".model-figure img")
    assert len(pictures) == len(FIGURES)
    for picture in pictures:  # each one loads (lazily: scrolled into view) and fits the card
        browser.execute_script("arguments[0].scrollIntoView()", picture)
        wait(browser).until(
            lambda b, p=picture: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", p)
        )
        assert picture.size["width"] <= browser.find_element(By.CSS_SELECTOR, ".model-page .card").size["width"]
    check_page(browser, "model")
