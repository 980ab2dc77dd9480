import hashlib

import factory
from django.contrib.auth import get_user_model

from registry.choices import ArtifactSource
from registry.models import ModelVersion, RegisteredModel


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"scientist{n}")
    password = factory.django.Password("pw-berth-123")

    @factory.post_generation
    def scientist(self, create, extracted, **kwargs):
        """What the "data scientist" group gives: create models, register versions.
        `UserFactory(scientist=False)` makes a user without them."""
        if create and extracted is not False:
            grant_scientist(self)


def grant_scientist(user) -> None:
    from django.contrib.auth.models import Permission

    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="registry",
            codename__in=["add_registeredmodel", "add_modelversion"],
        )
    )


class RegisteredModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RegisteredModel

    name = factory.Sequence(lambda n: f"model-{n}")
    owner = factory.SubFactory(UserFactory)
    description = "A model for tests."


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """A version row without a real artifact: for lists, filters and pages."""

    class Meta:
        model = ModelVersion

    model = factory.SubFactory(RegisteredModelFactory)
    version = factory.Sequence(lambda n: n + 1)
    artifact_source = ArtifactSource.UPLOAD
    artifact_uri = factory.LazyAttribute(
        lambda o: f"/nonexistent/{o.model.name}/{o.version}.tar.gz"
    )
    content_sha256 = factory.Sequence(lambda n: hashlib.sha256(str(n).encode()).hexdigest())
    size_bytes = 1234
    registered_by = factory.SelfAttribute("model.owner")
    source_repository = "https://git.example.com/ml/iris"
    source_commit = factory.Sequence(lambda n: hashlib.sha1(str(n).encode()).hexdigest())
    dataset_uri = "s3://datasets/iris.csv"
    dataset_version = "v3"
