"""The result page's feedback box (works without JavaScript) and the history page's export link."""

from __future__ import annotations

import pytest
from django.urls import reverse

from classifier.evaluation.models import Feedback, ModelVersion
from tests.classifier.evaluation.factories import ModelVersionFactory, done_job
from tests.classifier.factories import ClassificationFactory, UserFactory

pytestmark = pytest.mark.django_db


def feedback_url(job) -> str:
    return reverse("classifier:feedback", kwargs={"id": job.id})


def test_result_page_offers_the_versions_classes(client, media_root):
    job = done_job(ModelVersionFactory(classes=["animal", "vehicle"]), top="animal")
    client.force_login(job.owner)
    html = client.get(reverse("classifier:result", kwargs={"id": job.id})).content.decode()
    assert 'id="feedback"' in html and 'class="feedback hidden"' not in html
    assert '<option value="vehicle">vehicle</option>' in html
    assert f'action="{feedback_url(job)}"' in html


def test_form_posts_record_change_and_withdraw_feedback(client, media_root):
    job = done_job(ModelVersionFactory(), top="cat")
    client.force_login(job.owner)
    response = client.post(feedback_url(job), {"action": "correct"})
    assert response.status_code == 302 and response["Location"] == reverse("classifier:result", kwargs={"id": job.id})
    assert Feedback.objects.get().correct
    client.post(feedback_url(job), {"action": "wrong", "label": "dog"})
    feedback = Feedback.objects.get()
    assert (feedback.correct, feedback.label) == (False, "dog")
    html = client.get(reverse("classifier:result", kwargs={"id": job.id})).content.decode()
    assert "wrong, it is a dog" in html and '<option value="dog" selected>' in html
    client.post(feedback_url(job), {"action": "wrong", "label": ""})
    assert (Feedback.objects.get().correct, Feedback.objects.get().label) == (False, "")
    client.post(feedback_url(job), {"action": "delete"})
    assert not Feedback.objects.exists()


def test_form_errors_are_messages_on_the_result_page(client, media_root):
    job = done_job(ModelVersionFactory(), top="cat")
    client.force_login(job.owner)
    response = client.post(feedback_url(job), {"action": "wrong", "label": "zebra"}, follow=True)
    assert "is not a class of model version" in response.content.decode()
    assert not Feedback.objects.exists()


def test_failed_jobs_have_no_feedback_box_and_refuse_posts(client, media_root):
    job = ClassificationFactory(failed=True)
    client.force_login(job.owner)
    html = client.get(reverse("classifier:result", kwargs={"id": job.id})).content.decode()
    assert 'id="feedback"' not in html
    response = client.post(feedback_url(job), {"action": "correct"}, follow=True)
    assert "This classification failed" in response.content.decode()
    assert not Feedback.objects.exists()


def test_unfinished_job_has_a_hidden_box_with_the_champions_classes(client, media_root):
    ModelVersionFactory(alias=ModelVersion.Alias.CHAMPION, classes=["animal", "vehicle"])
    job = ClassificationFactory()
    client.force_login(job.owner)
    html = client.get(reverse("classifier:result", kwargs={"id": job.id})).content.decode()
    assert 'class="feedback hidden"' in html and '<option value="vehicle">' in html


def test_other_users_and_anonymous_cannot_post(client, media_root):
    job = done_job(ModelVersionFactory())
    client.force_login(UserFactory())
    assert client.post(feedback_url(job), {"action": "correct"}).status_code == 404
    client.logout()
    assert client.post(feedback_url(job), {"action": "correct"}).status_code == 302
    assert client.get(feedback_url(job)).status_code in (302, 405)
    assert not Feedback.objects.exists()


def test_history_page_links_the_export_with_its_filters(client):
    user = UserFactory()
    client.force_login(user)
    html = client.get(reverse("classifier:history"), {"status": "done", "label": "cat"}).content.decode()
    assert 'id="export-csv" href="/api/v1/classifications/export.csv?status=done&amp;label=cat"' in html
    assert 'href="/api/v1/classifications/export.csv"' in client.get(reverse("classifier:history")).content.decode()


def test_before_any_version_is_registered_the_box_uses_the_bundle_in_use(client, media_root, tiny_bundle, settings):
    settings.MODEL_BUNDLE = str(tiny_bundle)
    job = ClassificationFactory()
    client.force_login(job.owner)
    html = client.get(reverse("classifier:result", kwargs={"id": job.id})).content.decode()
    assert '<option value="truck">' in html


def test_done_job_of_an_unregistered_version_offers_only_right_or_wrong(client, media_root, tiny_bundle, settings):
    settings.MODEL_BUNDLE = str(tiny_bundle)
    job = done_job(None, top="cat")
    client.force_login(job.owner)
    html = client.get(reverse("classifier:result", kwargs={"id": job.id})).content.decode()
    assert 'id="feedback-label"' not in html and "No, it is wrong" in html
    client.post(feedback_url(job), {"action": "wrong"})
    assert Feedback.objects.get().correct is False
