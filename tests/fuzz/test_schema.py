"""Schemathesis against the served OpenAPI schema, over HTTP to pytest-django's live_server.

The live server is the real Django WSGI app in a thread of this process with the test database
(PostgreSQL in CI), so requests cross a real socket and the multipart parser sees real bodies.
Each operation in /api/v1/schema/ is fuzzed twice: with a valid token for a user who owns a job
in every status, and with no credentials (schemathesis then also makes up Authorization headers
and session cookies). Schema-valid (positive) and schema-violating (negative) inputs are both
sent; with the token, some cases also name the user's real jobs and upload a real image, so
200/202/204 bodies are checked as well as the errors.

Checks on every response: not a 5xx, status code documented, content type documented, body valid
against the documented schema (so every error has the documented JSON error shape), and
schema-violating input refused with a 4xx. Anonymous calls to protected operations must be 401.

Generation is derandomized with a bounded number of examples per operation, so CI sees the same
cases on every run (about 25 per operation and mode).

Why not ``schemathesis.pytest.from_fixture``: in schemathesis 4.32 its pytest wrapper sets
``request.node._nodeid``, which pytest 9 no longer has, so every such test errors before running.
``APIOperation.as_strategy`` with Hypothesis' own ``@given`` is the documented way to use
schemathesis cases in ordinary tests, and it gives the same cases and the same checks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from unittest import mock

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.throttling import ScopedRateThrottle
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from classifier.evaluation.models import Feedback
from classifier.models import Classification
from tests.classifier.factories import PASSWORD, ClassificationFactory, UserFactory
from tests.conftest import make_image_bytes

SCHEMA_PATH = "/api/v1/schema/"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
MAX_EXAMPLES = 25
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)
# Every operation the API serves; the first test fails when the schema gains or loses one, so
# nothing goes unfuzzed.
OPERATIONS = [
    "auth_token_create",
    "classifications_list",
    "classifications_create",
    "classifications_create_batch",
    "classifications_retrieve",
    "classifications_destroy",
    "classifications_export",
    "classifications_feedback_retrieve",
    "classifications_feedback_create",
    "classifications_feedback_destroy",
    "frames_classify",
    "classifications_explanation_request",
    "classifications_heatmap",
    "classifications_model_input",
    "model_retrieve",
]
PUBLIC_OPERATIONS = {
    "auth_token_create",
    "model_retrieve",
}  # every other operation must answer 401 to anonymous callers


@pytest.fixture
def served(live_server, media_root, tiny_bundle, settings) -> Iterator[str]:
    """The live server's base URL, with throttling out of the way (429 is documented, but a
    throttled endpoint stops exercising anything else) and short waits."""
    from django.core.cache import cache

    settings.API_MAX_WAIT_SECONDS = 0.5
    cache.clear()
    lifted = ("classification_create", "classification_create_ip", "token_obtain")
    rates = {**ScopedRateThrottle.THROTTLE_RATES, **dict.fromkeys(lifted, "100000/min")}
    with mock.patch.object(ScopedRateThrottle, "THROTTLE_RATES", rates):
        yield live_server.url
    cache.clear()


@pytest.fixture
def schema(served: str):
    loaded = schemathesis.openapi.from_url(f"{served}{SCHEMA_PATH}")
    loaded.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    return loaded


@pytest.fixture
def owner() -> tuple[str, str, list[uuid.UUID]]:
    """A user with one job in each status (real image files): username, token, job ids."""
    user = UserFactory()
    jobs = [
        ClassificationFactory(owner=user),
        ClassificationFactory(owner=user, status=Classification.Status.RUNNING, attempts=1),
        ClassificationFactory(owner=user, done=True),
        ClassificationFactory(owner=user, failed=True),
    ]
    # Feedback on the done job, so that reading and withdrawing feedback have something to find.
    Feedback.objects.create(classification=jobs[2], user=user, correct=True, label=jobs[2].top_label)
    from classifier.models import Explanation
    from worker.runtime.pictures import model_input_png

    Explanation.objects.create(  # the done job's explanation, so the heatmap and model-input PNGs answer 200
        classification=jobs[2],
        heatmaps={
            "size": [2, 2],
            "maps": {"cat": [0, 255, 128, 0], "dog": [255, 0, 0, 0]},
            "peak": {"cat": 1, "dog": 1},
        },
        model_input=model_input_png(np.zeros((3, 32, 32), dtype=np.uint8)),
    )
    token, _ = Token.objects.get_or_create(user=user)
    return user.username, token.key, [job.id for job in jobs]


def _strategy(operation, *, username: str = "", job_ids: list[uuid.UUID] | None = None) -> st.SearchStrategy:
    """Positive and negative cases; with an owner, also cases that name their jobs, upload a real
    image and ask for their token with the right password."""
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    if job_ids and "{classification_id}" in operation.path:
        strategies += [
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"classification_id": str(job_id)})
            for job_id in job_ids
        ]
    if (
        job_ids
        and operation.method.upper() == "POST"
        and (operation.path.endswith("/classifications/") or "/frames/" in operation.path)
    ):
        png = make_image_bytes("png", size=(37, 29))
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, body={"image": png}))
    if job_ids and operation.method.upper() == "POST" and operation.path.endswith("/classifications/batch/"):
        png = make_image_bytes("png", size=(37, 29))
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, body={"images": [png, png]}))
    if job_ids and operation.method.upper() == "POST" and operation.path.endswith("/feedback/"):
        # a valid answer on the done job (the third), so a success is checked against the schema too
        strategies.append(
            operation.as_strategy(
                GenerationMode.POSITIVE,
                path_parameters={"classification_id": str(job_ids[2])},
                body={"correct": True},
                media_type="application/json",
            )
        )
    if username and operation.path.endswith("/auth/token/"):
        credentials = {"username": username, "password": PASSWORD}
        strategies.append(
            operation.as_strategy(GenerationMode.POSITIVE, body=credentials, media_type="application/json")
        )
    return st.one_of(strategies)


def test_schema_lists_every_operation(schema):
    served = {result.ok().definition.raw["operationId"] for result in schema.get_all_operations()}
    assert served == set(OPERATIONS)


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_fuzz_with_token(schema, owner, operation_id):
    username, key, job_ids = owner
    schema.config.generation.update(with_security_parameters=False)  # the real token goes in by hand
    operation = schema.find_operation_by_id(operation_id)
    statuses: list[int] = []

    @given(case=_strategy(operation, username=username, job_ids=job_ids))
    @FUZZ_SETTINGS
    def run(case) -> None:
        response = case.call(headers={"Authorization": f"Token {key}"}, timeout=30)
        case.validate_response(response, checks=CHECKS)
        statuses.append(response.status_code)
        assert response.status_code != 401, response.text  # the token is valid for every call

    run()
    # The real jobs and the real image make sure success responses were checked, not only errors.
    assert any(200 <= code < 300 for code in statuses), statuses


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_fuzz_anonymous(schema, operation_id):
    operation = schema.find_operation_by_id(operation_id)

    @given(case=_strategy(operation))
    @FUZZ_SETTINGS
    def run(case) -> None:
        response = case.call(timeout=30)
        case.validate_response(response, checks=CHECKS)
        if operation_id not in PUBLIC_OPERATIONS:
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] in ("not_authenticated", "authentication_failed")

    run()
    assert not Classification.objects.exists()  # nothing anonymous ever creates a row
