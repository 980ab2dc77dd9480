"""The artifact store: local folder and S3 (moto), and registration from s3:// URIs."""

import hashlib
import os
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from django.utils import timezone
from moto import mock_aws

from portal import aws
from portal.errors import ServiceError
from registry import plans, services
from registry.choices import VersionStatus
from registry.models import ModelVersion
from registry.packaging import build_tar_gz
from registry.storage import LocalArtifactStore, S3ArtifactStore, artifact_store

from .archives import upload


@pytest.fixture
def s3(monkeypatch, settings):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    settings.AWS_REGION = "us-east-1"
    settings.AWS_ENDPOINT_URL = ""
    settings.BERTH_SOURCE_S3_BUCKETS = ["ci-uploads"]
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="berth-artifacts")
        client.create_bucket(Bucket="ci-uploads")
        yield client


def test_local_store_put_fetch_exists_delete(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    source = tmp_path / "a.bin"
    source.write_bytes(b"payload")
    uri = store.put(source, "iris/1/source.tar.gz")
    assert Path(uri) == (tmp_path / "store" / "iris" / "1" / "source.tar.gz").resolve()
    assert store.exists(uri)
    assert store.fetch(uri, tmp_path / "copy").read_bytes() == b"payload"
    store.delete(uri)
    assert not store.exists(uri)
    with pytest.raises(ValueError):
        store.put(source, "../escape")
    # Deleting never reaches outside the store.
    store.delete(str(source))
    assert source.exists()


def test_local_store_links_instead_of_copying(tmp_path):
    """On one file system a gigabyte is stored and fetched without copying a byte."""
    store = LocalArtifactStore(tmp_path / "store")
    source = tmp_path / "package.tar.gz"
    source.write_bytes(b"payload")
    uri = store.put(source, "iris/1/iris_1.tar.gz")
    assert os.path.samefile(uri, source)
    assert oct(Path(uri).stat().st_mode & 0o777) == oct(0o644)
    source.unlink()  # the caller removes its file: the stored one stays
    fetched = store.fetch(uri, tmp_path / "scratch" / "artifact")
    assert os.path.samefile(fetched, uri)
    assert fetched.read_bytes() == b"payload"
    # A fetch over an older file replaces it (never writes through it into the store).
    (tmp_path / "scratch" / "other").write_bytes(b"other")
    store.fetch(str(tmp_path / "scratch" / "other"), fetched)
    assert Path(uri).read_bytes() == b"payload"
    assert not [p for p in Path(uri).parent.iterdir() if p.name != "iris_1.tar.gz"]


def test_local_store_copies_where_it_cannot_link(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    store = LocalArtifactStore(tmp_path / "store")
    source = tmp_path / "package.tar.gz"
    source.write_bytes(b"payload")
    uri = store.put(source, "iris/1/iris_1.tar.gz")
    assert not os.path.samefile(uri, source)
    assert Path(uri).read_bytes() == b"payload"
    fetched = store.fetch(uri, tmp_path / "artifact")
    assert not os.path.samefile(fetched, uri)
    assert fetched.read_bytes() == b"payload"
    assert sorted(p.name for p in Path(uri).parent.iterdir()) == ["iris_1.tar.gz"]


def test_s3_store_put_fetch_exists_delete(s3, tmp_path, settings):
    settings.BERTH_ARTIFACT_STORE = "s3://berth-artifacts/registry"
    store = artifact_store()
    assert isinstance(store, S3ArtifactStore)
    source = tmp_path / "a.bin"
    source.write_bytes(b"payload")
    uri = store.put(source, "iris/1/iris_1.tar.gz")
    assert uri == "s3://berth-artifacts/registry/iris/1/iris_1.tar.gz"
    assert (
        s3.get_object(Bucket="berth-artifacts", Key="registry/iris/1/iris_1.tar.gz")["Body"].read()
        == b"payload"
    )
    assert store.exists(uri)
    assert store.fetch(uri, tmp_path / "copy").read_bytes() == b"payload"
    store.delete(uri)
    assert not store.exists(uri)


def test_aws_client_honours_region_and_endpoint(settings):
    settings.AWS_REGION = "eu-west-1"
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:9999"
    client = aws.client("s3")
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == "http://127.0.0.1:9999"


@pytest.mark.django_db
def test_register_from_s3_into_an_s3_store(s3, tmp_path, settings, user, model, demo_tar):
    settings.BERTH_ARTIFACT_STORE = "s3://berth-artifacts/registry"
    s3.upload_file(str(demo_tar), "ci-uploads", "builds/demo.tar.gz")
    version = services.version_register(
        actor=user, model=model, uri="s3://ci-uploads/builds/demo.tar.gz", lineage={}
    )
    assert version.artifact_uri.startswith("s3://berth-artifacts/registry/iris/sources/")
    assert version.artifact_uri.endswith(".tar.gz")
    assert version.content_sha256 == hashlib.sha256(demo_tar.read_bytes()).hexdigest()
    assert version.source_uri == "s3://ci-uploads/builds/demo.tar.gz"
    # The validation step reads it back from S3.
    plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.VALIDATED
    # Packaging writes `<model>_<version>.tar.gz` to S3 (testing on Triton is covered elsewhere).
    ModelVersion.objects.filter(pk=version.pk).update(status=VersionStatus.TESTED)
    plans.version_package(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.PACKAGED
    assert version.package_uri == "s3://berth-artifacts/registry/iris/1/iris_1.tar.gz"
    body = s3.get_object(Bucket="berth-artifacts", Key="registry/iris/1/iris_1.tar.gz")[
        "Body"
    ].read()
    assert hashlib.sha256(body).hexdigest() == version.package_sha256
    assert len(body) == version.package_size_bytes
    with pytest.raises(ServiceError) as error:
        services.version_register(
            actor=user, model=model, uri="s3://ci-uploads/missing.tar.gz", lineage={}
        )
    assert error.value.field == "uri" and "No such S3 object" in error.value.message
    with pytest.raises(ServiceError) as error:
        services.version_register(
            actor=user, model=model, uri="s3://ci-uploads/nothing-here/", lineage={}
        )
    assert error.value.field == "uri"


def upload_folder(s3, folder: Path, bucket: str, prefix: str) -> None:
    """Upload a folder as S3 tools do: one object per file, a marker per empty folder."""
    for path in sorted(folder.rglob("*")):
        key = prefix + path.relative_to(folder).as_posix()
        if path.is_file():
            s3.upload_file(str(path), bucket, key)
        elif not any(path.iterdir()):
            s3.put_object(Bucket=bucket, Key=key + "/", Body=b"")


@pytest.mark.django_db
def test_register_a_repository_folder_under_an_s3_prefix(s3, registry_dirs, user, model):
    from toolkit.examples import write_demo_repository

    repo = write_demo_repository(registry_dirs / "repo")
    upload_folder(s3, repo, "ci-uploads", "builds/417/repository/")
    s3.put_object(Bucket="ci-uploads", Key="builds/417/repository/", Body=b"")  # console marker
    version = services.version_register(
        actor=user, model=model, uri="s3://ci-uploads/builds/417/repository/", lineage={}
    )
    # Archived like the same folder on disk: the same files give the same sha256.
    local = build_tar_gz(repo, registry_dirs / "local.tar.gz")
    assert version.content_sha256 == local.sha256
    assert version.source_uri == "s3://ci-uploads/builds/417/repository/"
    plans.version_validate(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == VersionStatus.VALIDATED
    # Without the final slash it names the same folder (so: the same content, a 409).
    with pytest.raises(services.DuplicateContent):
        services.version_register(
            actor=user, model=model, uri="s3://ci-uploads/builds/417/repository", lineage={}
        )
    # The downloaded folders are gone; only the extraction kept for the next steps is left.
    assert [p.name for p in (registry_dirs / "scratch").iterdir()] == ["trees"]
    assert not list((registry_dirs / "uploads").iterdir())


@pytest.mark.django_db
def test_a_repository_of_many_objects_arrives_whole(s3, registry_dirs, user, model):
    from toolkit.examples import write_demo_repository

    repo = write_demo_repository(registry_dirs / "repo")
    assets = repo / "demo_preprocess" / "1" / "assets"
    for i in range(60):  # more objects than download threads, in nested folders
        (assets / f"group{i % 7}").mkdir(parents=True, exist_ok=True)
        (assets / f"group{i % 7}" / f"vocab{i}.txt").write_text(f"token {i}\n" * (i + 1))
    upload_folder(s3, repo, "ci-uploads", "many/")
    version = services.version_register(
        actor=user, model=model, uri="s3://ci-uploads/many/", lineage={}
    )
    assert version.content_sha256 == build_tar_gz(repo, registry_dirs / "local.tar.gz").sha256


@pytest.mark.django_db
def test_an_object_that_grows_after_the_listing_is_refused(
    s3, registry_dirs, user, model, monkeypatch
):
    from registry import artifacts

    s3.put_object(Bucket="ci-uploads", Key="racy/m/config.pbtxt", Body=b"x" * 10)
    relative_key = artifacts._relative_key

    def listed_then_rewritten(rest, uri):
        s3.put_object(Bucket="ci-uploads", Key="racy/m/config.pbtxt", Body=b"x" * 5000)
        return relative_key(rest, uri)

    monkeypatch.setattr(artifacts, "_relative_key", listed_then_rewritten)
    with pytest.raises(ServiceError) as error:
        services.version_register(actor=user, model=model, uri="s3://ci-uploads/racy/", lineage={})
    assert error.value.field == "uri" and "changed while it was read" in error.value.message
    assert not ModelVersion.objects.exists()
    assert not list((registry_dirs / "scratch").iterdir())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("keys", "limits", "status", "words"),
    [
        ([], {}, 400, "no objects under"),
        (["m/config.pbtxt", "m/../../../etc/cron.d/x"], {}, 400, "not a plain relative path"),
        (["m/config.pbtxt", "m//config.pbtxt"], {}, 400, "not a plain relative path"),
        (["m", "m/config.pbtxt"], {}, 400, "both a file and a folder"),
        ([f"m/{'x' * 300}"], {}, 400, "cannot be kept as a file"),
        (["a", "b", "c"], {"max_files": 2}, 400, "more than 2 objects"),
        (["a", "b"], {"max_total_bytes": 150}, 413, "more than 150 bytes"),
    ],
)
def test_a_hostile_or_oversized_s3_folder_is_refused_before_anything_is_kept(
    s3, settings, registry_dirs, user, model, keys, limits, status, words
):
    settings.BERTH_ARCHIVE_LIMITS = {**settings.BERTH_ARCHIVE_LIMITS, **limits}
    for key in keys:
        s3.put_object(Bucket="ci-uploads", Key=f"repo/{key}", Body=b"x" * 100)
    with pytest.raises(ServiceError) as error:
        services.version_register(actor=user, model=model, uri="s3://ci-uploads/repo/", lineage={})
    assert error.value.field == "uri"
    assert error.value.status_code == status
    assert words in error.value.message
    assert not ModelVersion.objects.exists()
    for folder in ("scratch", "uploads", "artifacts"):
        path = registry_dirs / folder
        assert not path.exists() or not [p for p in path.rglob("*") if p.is_file()]


@pytest.mark.django_db
def test_failed_registration_removes_the_s3_object(
    s3, settings, user, model, demo_tar, monkeypatch
):
    settings.BERTH_ARTIFACT_STORE = "s3://berth-artifacts/registry"

    def fail(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "audit_record", fail)
    with pytest.raises(RuntimeError):
        services.version_register(
            actor=user,
            model=model,
            archive=upload(demo_tar),
            lineage={},
        )
    assert s3.list_objects_v2(Bucket="berth-artifacts").get("KeyCount", 0) == 0
    assert not ModelVersion.objects.exists()


def test_deterministic_package_bytes(tmp_path):
    from toolkit.examples import write_demo_repository

    repo = write_demo_repository(tmp_path / "repo")
    first = build_tar_gz(repo, tmp_path / "one.tar.gz")
    (repo / "demo_ensemble" / "config.pbtxt").touch()  # a new mtime changes nothing
    second = build_tar_gz(repo, tmp_path / "two.tar.gz")
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()


def copy_of(path: Path) -> Path:
    copy = path.with_name(f"copy-{uuid.uuid4().hex[:8]}-{path.name}")
    shutil.copyfile(path, copy)
    return copy


def backdate(path: Path, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(path, (then, then))


@pytest.mark.django_db
def test_sweep_removes_only_old_source_archives_no_version_references(
    registry_dirs, user, model, demo_tar
):
    kept = services.version_register(actor=user, model=model, archive=upload(demo_tar), lineage={})
    store = artifact_store()
    # Each put of its own file, as registrations and packaging put theirs (a local store
    # links the file in: one file put twice would be one file with one time).
    backdate(Path(kept.artifact_uri), 48)
    stray = Path(store.put(copy_of(demo_tar), "iris/sources/0123456789abcdef-killed.tar.gz"))
    backdate(stray, 48)
    fresh = Path(store.put(copy_of(demo_tar), "iris/sources/0123456789abcdef-in-flight.tar.gz"))
    unfinished = stray.parent / ".put-abc123"  # a copy killed half-way
    unfinished.write_bytes(b"half")
    backdate(unfinished, 48)
    package = Path(
        store.put(copy_of(demo_tar), "iris/1/iris_1.tar.gz")
    )  # not a source: never swept
    backdate(package, 48)

    removed = services.artifact_sweep()

    assert sorted(removed) == sorted([str(stray), str(unfinished)])
    assert not stray.exists() and not unfinished.exists()
    assert Path(kept.artifact_uri).exists() and fresh.exists() and package.exists()
    assert services.artifact_sweep() == []


@pytest.mark.django_db
def test_sweep_of_an_s3_store(s3, settings, user, model, demo_tar):
    settings.BERTH_ARTIFACT_STORE = "s3://berth-artifacts/registry"
    kept = services.version_register(actor=user, model=model, archive=upload(demo_tar), lineage={})
    store = artifact_store()
    stray = store.put(demo_tar, "iris/sources/0123456789abcdef-killed.tar.gz")
    store.put(demo_tar, "iris/1/iris_1.tar.gz")
    s3.put_object(Bucket="berth-artifacts", Key="elsewhere/sources/not-ours.tar.gz", Body=b"x")

    # Everything was written just now: nothing is old enough yet.
    assert services.artifact_sweep() == []
    later = timezone.now() + timedelta(days=2)
    assert services.artifact_sweep(now=later) == [stray]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="berth-artifacts")["Contents"]}
    assert keys == {
        kept.artifact_uri.removeprefix("s3://berth-artifacts/"),
        "registry/iris/1/iris_1.tar.gz",
        "elsewhere/sources/not-ours.tar.gz",
    }


def test_the_sweep_runs_on_beat():
    from portal.celery import app

    entries = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "registry.tasks.artifact_sweep" in entries
