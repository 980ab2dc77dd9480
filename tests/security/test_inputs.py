"""Hostile inputs: archives, berth.yaml, config.pbtxt, test cases, browser uploads, logins.

Each attack goes through the path a user's input really takes (registration, then the
validation step; the browser's upload form; the login forms) and must end in a clear 4xx or a
version `invalid` with the reason, quickly, with nothing written outside the folder meant for
it. Hostile archives are built in memory and stay small on the wire.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import tarfile
import time
import tracemalloc
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.test.client import ClientHandler
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from portal.errors import ServiceError
from portal.services import token_create
from registry import plans, services
from registry.choices import VersionStatus
from registry.models import ModelVersion
from registry.tests import archives
from registry.tests.factories import RegisteredModelFactory, UserFactory
from toolkit.archive import ArchiveLimits, UnsafeArchive, safe_extract
from toolkit.shim import prepare_repository
from toolkit.tests.test_archive import HOSTILE as EXTRACTOR_HOSTILE
from toolkit.tests.test_archive import SMALL

pytestmark = pytest.mark.django_db

ONNX_CONFIG = (
    'name: "m"\nplatform: "onnxruntime_onnx"\n'
    'input [{name: "X" data_type: TYPE_FP32 dims: [4]}]\n'
    'output [{name: "Y" data_type: TYPE_FP32 dims: [3]}]\n'
)
PYTHON_CONFIG = (
    'name: "m"\nbackend: "python"\n'
    'input [{name: "X" data_type: TYPE_FP32 dims: [4]}]\n'
    'output [{name: "Y" data_type: TYPE_FP32 dims: [4]}]\n'
)
MODEL_PY = "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"


@pytest.fixture(autouse=True)
def dirs(settings, tmp_path):
    """Artifacts, uploads and scratch under this test's folder; `outside` must stay empty."""
    settings.BERTH_ARTIFACT_STORE = str(tmp_path / "artifacts")
    settings.BERTH_UPLOAD_DIR = str(tmp_path / "uploads")
    settings.BERTH_SCRATCH_DIR = str(tmp_path / "scratch")
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    (tmp_path / "spool").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path


@pytest.fixture
def user(db):
    return UserFactory(username="mallory")


@pytest.fixture
def model(user):
    return RegisteredModelFactory(name="target", owner=user)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def validate(user, model, archive: Path, dirs: Path, *, seconds: float = 10) -> ModelVersion:
    """Register `archive` and run the real validation step on it; check that only the
    artifact store gained files and that the scratch folder is gone again."""
    before = files_under(dirs)
    version = services.version_register(actor=user, model=model, archive=archive, lineage={})
    started = time.monotonic()
    plans.version_validate(version_id=version.pk)
    elapsed = time.monotonic() - started
    version.refresh_from_db()
    new = files_under(dirs) - before
    assert all("artifacts" in p.relative_to(dirs).parts for p in new), new
    assert not list((dirs / "scratch").iterdir())
    assert not list((dirs / "outside").iterdir())
    # A refusal is an answer, not a crash: no retry was scheduled, and it came quickly.
    assert version.attempts <= 1 and elapsed < seconds, (version.attempts, elapsed)
    return version


def assert_invalid(version: ModelVersion, reason: str, file: str | None = None) -> dict:
    assert version.status == VersionStatus.INVALID, (version.status, version.problems)
    matching = [p for p in version.problems if reason in p["message"]]
    assert matching, version.problems
    if file is not None:
        assert matching[0]["file"] == file, matching[0]
    return matching[0]


def tar_gz(path: Path, files: dict[str, str | bytes]) -> Path:
    return archives.repository_archive(files, path)


# -- archives: the cases the extractor already refused, through the real validation step ------


ARCHIVE_CASES = {
    "dot-dot": (archives.dotdot_archive, ".tar.gz", "'..'"),
    "absolute": (archives.absolute_archive, ".tar.gz", "absolute path"),
    "symlink-out": (archives.symlink_escape_archive, ".tar.gz", "leaves the archive"),
    "hardlink-out": (archives.hardlink_escape_archive, ".tar.gz", "leaves the archive"),
    "device": (archives.device_archive, ".tar.gz", "device files are not allowed"),
    "gzip-bomb": (archives.bomb_archive, ".tar.gz", "decompression bomb"),
    "zip-slip": (archives.zip_slip_archive, ".zip", "'..'"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
def test_hostile_archive_makes_the_version_invalid(case, user, model, dirs):
    build, suffix, reason = ARCHIVE_CASES[case]
    archive = build(dirs / f"hostile{suffix}")
    version = validate(user, model, archive, dirs)
    assert_invalid(version, reason)
    assert not Path("/tmp/berth-absolute-escape.txt").exists()


def _many_files_tar_gz(path: Path, count: int) -> Path:
    """`count` empty files; headers written directly (tarfile takes 7 s for 100,000)."""
    template = bytearray(tarfile.TarInfo("m/1/f0000000.txt").tobuf(format=tarfile.USTAR_FORMAT))
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        for i in range(count):
            header = bytearray(template)
            header[0:16] = f"m/1/f{i:07d}.txt".encode()
            header[148:156] = b" " * 8
            header[148:156] = b"%06o\x00 " % sum(header)
            out.write(compressor.compress(bytes(header)))
        out.write(compressor.compress(bytes(1024)) + compressor.flush())
    return path


def test_archive_of_100k_files_makes_the_version_invalid(user, model, dirs):
    archive = _many_files_tar_gz(dirs / "many.tar.gz", 100_000)
    assert archive.stat().st_size < 2 * 1024 * 1024
    # The first 10,000 (empty) files are written before the 10,001st is refused.
    version = validate(user, model, archive, dirs, seconds=60)
    assert_invalid(version, "more than 10000 entries")


@pytest.mark.parametrize("case", sorted(EXTRACTOR_HOSTILE))
def test_extractor_refuses_and_writes_nothing_outside(case, tmp_path):
    build, member, message = EXTRACTOR_HOSTILE[case]
    work = tmp_path / "work"
    sandbox = work / "sandbox"
    sandbox.mkdir(parents=True)
    archive = build(work)
    with pytest.raises(UnsafeArchive) as info:
        safe_extract(archive, sandbox / "dest", SMALL)
    assert message in info.value.message
    assert list(sandbox.iterdir()) == []
    assert {p.name for p in work.iterdir()} == {archive.name, "sandbox"}


# -- archives: tar extension headers of 1 GiB -------------------------------------------------


def _deflate_repeated(chunk: bytes, times: int) -> bytes:
    """Raw deflate of `chunk` * `times`, built from one compressed copy: each copy ends with a
    full flush, so it references nothing before it and copies can be concatenated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)) * times


def huge_header_tar_gz(path: Path, kind: bytes, size: int = 1024**3) -> Path:
    """A .tar.gz whose first member is an extension header (GNU long name 'L', PAX 'x') of
    `size` bytes, then one ordinary file. About 1 MB on the wire for 1 GiB."""
    header = tarfile.TarInfo("././@LongLink" if kind != tarfile.XHDTYPE else "PaxHeader/m")
    header.type = kind
    header.size = size
    head = header.tobuf(format=tarfile.GNU_FORMAT)
    chunk = b"a" * (1024 * 1024)
    assert size % len(chunk) == 0
    member = tarfile.TarInfo("m/config.pbtxt")
    member.size = 1
    tail = member.tobuf(format=tarfile.USTAR_FORMAT) + b"x" + bytes(511) + bytes(1024)
    crc = zlib.crc32(head)
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(tail, crc)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = (
        compressor.compress(head)
        + compressor.flush(zlib.Z_FULL_FLUSH)
        + _deflate_repeated(chunk, size // len(chunk))
        + compressor.compress(tail)
        + compressor.flush()
    )
    total = len(head) + size + len(tail)
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    path.write_bytes(gzip_header + body + struct.pack("<II", crc, total & 0xFFFFFFFF))
    return path


HEADER_KINDS = {"gnu-long-name": tarfile.GNUTYPE_LONGNAME, "pax": tarfile.XHDTYPE}


@pytest.mark.parametrize("kind", sorted(HEADER_KINDS))
def test_a_1_gib_extension_header_is_refused_before_it_is_read(kind, tmp_path):
    archive = huge_header_tar_gz(tmp_path / "header.tar.gz", HEADER_KINDS[kind])
    assert archive.stat().st_size < 2 * 1024 * 1024
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(UnsafeArchive) as info:
            safe_extract(archive, tmp_path / "dest", ArchiveLimits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "the limit is" in info.value.message and "header of 1073741824 bytes" in str(info.value)
    assert peak < 16 * 1024 * 1024, peak
    assert time.monotonic() - started < 2
    assert not (tmp_path / "dest").exists()


def test_a_1_gib_long_name_makes_the_version_invalid(user, model, dirs):
    archive = huge_header_tar_gz(dirs / "longname.tar.gz", tarfile.GNUTYPE_LONGNAME)
    version = validate(user, model, archive, dirs)
    assert_invalid(version, "GNU long name/link header of 1073741824 bytes")


def test_a_chain_of_extension_headers_is_refused(tmp_path):
    buffer = io.BytesIO()
    for _ in range(200):
        header = tarfile.TarInfo("././@LongLink")
        header.type = tarfile.GNUTYPE_LONGNAME
        header.size = 4
        buffer.write(header.tobuf(format=tarfile.GNU_FORMAT) + b"abc\x00" + bytes(508))
    buffer.write(bytes(1024))
    archive = tmp_path / "chain.tar"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeArchive, match="extension headers in a row"):
        safe_extract(archive, tmp_path / "dest", SMALL)


def test_gnu_sparse_members_are_refused_before_their_maps_are_read(tmp_path):
    header = bytearray(tarfile.TarInfo("m/sparse.bin").tobuf(format=tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[482] = 1  # "isextended": more sparse map blocks follow
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    archive = tmp_path / "sparse.tar"
    archive.write_bytes(bytes(header) + bytes(512) * 64)
    with pytest.raises(UnsafeArchive, match="sparse files are not allowed"):
        safe_extract(archive, tmp_path / "dest", SMALL)


# -- archives: hardlink amplification and undecodable names ------------------------------------


def hardlinks_tar_gz(path: Path, *, file_bytes: int, links: int) -> Path:
    data = os.urandom(file_bytes)  # incompressible: the archive is as large as the file
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("m/1/weights.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for n in range(links):
            link = tarfile.TarInfo(f"m/1/copy{n}.bin")
            link.type = tarfile.LNKTYPE
            link.linkname = "m/1/weights.bin"
            tar.addfile(link)
    return path


def test_hardlink_copies_are_counted_before_any_is_written(user, model, dirs):
    # 300 links to one 8 MiB file would unpack to 2.4 GiB from an 8 MiB upload.
    archive = hardlinks_tar_gz(dirs / "links.tar.gz", file_bytes=8 * 1024 * 1024, links=300)
    version = validate(user, model, archive, dirs)
    problem = assert_invalid(version, "copies of 300 links")
    assert "decompression bomb" in problem["message"]


def test_hardlink_copies_never_reach_the_disk(tmp_path):
    archive = hardlinks_tar_gz(tmp_path / "links.tar.gz", file_bytes=1024 * 1024, links=300)
    limits = ArchiveLimits(max_total_bytes=64 * 1024 * 1024)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive) as info:
        safe_extract(archive, dest, limits)
    # Refused on the planned total: the first link is never written, let alone the 64th.
    assert "archive unpacks to more than" in info.value.message
    assert "314572800 of them copies of 300 links" in info.value.message
    assert not dest.exists()


def non_utf8_tar(path: Path) -> Path:
    with tarfile.open(path, "w", encoding="utf-8", errors="surrogateescape") as tar:
        for name, data in (
            ("m/config.pbtxt", PYTHON_CONFIG.encode()),
            ("m/1/model.py", MODEL_PY.encode()),
            ("m/1/caf\udce9.txt", b"latin-1 name"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_non_utf8_member_names_are_refused_and_pages_still_answer(user, model, dirs, client):
    version = validate(user, model, non_utf8_tar(dirs / "latin1.tar"), dirs)
    problem = assert_invalid(version, "member name is not valid UTF-8")
    assert problem["file"] == "m/1/caf\\xe9.txt"
    client.force_login(user)
    assert client.get(version.get_absolute_url()).status_code == 200
    _, raw = token_create(actor=user, name="ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    url = reverse("registry-api:version-detail", kwargs={"name": "target", "version": 1})
    answer = api.get(url)
    assert answer.status_code == 200
    assert answer.json()["problems"][0]["file"] == "m/1/caf\\xe9.txt"


# -- berth.yaml -----------------------------------------------------------------------------

ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
)

BERTH_YAML_CASES = {
    "alias-bomb": (ALIAS_BOMB, "anchors (&a) are not allowed", 1),
    "deep-nesting": ("model: m\ntests: " + "[" * 50_000 + "]" * 50_000 + "\n", "nesting", 2),
    # Random text: a repeated line would be refused as a decompression bomb first.
    "over-1-mib": (
        "model: m\n" + "".join(f"# {os.urandom(24).hex()}\n" for _ in range(22_000)),
        "the limit is 1048576 bytes",
        None,
    ),
    "alias-only": ("model: m\ntests: *missing\n", "aliases (*missing) are not allowed", 2),
}


@pytest.mark.parametrize("case", sorted(BERTH_YAML_CASES))
def test_hostile_berth_yaml_makes_the_version_invalid(case, user, model, dirs):
    text, reason, line = BERTH_YAML_CASES[case]
    archive = tar_gz(
        dirs / "yaml.tar.gz",
        {"m/config.pbtxt": PYTHON_CONFIG, "m/1/model.py": MODEL_PY, "berth.yaml": text},
    )
    version = validate(user, model, archive, dirs)
    problem = assert_invalid(version, reason, "berth.yaml")
    assert problem["line"] == line


def test_the_data_plane_reads_berth_yaml_with_the_same_bounds(tmp_path):
    from dataplane.errors import GatewayError
    from dataplane.staging import entry_model

    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "config.pbtxt").write_text(PYTHON_CONFIG)
    (tmp_path / "berth.yaml").write_text(ALIAS_BOMB)
    with pytest.raises(GatewayError, match="anchors"):
        entry_model(tmp_path, "target_1.tar.gz")
    (tmp_path / "berth.yaml").write_text("model: m\n" + "#" * 2 * 1024 * 1024)
    with pytest.raises(GatewayError, match="the limit is 1048576 bytes"):
        entry_model(tmp_path, "target_1.tar.gz")


# -- config.pbtxt ---------------------------------------------------------------------------


def test_oversized_config_is_refused_before_parsing(user, model, dirs):
    padding = "".join(f"# {os.urandom(32).hex()}\n" for _ in range(40_000))  # 2.6 MB
    archive = tar_gz(
        dirs / "config.tar.gz",
        {"m/config.pbtxt": PYTHON_CONFIG + padding, "m/1/model.py": MODEL_PY},
    )
    version = validate(user, model, archive, dirs)
    assert_invalid(version, "the limit is 1048576 bytes", "m/config.pbtxt")


@pytest.mark.parametrize(
    "filename",
    ["../../etc/passwd", "/etc/passwd", "../../../../../../../../etc/passwd", "..", "sub/../x"],
)
def test_default_model_filename_outside_the_version_folder_is_refused(filename, user, model, dirs):
    config = ONNX_CONFIG + f'default_model_filename: "{filename}"\n'
    archive = tar_gz(dirs / "file.tar.gz", {"m/config.pbtxt": config, "m/1/model.onnx": b"x"})
    version = validate(user, model, archive, dirs)
    problem = assert_invalid(version, "default_model_filename", "m/config.pbtxt")
    assert problem["line"] == 5


def test_the_shim_refuses_a_model_file_outside_the_version_folder(tmp_path):
    source = tmp_path / "repo"
    (source / "m" / "1").mkdir(parents=True)
    (source / "m" / "1" / "model.onnx").write_bytes(b"x")
    (source / "m" / "config.pbtxt").write_text(
        ONNX_CONFIG + 'default_model_filename: "../../../../../../../../etc/passwd"\n'
    )
    with pytest.raises(ValueError, match="default_model_filename"):
        prepare_repository(source, tmp_path / "serving")
    # Nothing half-prepared is left for Triton to load.
    assert not any((tmp_path / "serving").glob("m*"))


@pytest.mark.parametrize(
    ("datatype", "dims", "reason"),
    [
        ("FP32", "[1000000, 1000000, 1000]", "holds 1000000000000000 elements; the limit is"),
        ("FP64", "[8192, 16384]", "takes 1073741824 bytes; the limit is 536870912 bytes"),
        ("FP32", str([1] * 17), "has 17 dims; the limit is 16"),
    ],
)
def test_inputs_too_large_to_test_are_refused_naming_the_tensor(
    datatype, dims, reason, user, model, dirs
):
    config = PYTHON_CONFIG.replace(
        "data_type: TYPE_FP32 dims: [4]}]\noutput",
        f"data_type: TYPE_{datatype} dims: {dims}}}]\noutput",
    )
    assert dims in config
    archive = tar_gz(dirs / "dims.tar.gz", {"m/config.pbtxt": config, "m/1/model.py": MODEL_PY})
    version = validate(user, model, archive, dirs)
    problem = assert_invalid(version, reason, "m/config.pbtxt")
    assert problem["message"].startswith("Input 'X'")


# -- test cases given at registration --------------------------------------------------------


def test_too_many_test_cases_at_registration_is_a_400(user, model, dirs):
    case = {"name": "c", "inputs": {"X": {"datatype": "FP32", "shape": [1], "data": [1]}}}
    cases = [{**case, "name": f"c{i}"} for i in range(501)]
    archive = tar_gz(
        dirs / "ok.tar.gz", {"m/config.pbtxt": PYTHON_CONFIG, "m/1/model.py": MODEL_PY}
    )
    with pytest.raises(ServiceError) as info:
        services.version_register(
            actor=user, model=model, archive=archive, lineage={}, test_cases=cases
        )
    assert info.value.status_code == 400 and info.value.field == "test_cases"
    assert "the limit is 500" in info.value.message
    assert not ModelVersion.objects.exists() and not files_under(dirs / "outside")


def test_test_case_data_nested_too_deep_is_refused(user, model, dirs):
    data: list = [1.0]
    for _ in range(40):
        data = [data]
    cases = [{"name": "deep", "inputs": {"X": {"datatype": "FP32", "shape": [1], "data": data}}}]
    archive = tar_gz(
        dirs / "ok.tar.gz", {"m/config.pbtxt": PYTHON_CONFIG, "m/1/model.py": MODEL_PY}
    )
    with pytest.raises(ServiceError, match="at most 16 deep") as info:
        services.version_register(
            actor=user, model=model, archive=archive, lineage={}, test_cases=cases
        )
    assert info.value.field == "test_cases"


def test_test_cases_typed_in_the_browser_use_the_bounded_loader(user, model, dirs, client):
    client.force_login(user)
    archive = tar_gz(
        dirs / "ok.tar.gz", {"m/config.pbtxt": PYTHON_CONFIG, "m/1/model.py": MODEL_PY}
    )
    url = reverse("registry:version-upload", kwargs={"name": "target"})
    with open(archive, "rb") as handle:
        response = client.post(url, {"archive": handle, "test_cases": ALIAS_BOMB})
    assert response.status_code == 400
    errors = response.context["form"].errors["test_cases"]
    assert any("anchors (&a) are not allowed" in error for error in errors), errors
    assert not ModelVersion.objects.exists()


# -- the browser upload ----------------------------------------------------------------------


class CountingInput(io.RawIOBase):
    """A request body that counts how much of it the server reads."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        line = self._data.readline(size)
        self.bytes_read += len(line)
        return line


BOUNDARY = "berthboundary"


def multipart(fields: dict[str, str], archive: bytes) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="archive"; filename="m.tar.gz"\r\n'
        "Content-Type: application/gzip\r\n\r\n".encode()
        + archive
        + b"\r\n"
    )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post_upload(client: Client, body: bytes, *, content_length: int | None) -> tuple:
    """POST `body` to the upload form as a browser would, through the whole middleware stack
    with CSRF checks on; returns (response, bytes of the body the server read)."""
    stream = CountingInput(body)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": reverse("registry:version-upload", kwargs={"name": "target"}),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver",
        "HTTP_COOKIE": "; ".join(f"{k}={v.value}" for k, v in client.cookies.items()),
        "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
        "wsgi.input": stream,
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if content_length is not None:
        environ["CONTENT_LENGTH"] = str(content_length)
    else:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    response = ClientHandler(enforce_csrf_checks=True)(environ)
    return response, stream.bytes_read


@pytest.fixture
def browser(user, model, settings):
    """A logged-in browser session with its CSRF token, and a 1 MiB upload limit."""
    settings.BERTH_UPLOAD_MAX_BYTES = 1024 * 1024
    # Files past 64 KiB spool to disk (to `dirs / "spool"`), where a test can see them.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get(reverse("registry:version-upload", kwargs={"name": "target"}))
    assert page.status_code == 200
    client.csrf = client.cookies["csrftoken"].value
    return client


def assert_nothing_spooled(dirs: Path) -> None:
    assert not files_under(dirs / "spool")
    assert not (dirs / "uploads").exists() or not files_under(dirs / "uploads")
    assert not ModelVersion.objects.exists()


def test_upload_over_the_limit_is_413_before_the_body_is_read(browser, model, dirs):
    body = multipart({"csrfmiddlewaretoken": browser.csrf}, bytes(3 * 1024 * 1024))
    response, read = post_upload(browser, body, content_length=len(body))
    assert response.status_code == 413
    assert read == 0
    assert "larger than the 1048576 byte upload limit" in response.content.decode()
    assert_nothing_spooled(dirs)


def test_upload_within_the_declared_slack_is_stopped_at_the_limit(browser, model, dirs):
    # The body's length passes the first check (limit + 1 MiB for the form around the file),
    # the file itself does not: the upload handler stops reading once it passes the limit.
    body = multipart({"csrfmiddlewaretoken": browser.csrf}, os.urandom(1024 * 1024 + 512 * 1024))
    response, read = post_upload(browser, body, content_length=len(body))
    assert response.status_code == 413
    assert "larger than the 1048576 byte upload limit" in response.content.decode()
    assert read <= 1024 * 1024 + 256 * 1024, read
    assert_nothing_spooled(dirs)


def test_a_body_longer_than_declared_is_read_only_as_far_as_declared(browser, model, dirs):
    body = multipart({"csrfmiddlewaretoken": browser.csrf}, os.urandom(4 * 1024 * 1024))
    response, read = post_upload(browser, body, content_length=64 * 1024)
    assert 400 <= response.status_code < 500
    assert read <= 64 * 1024
    assert_nothing_spooled(dirs)


def test_a_chunked_body_without_a_length_is_not_read(browser, model, dirs):
    body = multipart({"csrfmiddlewaretoken": browser.csrf}, os.urandom(4 * 1024 * 1024))
    response, read = post_upload(browser, body, content_length=None)
    assert 400 <= response.status_code < 500
    assert read == 0
    assert_nothing_spooled(dirs)


def test_uploads_within_the_limit_still_register_and_still_need_the_csrf_token(
    browser, model, dirs
):
    archive = tar_gz(
        dirs / "ok.tar.gz", {"m/config.pbtxt": PYTHON_CONFIG, "m/1/model.py": MODEL_PY}
    )
    forged = multipart({}, archive.read_bytes())
    response, _ = post_upload(browser, forged, content_length=len(forged))
    assert response.status_code == 403
    assert not ModelVersion.objects.exists()
    body = multipart({"csrfmiddlewaretoken": browser.csrf}, archive.read_bytes())
    response, read = post_upload(browser, body, content_length=len(body))
    assert response.status_code == 302, response.content.decode()[:500]
    assert read == len(body)
    assert ModelVersion.objects.count() == 1


# -- logins ----------------------------------------------------------------------------------


LOGIN_FORMS = {"portal": "login", "admin": "admin:login"}


def attempt(client: Client, form: str, username: str, password: str, ip: str = "10.0.0.1"):
    return client.post(
        reverse(LOGIN_FORMS[form]),
        {"username": username, "password": password},
        REMOTE_ADDR=ip,
    )


@pytest.mark.parametrize("form", sorted(LOGIN_FORMS))
def test_repeated_wrong_passwords_lock_the_username_from_that_address(form, settings, db):
    # Each test uses its own usernames, so lockouts never leak between tests.
    victim = UserFactory(username=f"victim-{form}", is_staff=True)
    bystander = UserFactory(username=f"bystander-{form}", is_staff=True)
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        answer = attempt(client, form, victim.username, "wrong")
        assert answer.status_code == 200  # the form again, with its error
    locked = attempt(client, form, victim.username, "wrong")
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Too many failed logins" in page and victim.username in page
    assert f"locked after {settings.AXES_FAILURE_LIMIT} wrong passwords" in page
    # Even the right password is refused during the cool-off, with the same page.
    again = attempt(client, form, victim.username, "pw-berth-123")
    assert again.status_code == 429 and "Too many failed logins" in again.content.decode()
    assert "_auth_user_id" not in client.session
    # Another user from the same address, and the same user from elsewhere, are unaffected.
    assert attempt(Client(), form, bystander.username, "pw-berth-123").status_code == 302
    assert (
        attempt(Client(), form, victim.username, "pw-berth-123", ip="10.0.0.2").status_code == 302
    )


def test_the_lock_lifts_after_the_cool_off(settings, db):
    from axes.models import AccessAttempt

    victim = UserFactory(username="victim-cooloff")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "portal", victim.username, "wrong")
    assert attempt(client, "portal", victim.username, "pw-berth-123").status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert attempt(client, "portal", victim.username, "pw-berth-123").status_code == 302


def test_api_tokens_work_while_the_password_login_is_locked(settings, db):
    victim = UserFactory(username="victim-api")
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        attempt(Client(), "portal", victim.username, "wrong")
    assert attempt(Client(), "portal", victim.username, "pw-berth-123").status_code == 429
    _, raw = token_create(actor=victim, name="ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get(reverse("registry-api:model-list"), REMOTE_ADDR="10.0.0.1").status_code == 200
