"""factory-boy factories for rows. Images are real, small PNGs stored through the default storage."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from classifier.models import Classification
from tests.conftest import make_image_bytes

PASSWORD = "pass-word-123"
PNG = make_image_bytes("png")
JPG = make_image_bytes("jpg")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")

    @factory.post_generation
    def password(self, create: bool, extracted: str | None, **kwargs) -> None:
        self.set_password(extracted or PASSWORD)
        if create:
            self.save(update_fields=["password"])


class ClassificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Classification

    owner = factory.SubFactory(UserFactory)
    status = Classification.Status.QUEUED
    image_format = "png"
    original_filename = factory.Sequence(lambda n: f"photo-{n}.png")
    image_width = 40
    image_height = 30
    image = factory.django.FileField(filename="image.png", data=PNG)
    thumbnail = factory.django.FileField(filename="thumb.jpg", data=JPG)

    class Params:
        done = factory.Trait(
            status=Classification.Status.DONE,
            predictions=[{"label": "cat", "probability": 0.7}, {"label": "dog", "probability": 0.2}],
            top_label="cat",
            top_probability=0.7,
            model_version="test-1",
            attempts=1,
        )
        failed = factory.Trait(status=Classification.Status.FAILED, error="The image could not be read.", attempts=1)
