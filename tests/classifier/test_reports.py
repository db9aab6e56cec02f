"""Evaluation reports: import from a real bundle (ml.export + ml.evaluate.write_report), idempotent
re-import, clear errors for bad bundles, the admin's read-only report page with its confusion-matrix
heat map, the staff-only figure view, the import button, the automatic import and the command."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from classifier.errors import ApplicationError
from classifier.models import EvaluationReport, EvaluationReportImage
from classifier.reports.services import evaluation_report_delete, evaluation_report_import
from tests.classifier.factories import UserFactory
from tests.conftest import CIFAR10_CLASSES, files_under

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/classifier/evaluationreport/"


@pytest.fixture
def report_json(reported_bundle: Path) -> dict:
    return json.loads((reported_bundle / "report" / "report.json").read_text())


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    return client


def copy_bundle(src: Path, dst: Path, **manifest_changes) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(manifest_changes)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


# --- import ---------------------------------------------------------------------------------


def test_import_stores_headline_json_texts_and_whitelisted_figures(media_root, reported_bundle, report_json):
    report = evaluation_report_import(bundle_dir=reported_bundle)
    assert (report.name, report.version) == ("reported", "reported-1")
    assert report.accuracy == pytest.approx(report_json["accuracy"]) and report.accuracy != 0.5  # report.json wins
    assert report.top5 == pytest.approx(report_json["top5"])
    assert report.macro_f1 == pytest.approx(report_json["macro_f1"])
    assert report.ece == pytest.approx(report_json["ece"])
    assert report.n == 60
    assert report.split.startswith("validation split (6 per class, seed 0) of synthetic")
    assert report.report["confusion_matrix"] == report_json["confusion_matrix"]
    assert report.manifest["metrics"]["note"] == "the manifest's own numbers"
    assert report.created_at is not None
    assert list(report.documents) == ["report.md", "ablations.md", "training-log.txt"]
    assert "no augment | 81.0%" in report.documents["ablations.md"]
    assert report.documents["training-log.txt"] == "epoch 1 | val acc 0.40\n"
    names = sorted(report.images.values_list("name", flat=True))
    assert names == ["confusion_matrix", "misclassified", "reliability"]  # no training curves, no secret.png
    for image in report.images.all():
        assert image.file.name.startswith(f"reports/{report.id}/{image.name}")
        with image.file.open("rb") as f:
            assert f.read() == (reported_bundle / "report" / f"{image.name}.png").read_bytes()
    assert not any("secret" in name or "notes" in name or name.endswith(".txt") for name in files_under(media_root))


def test_reimport_updates_the_row_and_replaces_the_figures(
    media_root, reported_bundle, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = evaluation_report_import(bundle_dir=reported_bundle)
    bundle = copy_bundle(reported_bundle, tmp_path / "b", name="renamed")
    (bundle / "report" / "ablations.md").write_text("second run")
    (bundle / "report" / "misclassified.png").unlink()
    with django_capture_on_commit_callbacks(execute=True):
        second = evaluation_report_import(bundle_dir=bundle)
    assert EvaluationReport.objects.count() == 1
    assert second.pk == first.pk and second.name == "renamed"
    assert second.documents["ablations.md"] == "second run"
    assert sorted(second.images.values_list("name", flat=True)) == ["confusion_matrix", "reliability"]
    stored = files_under(media_root)
    assert len(stored) == 2  # the first import's three files are gone
    assert sorted(EvaluationReportImage.objects.values_list("file", flat=True)) == sorted(stored)


def test_a_bundle_without_report_uses_the_manifest_metrics(media_root, tiny_bundle, tmp_path):
    metrics = {"accuracy": 0.9, "top5": 0.99, "macro_f1": 0.89, "ece": 0.02, "n": 5000, "split": "validation split"}
    bundle = copy_bundle(tiny_bundle, tmp_path / "b", metrics=metrics)
    assert not (bundle / "report").exists()
    report = evaluation_report_import(bundle_dir=bundle)
    assert (report.accuracy, report.top5, report.macro_f1, report.ece, report.n) == (0.9, 0.99, 0.89, 0.02, 5000)
    assert report.split == "validation split"
    assert report.report == {} and report.documents == {} and not report.images.exists()


@pytest.mark.parametrize(
    "breakage,message",
    [
        ("no_folder", "no manifest.json"),
        ("no_manifest", "no manifest.json"),
        ("bad_manifest", "not valid JSON"),
        ("manifest_not_object", "must hold a JSON object"),
        ("manifest_missing_keys", "missing required keys"),
        ("bad_report_json", "report.json is not valid JSON"),
        ("report_json_list", "must hold a JSON object"),
        ("png_not_png", "confusion_matrix.png is not a PNG file"),
    ],
)
def test_a_bad_bundle_is_refused_with_a_clear_message(media_root, reported_bundle, tmp_path, breakage, message):
    bundle = tmp_path / "b"
    if breakage != "no_folder":
        shutil.copytree(reported_bundle, bundle)
    manifest, report = bundle / "manifest.json", bundle / "report"
    match breakage:
        case "no_manifest":
            manifest.unlink()
        case "bad_manifest":
            manifest.write_text("{not json")
        case "manifest_not_object":
            manifest.write_text("[1, 2]")
        case "manifest_missing_keys":
            manifest.write_text(json.dumps({"name": "x"}))
        case "bad_report_json":
            (report / "report.json").write_text("{")
        case "report_json_list":
            (report / "report.json").write_text("[]")
        case "png_not_png":
            (report / "confusion_matrix.png").write_text("<svg/>")
    with pytest.raises(ApplicationError, match=re.escape(message)) as excinfo:
        evaluation_report_import(bundle_dir=bundle)
    assert excinfo.value.code == "invalid_bundle" and str(bundle) in excinfo.value.extra["bundle_dir"]
    assert not EvaluationReport.objects.exists() and files_under(media_root) == []


def test_delete_removes_the_figures(media_root, reported_bundle, django_capture_on_commit_callbacks):
    report = evaluation_report_import(bundle_dir=reported_bundle)
    assert len(files_under(media_root)) == 3
    with django_capture_on_commit_callbacks(execute=True):
        evaluation_report_delete(report=report)
    assert not EvaluationReport.objects.exists() and files_under(media_root) == []


# --- admin ----------------------------------------------------------------------------------


def test_change_view_shows_the_confusion_matrix_as_a_table(staff_client, media_root, reported_bundle, report_json):
    report = evaluation_report_import(bundle_dir=reported_bundle)
    response = staff_client.get(f"{CHANGELIST}{report.id}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    matrix = report_json["confusion_matrix"]
    header = re.search(r'<table class="cm">.*?</thead>', page, re.S).group(0)
    assert re.findall(r'<th scope="col" class="cm-col"><span>([^<]+)</span>', header)[:10] == CIFAR10_CLASSES
    for name, counts in zip(CIFAR10_CLASSES, matrix, strict=True):
        row = re.search(rf'<th scope="row" class="cm-row">{name}</th>(.*?)</tr>', page, re.S).group(1)
        cells = re.findall(r'<td class="(cm-\d+(?: cm-diag)?)" title="[^"]*">(\d+)</td>', row)
        assert [int(count) for _, count in cells] == counts
        total = sum(counts)
        for j, (css, count) in enumerate(cells):
            shade = int(css.split()[0][3:])
            assert ("cm-diag" in css) == (j == CIFAR10_CLASSES.index(name))
            assert (shade == 0) == (int(count) == 0)
            assert shade == 0 or (shade - 1) / 10 < int(count) / total <= shade / 10
    # per-class table, most-confused pairs, text files and figures
    airplane = report_json["per_class"][0]
    assert f'<th scope="row">airplane</th><td class="num">{100 * airplane["precision"]:.1f}%</td>' in page
    pair = report_json["most_confused"][0]
    assert f'<tr><td>{pair["true"]}</td><td>{pair["predicted"]}</td><td class="num">{pair["count"]}</td>' in page
    assert html.escape("| no augment | 81.0% |") in page
    for name in ("confusion_matrix", "reliability", "misclassified"):
        assert f'src="{CHANGELIST}{report.id}/figures/{name}.png" alt="' in page
    assert "training_curves.png" not in page
    assert 'name="accuracy"' not in page  # read-only: no inputs


def test_figure_view_is_staff_only(client, staff_client, media_root, reported_bundle):
    report = evaluation_report_import(bundle_dir=reported_bundle)
    url = reverse("admin:classifier_evaluationreport_figure", kwargs={"report_id": report.id, "name": "reliability"})
    response = staff_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == (reported_bundle / "report" / "reliability.png").read_bytes()
    assert response["X-Content-Type-Options"] == "nosniff"

    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("admin:login"))
    client.force_login(UserFactory())
    assert client.get(url).status_code == 302
    no_permission = UserFactory(is_staff=True)  # staff without the view permission
    client.force_login(no_permission)
    assert client.get(url).status_code == 403
    no_permission.user_permissions.add(Permission.objects.get(codename="view_evaluationreport"))
    client.force_login(no_permission)
    assert client.get(url).status_code == 200


@pytest.mark.parametrize("name", ["training_curves", "secret", "manifest", "report"])
def test_figure_view_unknown_names_are_404(staff_client, media_root, reported_bundle, name):
    report = evaluation_report_import(bundle_dir=reported_bundle)
    assert staff_client.get(f"{CHANGELIST}{report.id}/figures/{name}.png").status_code == 404


def test_figure_view_unknown_report_is_404(staff_client, media_root, reported_bundle):
    evaluation_report_import(bundle_dir=reported_bundle)
    assert (
        staff_client.get(f"{CHANGELIST}00000000-0000-0000-0000-000000000000/figures/reliability.png").status_code == 404
    )


def test_changelist_imports_the_bundle_in_use_once(staff_client, media_root, reported_bundle, settings):
    settings.MODEL_BUNDLE = str(reported_bundle)
    response = staff_client.get(CHANGELIST)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Imported the evaluation report of reported-1" in page
    assert "reported-1" in page and "Import the bundle in use" in page
    report = EvaluationReport.objects.get()
    response = staff_client.get(CHANGELIST)
    assert "Imported the evaluation report" not in response.content.decode()
    assert EvaluationReport.objects.get().imported_at == report.imported_at  # not imported again


def test_changelist_survives_a_missing_bundle(staff_client, settings, tmp_path):
    settings.MODEL_BUNDLE = str(tmp_path / "nope")
    assert staff_client.get(CHANGELIST).status_code == 200
    assert not EvaluationReport.objects.exists()


def test_import_button(staff_client, media_root, reported_bundle, settings, tmp_path):
    url = reverse("admin:classifier_evaluationreport_import")
    settings.MODEL_BUNDLE = str(reported_bundle)
    assert staff_client.get(url).status_code == 405
    response = staff_client.post(url)
    report = EvaluationReport.objects.get()
    assert response.status_code == 302 and response["Location"] == f"{CHANGELIST}{report.id}/change/"
    settings.MODEL_BUNDLE = str(tmp_path / "nope")
    response = staff_client.post(url, follow=True)
    assert "no manifest.json" in response.content.decode()


def test_import_button_needs_the_add_permission(client, media_root, reported_bundle, settings):
    settings.MODEL_BUNDLE = str(reported_bundle)
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_evaluationreport"))
    client.force_login(viewer)
    assert client.post(reverse("admin:classifier_evaluationreport_import")).status_code == 403
    page = client.get(CHANGELIST).content.decode()
    assert "Import the bundle in use" not in page and not EvaluationReport.objects.exists()


def test_model_bundle_page_links_to_the_report(staff_client, media_root, reported_bundle, settings):
    settings.MODEL_BUNDLE = str(reported_bundle)
    bundle_page = "/admin/classifier/classification/model-bundle/"
    page = staff_client.get(bundle_page).content.decode()
    assert "No evaluation report of reported-1 is imported yet" in page
    assert "Evaluation report (report/report.json)" in page  # the raw JSON until it is imported
    report = evaluation_report_import(bundle_dir=reported_bundle)
    page = staff_client.get(bundle_page).content.decode()
    assert f'href="{CHANGELIST}{report.id}/change/"' in page
    assert "Evaluation report (report/report.json)" not in page


# --- command --------------------------------------------------------------------------------


def test_import_report_command(media_root, reported_bundle, settings, tmp_path):
    out = io.StringIO()
    call_command("import_report", str(reported_bundle), stdout=out)
    assert out.getvalue().startswith("imported reported-1 (reported): accuracy ")
    assert "figures: confusion_matrix, misclassified, reliability" in out.getvalue()
    settings.MODEL_BUNDLE = str(copy_bundle(reported_bundle, tmp_path / "b", version="reported-2"))
    call_command("import_report", stdout=io.StringIO())  # the default: MODEL_BUNDLE
    assert sorted(EvaluationReport.objects.values_list("version", flat=True)) == ["reported-1", "reported-2"]
    with pytest.raises(CommandError, match="no manifest.json"):
        call_command("import_report", str(tmp_path / "nope"))


def test_importing_a_report_never_imports_torch(reported_bundle):
    """The web process imports reports (admin page, button) without loading torch."""
    import subprocess
    import sys

    code = (
        "import os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'webapp.settings.test'\n"
        "import django; django.setup()\n"
        "import classifier.admin\n"
        "from worker.runtime.manifest import read_manifest\n"
        f"print(read_manifest({str(reported_bundle)!r}).version, 'torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["reported-1", "False"]


def test_change_view_of_a_report_without_report_json(staff_client, media_root, tiny_bundle):
    report = evaluation_report_import(bundle_dir=tiny_bundle)
    page = staff_client.get(f"{CHANGELIST}{report.id}/change/").content.decode()
    assert "has no report/report.json" in page and "The report holds no confusion matrix." in page
    assert '<table class="cm' not in page and "<figure" not in page


def test_report_pages_are_staff_only(client, media_root, reported_bundle):
    report = evaluation_report_import(bundle_dir=reported_bundle)
    for url in (CHANGELIST, f"{CHANGELIST}{report.id}/change/"):
        assert client.get(url).status_code == 302  # anonymous: to the login page
        client.force_login(UserFactory())
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
        client.logout()
    client.force_login(UserFactory(is_staff=True))  # staff without the view permission
    assert client.get(f"{CHANGELIST}{report.id}/change/").status_code == 403


# --- studies (python -m ml study writes report/studies/<study>/) ------------------------------

STUDY_MD = """# Study: ablation

| condition | top-1 % |
|---|---|
| full | 91.20 ± 0.10 |
| no batch norm | 85.00 ± 0.40 |

- **batch_norm**. H0: Removing batch norm does not change accuracy.

<script>alert("x")</script><img src=x onerror="alert(1)">
[click](javascript:alert(1)) and [paper](https://arxiv.org/abs/2404.00498)

![accuracy](accuracy.png)
"""


def test_study_reports_are_imported_and_rendered_as_sanitised_html(staff_client, media_root, reported_bundle, tmp_path):
    bundle = copy_bundle(reported_bundle, tmp_path / "with-studies", version="studies-1")
    study = bundle / "report" / "studies" / "ablation"
    study.mkdir(parents=True)
    (study / "report.md").write_text(STUDY_MD)
    (study / "accuracy.png").write_bytes((bundle / "report" / "reliability.png").read_bytes())
    (study / "secret.png").write_bytes((bundle / "report" / "reliability.png").read_bytes())  # not whitelisted
    (bundle / "report" / "studies" / "Not A Study").mkdir()
    report = evaluation_report_import(bundle_dir=bundle)
    assert report.documents["studies/ablation/report.md"] == STUDY_MD
    assert sorted(image.name for image in report.images.all()) == [
        "ablation_accuracy",
        "confusion_matrix",
        "misclassified",
        "reliability",
    ]
    page = staff_client.get(f"{CHANGELIST}{report.id}/change/").content.decode()
    rendered = re.search(
        r'<div class="report-markdown">(.*?)</div>\s*<details', page.split("studies/ablation/report.md")[1], re.S
    )
    body = rendered.group(1)
    assert "<table>" in body and "<td>no batch norm</td>" in body and "<th>top-1 %</th>" in body
    assert "<strong>batch_norm</strong>" in body and '<a href="https://arxiv.org/abs/2404.00498"' in body
    assert "<script" not in body and "onerror" not in body and "javascript:" not in body
    # the only image left is the study's own figure, served by the staff-only figure view
    figure = f"{CHANGELIST}{report.id}/figures/ablation_accuracy.png"
    assert re.findall(r"<img[^>]*>", body) == [f'<img alt="accuracy" src="{figure}">']
    url = reverse(
        "admin:classifier_evaluationreport_figure", kwargs={"report_id": report.id, "name": "ablation_accuracy"}
    )
    assert b"".join(staff_client.get(url).streaming_content) == (study / "accuracy.png").read_bytes()
