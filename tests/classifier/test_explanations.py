"""Explanations through the real worker service, the API, the pages and the PNG endpoints."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier import services
from classifier.models import Classification, Explanation
from tests.classifier.factories import ClassificationFactory, UserFactory
from worker.runtime.images import decode_for_model

pytestmark = pytest.mark.django_db

Status = Classification.Status


@pytest.fixture
def flagging_bundle(tiny_bundle, tmp_path, settings):
    """tiny_bundle with manifest thresholds that flag every image as uncertain and OOD (the manifest
    is not covered by the module checksum, so tests may set them)."""
    out = tmp_path / "flagging"
    shutil.copytree(tiny_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["uncertain"] = {"threshold": 1.01, "meaning": "test: everything is uncertain"}
    manifest["ood"] = {"threshold": -1e9, "meaning": "test: everything is out of distribution"}
    manifest["superclasses"] = {c: "thing" for c in manifest["classes"]}
    manifest["prediction_set"] = {"threshold": 0.0, "coverage": 0.95, "meaning": "test: every class is in the set"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    settings.MODEL_BUNDLE = str(out)
    return out


def api_client(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def processed(**kwargs) -> Classification:
    c = ClassificationFactory(**kwargs)
    services.classification_process(classification_id=c.id)
    c.refresh_from_db()
    assert c.status == Status.DONE
    return c


def test_process_stores_heatmaps_of_the_top_five_and_the_model_input(tiny_bundle, media_root):
    c = processed()
    e = c.explanation
    assert e.heatmaps["labels"] == [p["label"] for p in c.predictions]  # top-5, best first
    assert set(e.heatmaps["maps"]) == set(e.heatmaps["labels"])
    assert e.heatmaps["size"] == [8, 8]  # ResNet-20's last residual block at 32x32
    for label, values in e.heatmaps["maps"].items():
        assert len(values) == 64 and all(0 <= v <= 255 for v in values)
        assert max(values) == 255 or e.heatmaps["peak"][label] == 0  # quantised against its own peak
    assert e.layer == "layers.8" and e.members[0]["arch"] == "resnet20" and e.agree == 1
    assert e.uncertain is None and e.ood is None and e.ood_score is not None  # tiny_bundle has no thresholds
    expected = decode_for_model(c.image.open("rb").read(), (32, 32))
    seen = np.asarray(Image.open(io.BytesIO(bytes(e.model_input))).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(seen, expected)


def test_stored_heatmap_is_the_worker_map_quantised(tiny_bundle, media_root):
    from worker.runtime.explain import predict_explained
    from worker.runtime.predictor import get_predictor

    c = processed()
    [result] = predict_explained(get_predictor(tiny_bundle, "cpu"), [decode_for_model(c.image.open("rb").read())])
    for label, values in c.explanation.heatmaps["maps"].items():
        raw = result.heatmaps[label]
        if raw.max() > 0:
            np.testing.assert_allclose(np.array(values).reshape(8, 8) / 255, raw / raw.max(), atol=0.5 / 255 + 1e-6)


def test_storing_an_explanation_again_replaces_the_old_one_in_one_statement(tiny_bundle, media_root):
    import dataclasses

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from classifier.explanations import explanations_create_many
    from worker.runtime.explain import predict_explained
    from worker.runtime.predictor import get_predictor

    c = processed()
    first = c.explanation
    [result] = predict_explained(get_predictor(tiny_bundle, "cpu"), [decode_for_model(c.image.open("rb").read())])
    again = dataclasses.replace(result, layer="layers.7", agree=0)
    with CaptureQueriesContext(connection) as queries:
        explanations_create_many(pairs=[(c, again)])
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 1 and statements[0].startswith("INSERT") and "ON CONFLICT" in statements[0]
    [stored] = Explanation.objects.filter(classification=c)
    assert stored.pk == first.pk and (stored.layer, stored.agree) == ("layers.7", 0)
    assert stored.created_at >= first.created_at


def test_api_fields_flags_and_owner_only_pngs(flagging_bundle, media_root):
    c = processed()
    owner = c.owner
    client = api_client(owner)
    body = client.get(f"/api/v1/classifications/{c.id}/").json()
    assert body["uncertain"] is True and body["ood"] is True and isinstance(body["ood_score"], float)
    assert body["superclass"] == "thing"
    assert body["members"] == [
        {"arch": "resnet20", "label": c.top_label, "probability": pytest.approx(c.top_probability, abs=1e-5)}
    ]
    assert body["agreement"] == {"agree": 1, "members": 1, "text": "One model (no ensemble to agree or disagree)."}
    ps = body["prediction_set"]  # threshold 0: every class, most probable first
    assert ps["size"] == 10 and ps["coverage"] == 0.95 and sorted(ps["labels"]) == sorted(c.explanation.prediction_set)
    assert ps["labels"][:5] == [p["label"] for p in c.predictions] and len(set(ps["labels"])) == 10
    assert ps["text"].startswith("At 95% coverage it could be “") and ps["text"].endswith("”.")
    exp = body["explanation"]
    assert (
        exp["available"] and exp["method"] == "grad-cam" and exp["class"] == c.top_label and exp["layer"] == "layers.8"
    )
    assert [h["label"] for h in exp["heatmaps"]] == [p["label"] for p in c.predictions]
    png = client.get(exp["heatmap_url"])
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (256, 256)
    second = client.get(exp["heatmaps"][1]["url"])
    assert second.status_code == 200 and second.content != png.content  # another class, another map
    assert client.get(exp["model_input_url"]).status_code == 200
    # another user (even staff): 404 in the API's error shape, like the image
    for other in (UserFactory(), UserFactory(is_staff=True)):
        for url in (exp["heatmap_url"], exp["model_input_url"]):
            response = api_client(other).get(url)
            assert response.status_code == 404 and set(response.json()) == {"error"}
    assert client.get(exp["heatmap_url"].split("?")[0] + "?class=not-a-class").status_code == 404
    assert APIClient().get(exp["heatmap_url"]).status_code == 401


def test_jobs_without_explanations_have_null_fields(media_root):
    c = ClassificationFactory(done=True)
    body = api_client(c.owner).get(f"/api/v1/classifications/{c.id}/").json()
    assert body["explanation"] is None and body["members"] == [] and body["agreement"] is None
    assert body["uncertain"] is None and body["ood_score"] is None and body["prediction_set"] is None
    assert api_client(c.owner).get(f"/api/v1/classifications/{c.id}/heatmap.png").status_code == 404


def test_result_page_shows_heatmap_model_eye_view_agreement_and_flags(flagging_bundle, media_root, client):
    c = processed()
    client.force_login(c.owner)
    html = client.get(reverse("classifier:result", kwargs={"id": c.id})).content.decode()
    assert 'id="cam-overlay"' in html and f"/api/v1/classifications/{c.id}/heatmap.png?class={c.top_label}" in html
    assert 'id="cam-opacity"' in html and 'type="range"' in html
    assert f"/api/v1/classifications/{c.id}/model-input.png" in html and 'class="pixelated"' in html
    assert "This doesn&#x27;t look like any of the 10 classes I know." in html
    assert "Not sure." in html and "One model" in html
    assert 'id="answer-set"' in html and "Answer set: 10 classes." in html and "#sets-heading" in html
    history = client.get(reverse("classifier:history")).content.decode()
    assert 'class="flag flag-ood"' in history


def test_result_page_says_no_explanation_for_a_bundle_without_explain(media_root, client):
    c = ClassificationFactory(done=True)
    Explanation.objects.create(classification=c, model_input=b"png", members=[], heatmaps={})
    client.force_login(c.owner)
    html = client.get(reverse("classifier:result", kwargs={"id": c.id})).content.decode()
    assert "No explanation is available for this model" in html and 'id="cam-overlay"' not in html


def test_prediction_set_reads_as_a_sentence_and_a_bundle_without_sets_shows_none(media_root, client):
    from classifier.explanations.selectors import prediction_set_summary

    assert prediction_set_summary(["cat"], 0.95)["text"] == "At 95% coverage only “cat” fits."
    assert (
        prediction_set_summary(["cat", "dog", "deer"], 0.9)["text"]
        == "At 90% coverage it could be “cat”, “dog” or “deer”."
    )
    assert prediction_set_summary(["cat", "dog"], None) == {
        "labels": ["cat", "dog"],
        "size": 2,
        "coverage": None,
        "text": "At the bundle's coverage it could be “cat” or “dog”.",
    }
    assert prediction_set_summary(None, 0.95) is None and prediction_set_summary([], 0.95) is None
    sure = ClassificationFactory(done=True)
    Explanation.objects.create(
        classification=sure, model_input=b"png", prediction_set=["cat"], prediction_set_coverage=0.95
    )
    plain = ClassificationFactory(done=True, owner=sure.owner)
    Explanation.objects.create(classification=plain, model_input=b"png")  # a bundle without sets
    client.force_login(sure.owner)
    html = client.get(reverse("classifier:result", kwargs={"id": sure.id})).content.decode()
    assert "Answer set: one class." in html and "At 95% coverage only “cat” fits." in html
    assert "{#" not in html and "#}" not in html  # no template comment leaks into the page
    html = client.get(reverse("classifier:result", kwargs={"id": plain.id})).content.decode()
    assert 'id="answer-set"' not in html
    client.force_login(UserFactory(is_staff=True, is_superuser=True))  # staff see it in the admin
    assert (
        "answer set: cat at 95%"
        in client.get(reverse("admin:classifier_classification_change", args=[sure.pk])).content.decode()
    )
    assert (
        "answer set: -"
        in client.get(reverse("admin:classifier_classification_change", args=[plain.pk])).content.decode()
    )


def test_uncertain_row_is_marked_in_history(media_root, client):
    c = ClassificationFactory(done=True)
    Explanation.objects.create(classification=c, model_input=b"png", uncertain=True, ood=False)
    plain = ClassificationFactory(done=True, owner=c.owner)
    Explanation.objects.create(classification=plain, model_input=b"png", uncertain=False, ood=False)
    client.force_login(c.owner)
    html = client.get(reverse("classifier:history")).content.decode()
    assert html.count('class="flag flag-uncertain"') == 1 and 'class="flag flag-ood"' not in html


def test_a_failing_explain_never_fails_the_job(tiny_bundle, media_root, monkeypatch):
    import worker.runtime.explain

    def broken(*args, **kwargs):
        raise RuntimeError("explain is broken")

    monkeypatch.setattr(worker.runtime.explain, "predict_explained", broken)
    c = processed()
    assert len(c.predictions) == 5 and c.explanation.heatmaps == {}


def test_openapi_schema_documents_the_explanation_fields(client):
    user = UserFactory()
    client.force_login(user)
    schema = client.get("/api/v1/schema/?format=json").json()
    props = schema["components"]["schemas"]["ClassificationOutput"]["properties"]
    assert {
        "explanation",
        "members",
        "agreement",
        "uncertain",
        "ood_score",
        "ood",
        "prediction_set",
        "superclass",
    } <= set(props)
    paths = schema["paths"]
    assert "/api/v1/classifications/{classification_id}/heatmap.png" in paths
    assert (
        "image/png"
        in paths["/api/v1/classifications/{classification_id}/heatmap.png"]["get"]["responses"]["200"]["content"]
    )


@pytest.fixture
def bundle_with_members(tmp_path, settings):
    import torch

    from ml.export import export_bundle, save_member
    from ml.models import build_model
    from tests.conftest import CIFAR10_CLASSES

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, width=0.25).eval()
    info = {"arch": "resnet20", "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    out = tmp_path / "with-members"
    manifest = export_bundle([(model, info)], out, classes=CIFAR10_CLASSES, name="m", version="m-1")
    ckpt = {**info, "model_options": {"width": 0.25}, "classes": CIFAR10_CLASSES}
    save_member(out / "members" / "01-resnet20.pt", model, ckpt)
    manifest.members[0]["member_file"] = "members/01-resnet20.pt"
    from worker.runtime.manifest import write_manifest

    write_manifest(out, manifest)
    settings.MODEL_BUNDLE = str(out)
    return out, model


def test_admin_shows_the_explanation_and_a_members_feature_maps(bundle_with_members, media_root, client):
    import torch

    c = processed()
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    page = client.get(reverse("admin:classifier_classification_change", args=[c.pk])).content.decode()
    assert "Grad-CAM of" in page and "data:image/png;base64," in page and "Feature maps of one member" in page
    response = client.get(reverse("admin:classifier_classification_feature_maps", args=[c.pk]))
    html = response.content.decode()
    assert response.status_code == 200 and "stem" in html and "layers.4" in html
    # the grid's channels are the 16 with the highest mean activation of that stage, most active first
    from ml.checkpoint import load_model

    model, _ = load_model(
        bundle_with_members[0] / "members" / "01-resnet20.pt"
    )  # the fp16 member, as the admin runs it
    x = torch.from_numpy(decode_for_model(c.image.open("rb").read()))[None].float() / 255.0
    x = (x - torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1)) / torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1)
    with torch.no_grad():
        stem = model.stem(x)[0]
    expected = torch.argsort(-stem.mean(dim=(1, 2)), stable=True)[:16].tolist()
    assert "Channels: " + ", ".join(map(str, expected)) in html
    client.force_login(UserFactory())  # not staff: the admin sends to its login page
    assert client.get(reverse("admin:classifier_classification_feature_maps", args=[c.pk])).status_code == 302
