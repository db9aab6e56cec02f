"""Staff pages: model versions with live evaluation, comparison and drift (warning, plots), the
operations page, the feedback list and the admin's streaming CSV export; all staff-only."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse

from classifier.evaluation.models import Feedback, ModelVersion, ShadowPrediction
from tests.classifier.evaluation.factories import ModelVersionFactory, bulk_done, done_job, now
from tests.classifier.factories import ClassificationFactory, UserFactory

pytestmark = pytest.mark.django_db
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def staff_client(tiny_bundle, settings) -> Client:
    settings.MODEL_BUNDLE = str(tiny_bundle)
    client = Client()
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def plain_staff_client() -> Client:
    """Staff without any model permission."""
    client = Client()
    client.force_login(UserFactory(username="intern", is_staff=True))
    return client


def version_url(version) -> str:
    return reverse("admin:classifier_modelversion_change", args=[version.pk])


def test_opening_the_list_registers_the_bundle_in_use(staff_client):
    html = staff_client.get(reverse("admin:classifier_modelversion_changelist")).content.decode()
    version = ModelVersion.objects.get()
    assert (version.version, version.alias) == ("tiny-test-0", "champion")
    assert "tiny-test-0" in html and reverse("admin:classifier_modelversion_operations") in html


def test_version_page_shows_live_numbers_beside_offline(staff_client):
    version = ModelVersionFactory(offline={"accuracy": 0.8726, "n": 5000})
    for top, label in [("cat", "cat")] * 3 + [("cat", "dog")]:
        job = done_job(version, top=top)
        Feedback.objects.create(classification=job, user=job.owner, correct=top == label, label=label)
    html = staff_client.get(version_url(version)).content.decode()
    assert "75.00% (3 of 4)" in html  # live accuracy
    assert "87.26%" in html  # offline
    assert "30.06% &ndash; 95.44%" in html  # Wilson 95% for 3 of 4
    assert 'id="most-corrected"' in html and 'id="live-confusion"' in html
    assert 'id="live-set-coverage"' not in html  # no answer sets on these jobs


def test_version_page_warns_when_the_answer_sets_miss_more_than_they_should(staff_client):
    from classifier.models import Explanation

    version = ModelVersionFactory()
    for i in range(40):  # 30 of 40 covered: 75%, Wilson 95% interval 59.8% to 86.3%, below 95%
        job = done_job(version, top="cat")
        Explanation.objects.create(
            classification=job, model_input=b"", prediction_set=["cat"], prediction_set_coverage=0.95
        )
        Feedback.objects.create(classification=job, user=job.owner, correct=i < 30, label="cat" if i < 30 else "dog")
    html = staff_client.get(version_url(version)).content.decode()
    assert 'id="live-set-coverage"' in html and "75.00% (30 of 40;" in html and "fitted for 95%" in html
    assert 'id="set-coverage-warning"' in html


def test_version_page_compares_champion_and_challenger(staff_client):
    champion = ModelVersionFactory(alias="champion")
    challenger = ModelVersionFactory(alias="challenger")
    for i in range(10):
        job = done_job(champion, top="cat" if i < 4 else "dog")
        ShadowPrediction.objects.create(
            classification=job, model_version=challenger, top_label="cat", top_probability=1
        )
        Feedback.objects.create(classification=job, user=job.owner, correct=i < 4, label="cat")
    html = staff_client.get(version_url(challenger)).content.decode()
    assert 'id="champion-challenger"' in html
    assert "40.00%" in html and "100.00%" in html
    assert "McNemar exact p = 0.03125" in html  # 0 against 6 discordant: 2 / 2**6


def test_drift_warning_and_plot(staff_client):
    version = ModelVersionFactory(
        offline={"predicted_distribution": [0.1] * 10, "mean_confidence": 0.9, "confidence_bins": []}
    )
    bulk_done(version, UserFactory(), ["cat"] * 100, [0.95] * 100, now() - timedelta(days=1))
    html = staff_client.get(version_url(version)).content.decode()
    assert 'id="drift-warning"' in html and "class mix PSI" in html
    png_url = reverse("admin:classifier_modelversion_drift", kwargs={"pk": version.pk})
    assert png_url in html
    response = staff_client.get(png_url + "?days=7")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(PNG)


def test_no_warning_when_the_mix_matches(staff_client):
    version = ModelVersionFactory(offline={"predicted_distribution": [0.1] * 10, "mean_confidence": 0.9})
    bulk_done(version, UserFactory(), [c for c in version.classes for _ in range(10)], [0.9] * 100, now())
    html = staff_client.get(version_url(version)).content.decode()
    assert 'id="drift-warning"' not in html
    assert staff_client.get(reverse("admin:classifier_modelversion_drift", kwargs={"pk": 99999})).status_code == 404


def test_operations_page_and_plot(staff_client):
    t = now() - timedelta(minutes=5)
    ClassificationFactory(
        done=True, created_at=t, started_at=t + timedelta(seconds=2), finished_at=t + timedelta(seconds=3)
    )
    ClassificationFactory(failed=True, error="The image could not be read: truncated", created_at=t)
    html = staff_client.get(reverse("admin:classifier_modelversion_operations")).content.decode()
    assert 'id="ops-uploads">2<' in html
    assert "50.00%" in html  # failure rate
    assert "The image could not be read: truncated" in html
    response = staff_client.get(reverse("admin:classifier_modelversion_operations_png") + "?days=30")
    assert response.status_code == 200 and response.content.startswith(PNG)
    empty = staff_client.get(reverse("admin:classifier_modelversion_operations") + "?days=junk")
    assert empty.status_code == 200


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("admin:classifier_modelversion_changelist", {}),
        ("admin:classifier_modelversion_operations", {}),
        ("admin:classifier_modelversion_operations_png", {}),
        ("admin:classifier_modelversion_drift", {"pk": 1}),
        ("admin:classifier_feedback_changelist", {}),
        ("admin:classifier_shadowprediction_changelist", {}),
    ],
)
def test_staff_pages_are_closed_to_users_and_to_staff_without_permission(client, plain_staff_client, name, kwargs):
    ModelVersionFactory(pk=1)
    url = reverse(name, kwargs=kwargs)
    assert client.get(url).status_code == 302  # anonymous: to the admin login
    user = Client()
    user.force_login(UserFactory())
    assert user.get(url).status_code == 302  # not staff: to the admin login
    assert plain_staff_client.get(url).status_code == 403


def test_feedback_list(staff_client):
    job = done_job(ModelVersionFactory(), top="cat")
    Feedback.objects.create(classification=job, user=job.owner, correct=False, label="dog")
    html = staff_client.get(reverse("admin:classifier_feedback_changelist")).content.decode()
    assert str(job.id) in html and "dog" in html


def test_admin_exports_selected_rows_as_streaming_csv(staff_client, media_root):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    a = ClassificationFactory(owner=alice, done=True)
    b = ClassificationFactory(owner=bob, failed=True)
    ClassificationFactory(owner=bob)  # not selected
    Feedback.objects.create(classification=a, user=alice, correct=True, label="cat")
    response = staff_client.post(
        reverse("admin:classifier_classification_changelist"),
        {"action": "export_selected_csv", "_selected_action": [str(a.id), str(b.id)]},
    )
    assert isinstance(response, StreamingHttpResponse)
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {(r["owner"], r["id"], r["status"]) for r in rows} == {
        ("alice", str(a.id), "done"),
        ("bob", str(b.id), "failed"),
    }
    assert {r["id"]: r["feedback_correct"] for r in rows} == {str(a.id): "true", str(b.id): ""}


def test_shadow_predictions_list(staff_client):
    job = done_job(ModelVersionFactory(), top="cat")
    ShadowPrediction.objects.create(
        classification=job, model_version=ModelVersionFactory(version="chal-9"), top_label="frog", top_probability=0.5
    )
    html = staff_client.get(reverse("admin:classifier_shadowprediction_changelist")).content.decode()
    assert str(job.id) in html and "frog" in html and "chal-9" in html
