"""The "About the model" page (classifier.model_card, classifier.views.model): every number comes
from the bundle the service runs, it follows a re-export, and it fails with a message."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from django.urls import reverse

from classifier.model_card import model_card

pytestmark = pytest.mark.django_db

SHIPPED = Path(__file__).resolve().parents[2] / "bundles" / "default"


@pytest.fixture
def bundle(tmp_path: Path, settings) -> Path:
    """The shipped bundle's manifest and report, without its weights (the page reads no model)."""
    out = tmp_path / "bundle"
    (out / "report").mkdir(parents=True)
    shutil.copy(SHIPPED / "manifest.json", out / "manifest.json")
    shutil.copy(SHIPPED / "report" / "report.json", out / "report" / "report.json")
    settings.MODEL_BUNDLE = str(out)
    return out


def test_the_card_holds_the_bundles_own_numbers(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / "report" / "report.json").read_text())
    card = model_card()
    assert card is not None
    assert card.version == manifest["version"] and card.classes == manifest["classes"]
    assert card.accuracy == manifest["metrics"]["accuracy"] and card.top5 == manifest["metrics"]["top5"]
    assert card.members == len(manifest["members"]) == 3
    assert card.parameters == sum(m["params"] for m in manifest["members"])
    assert card.uncertain["threshold"] == manifest["uncertain"]["threshold"]
    assert card.ood["generated_flagged"] == manifest["ood"]["generated_flagged"]
    assert card.prediction_set["thresholds"] == manifest["prediction_set"]["thresholds"]
    assert card.prediction_set["threshold_min"] == min(manifest["prediction_set"]["thresholds"])
    f1 = {row["class"]: row["f1"] for row in report["per_class"]}
    assert [row.name for row in card.per_class] == sorted(f1, key=f1.get)  # weakest first
    assert card.weakest[0].name == min(f1, key=f1.get)
    assert card.confused == report["most_confused"][:5]
    assert card.tta == "each image and its mirror image"  # the shipped export's TTA level 1


def test_the_page_tells_a_visitor_what_the_model_knows_and_when_not_to_trust_it(client, bundle: Path) -> None:
    card = model_card()
    response = client.get(reverse("classifier:model"))
    assert response.status_code == 200
    html = response.content.decode()
    assert card.version in html
    assert f"{card.accuracy * 100:.1f}%" in html  # the headline accuracy, as measured
    assert ", ".join(card.classes) in html
    rows = re.findall(r'<tr><th scope="row">(\w+)</th>', html)
    assert rows == [row.name for row in card.per_class]
    assert f"{card.uncertain['accuracy_below'] * 100:.0f}%" in html and "Not sure" in html
    assert f"{card.ood['generated_flagged'] * 100:.0f}%" in html
    sets = card.prediction_set  # the answer sets, with the coverage measured on held-out images
    assert 'id="sets-heading"' in html and f"{sets['measured_coverage'] * 100:.1f}%" in html
    assert f"{sets['mean_size']:.2f} classes per set" in html
    if sets["classwise"]:  # the shipped sets: one threshold per class, and the class covered least
        assert f"from {sets['threshold_min'] * 100:.1f}% to {sets['threshold_max'] * 100:.1f}%" in html
        lowest = sets["lowest_class"]
        assert f"in {lowest['coverage'] * 100:.1f}% of the {lowest['class']} pictures" in html
    else:
        assert f"at least {sets['threshold'] * 100:.1f}%" in html
    assert f'href="{reverse("api:model")}"' in html  # and for programs, the JSON twin
    # reachable from every page's footer and from the visitors' home page
    assert reverse("classifier:model") in client.get(reverse("classifier:home")).content.decode()


def test_the_page_follows_a_re_exported_bundle(client, bundle: Path) -> None:
    assert model_card().version != "re-exported-1"
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["version"] = "re-exported-1"
    manifest["metrics"]["accuracy"] = 0.5
    path = bundle / "manifest.json"
    path.write_text(json.dumps(manifest))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new mtime, even on coarse clocks
    html = client.get(reverse("classifier:model")).content.decode()
    assert "re-exported-1" in html and "50.0%" in html


def test_the_page_explains_marginal_answer_sets_too(client, bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["prediction_set"] = {
        "coverage": 0.9,
        "classwise": False,
        "threshold": 0.3,
        "thresholds": [0.3] * 10,
        "measured_coverage": 0.912,
        "mean_size": 1.234,
        "by_size": {"1": {"share": 0.8, "coverage": 0.95}},
    }
    path = bundle / "manifest.json"
    path.write_text(json.dumps(manifest))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    html = client.get(reverse("classifier:model")).content.decode()
    text = " ".join(html.split())  # the template wraps its sentences
    assert "at least 30.0%, and always the best guess" in text and "90% of pictures like the held-out ones" in text
    assert "91.2%" in html and "1.23 classes per set" in html and "80% of the sets held one class" in html


def test_without_a_report_the_page_shows_what_the_manifest_has(client, bundle: Path) -> None:
    shutil.rmtree(bundle / "report")
    card = model_card()
    assert card is not None and card.per_class == [] and card.confused == []
    response = client.get(reverse("classifier:model"))
    assert response.status_code == 200 and 'id="model-per-class"' not in response.content.decode()
    assert f"{card.accuracy * 100:.1f}%" in response.content.decode()


@pytest.mark.parametrize("damage", ["missing", "not json"])
def test_an_unreadable_bundle_gives_a_clear_503(client, bundle: Path, damage: str) -> None:
    if damage == "missing":
        (bundle / "manifest.json").unlink()
    else:
        (bundle / "manifest.json").write_text("{ not json")
    response = client.get(reverse("classifier:model"))
    assert response.status_code == 503
    assert "The model's description is unavailable." in response.content.decode()


def test_the_result_pages_flags_link_to_the_explanation(client, bundle: Path) -> None:
    from django.template.loader import render_to_string

    html = render_to_string(
        "classifier/_explanation_flags.html",
        {
            "explanation": {
                "ood": True,
                "ood_message": "This doesn't look like any of the classes I know.",
                "ood_score": -1.0,
                "ood_threshold": -2.6,
                "uncertain": True,
                "uncertain_threshold": 0.8,
            }
        },
    )
    assert html.count(f'href="{reverse("classifier:model")}#trust-heading"') == 2


# The REST twin: GET /api/v1/model/ (classifier.model_api)


def test_the_api_gives_the_bundles_own_numbers_without_a_token(client, bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / "report" / "report.json").read_text())
    response = client.get(reverse("api:model"), HTTP_AUTHORIZATION="Token not-a-real-token")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["version"] == manifest["version"] and body["classes"] == manifest["classes"]
    assert body["input_size"] == manifest["input_size"] == [32, 32]
    assert body["ensemble"]["members"] == len(manifest["members"])
    assert body["ensemble"]["parameters"] == sum(m["params"] for m in manifest["members"])
    assert body["ensemble"]["temperature"] == manifest["calibration"]["temperature"]
    held_out = body["held_out"]
    assert held_out["accuracy"] == manifest["metrics"]["accuracy"] and held_out["top5"] == manifest["metrics"]["top5"]
    assert held_out["images"] == manifest["metrics"]["n"] == 5000
    f1 = {row["class"]: row["f1"] for row in report["per_class"]}
    assert [row["name"] for row in held_out["per_class"]] == sorted(f1, key=f1.get)  # weakest first
    assert held_out["per_class"][0]["f1"] == min(f1.values())
    assert held_out["most_confused"] == report["most_confused"][:5]
    uncertain = manifest["uncertain"]
    assert body["uncertain"] == {
        k: uncertain[k] for k in ("threshold", "share_flagged", "accuracy_below", "accuracy_above")
    }
    assert body["unusual"]["generated_flagged"] == manifest["ood"]["generated_flagged"]
    assert body["unusual"]["auroc"] == manifest["ood"]["auroc"]
    sets = manifest["prediction_set"]
    keys = ("coverage", "classwise", "threshold", "thresholds", "measured_coverage", "mean_size", "lowest_class")
    assert body["prediction_set"] == {k: sets[k] for k in keys}
    assert body["exported_at"].startswith(manifest["created_at"][:19])
    assert body["page"] == f"http://testserver{reverse('classifier:model')}"


def test_the_api_follows_a_re_export_and_says_null_for_what_a_bundle_lacks(client, bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["version"] = "re-exported-2"
    for key in ("uncertain", "ood", "calibration", "prediction_set"):
        manifest.pop(key)
    manifest["metrics"] = {}
    path = bundle / "manifest.json"
    path.write_text(json.dumps(manifest))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    shutil.rmtree(bundle / "report")
    body = client.get(reverse("api:model")).json()
    assert body["version"] == "re-exported-2"
    assert body["uncertain"] is None and body["unusual"] is None and body["ensemble"]["temperature"] is None
    assert body["prediction_set"] is None
    assert body["held_out"]["accuracy"] is None and body["held_out"]["per_class"] == []
    assert body["held_out"]["most_confused"] == []
    assert body["figures"] == []


def test_the_api_answers_503_in_the_error_shape_when_the_bundle_is_unreadable(client, bundle: Path) -> None:
    (bundle / "manifest.json").write_text("{ not json")
    response = client.get(reverse("api:model"))
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_unavailable"
    assert error["message"].startswith("The model's description is unavailable")


# The export's pictures on the page and in the API


@pytest.fixture
def bundle_with_figures(bundle: Path) -> Path:
    for name in ("confusion_matrix.png", "misclassified.png", "reliability_calibrated.png", "ood_scores.png"):
        shutil.copy(SHIPPED / "report" / name, bundle / "report" / name)
    return bundle


def _served(client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png", url
    return b"".join(response.streaming_content)


def test_the_page_shows_the_exports_pictures_where_they_belong(client, bundle_with_figures: Path) -> None:
    from classifier.model_card import FIGURES

    html = client.get(reverse("classifier:model")).content.decode()
    trust = html.index('id="trust-heading"')
    for figure in FIGURES:
        url = reverse("classifier:model-figure", args=[figure.file])
        at = html.index(f'src="{url}?v=')
        assert (at > trust) == (figure.section == "trust"), figure.file  # under its own heading
        assert f'alt="{figure.title} (picture, opens full size)"' in html and figure.alt in html
        src = re.search(rf'src="({re.escape(url)}\?v=[^"]+)"', html).group(1)
        assert _served(client, src.replace("&amp;", "&")) == (bundle_with_figures / "report" / figure.file).read_bytes()


def test_without_pictures_the_page_shows_none(client, bundle: Path) -> None:
    html = client.get(reverse("classifier:model")).content.decode()
    assert "<figure" not in html


@pytest.mark.parametrize("name", ["report.json", "manifest.json", "..%2Fmanifest.json", "confusion_matrix.png"])
def test_only_the_listed_pictures_that_exist_are_served(client, bundle: Path, name: str) -> None:
    # confusion_matrix.png is listed but this bundle has none; the others are not pictures of the model
    response = client.get(f"/model/figures/{name}")
    assert response.status_code == 404


def test_the_api_lists_the_pictures_with_urls_that_serve_them(client, bundle_with_figures: Path) -> None:
    from classifier.model_card import FIGURES

    body = client.get(reverse("api:model")).json()
    assert [f["file"] for f in body["figures"]] == [f.file for f in FIGURES]
    for entry in body["figures"]:
        assert entry["url"].startswith(
            f"http://testserver{reverse('classifier:model-figure', args=[entry['file']])}?v="
        )
        assert _served(client, entry["url"]) == (bundle_with_figures / "report" / entry["file"]).read_bytes()
