"""Archives for tests: the demo repository, broken repositories and hostile archives."""

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from registry.packaging import build_tar_gz
from toolkit.examples import write_demo_repository


def upload(path: Path) -> SimpleUploadedFile:
    """An archive on disk as the browser or a multipart API request hands it over."""
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/gzip")


def demo_archive(dest: Path, *, name: str = "demo.tar.gz") -> Path:
    repo = dest.parent / f"{name}-repo"
    write_demo_repository(repo)
    return build_tar_gz(repo, dest.parent / name).path


def repository_archive(files: dict[str, str | bytes], dest: Path) -> Path:
    """A .tar.gz holding `files` ({relative path: content})."""
    with tarfile.open(dest, "w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def _tar(dest: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return dest


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def dotdot_archive(dest: Path) -> Path:
    return _tar(
        dest, [_file("m/config.pbtxt", b'backend: "python"'), _file("../../escaped.txt", b"pwned")]
    )


def absolute_archive(dest: Path) -> Path:
    return _tar(dest, [_file("/tmp/berth-absolute-escape.txt", b"pwned")])


def symlink_escape_archive(dest: Path) -> Path:
    link = tarfile.TarInfo("m/1/model.py")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../../../etc/passwd"
    return _tar(dest, [_file("m/config.pbtxt", b'backend: "python"'), (link, None)])


def hardlink_escape_archive(dest: Path) -> Path:
    link = tarfile.TarInfo("m/1/model.py")
    link.type = tarfile.LNKTYPE
    link.linkname = "/etc/passwd"
    return _tar(dest, [(link, None)])


def device_archive(dest: Path) -> Path:
    dev = tarfile.TarInfo("m/1/null")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    return _tar(dest, [(dev, None)])


class _Zeros(io.RawIOBase):
    """`n` zero bytes, read without holding them in memory."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def bomb_archive(dest: Path, *, unpacked_bytes: int = 64 * 1024 * 1024) -> Path:
    """A gzip whose single file unpacks to `unpacked_bytes` of zeros (ratio about 1000:1)."""
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        info = tarfile.TarInfo("m/1/model.onnx")
        info.size = unpacked_bytes
        tar.addfile(info, io.BufferedReader(_Zeros(unpacked_bytes)))
    return dest


def many_files_archive(dest: Path, count: int) -> Path:
    return _tar(dest, [_file(f"m/1/f{i}.txt") for i in range(count)])


def big_file_archive(dest: Path, size: int) -> Path:
    return _tar(dest, [_file("m/1/model.onnx", bytes(range(256)) * (size // 256 + 1))])


def zip_slip_archive(dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        zf.writestr("m/config.pbtxt", 'backend: "python"')
        zf.writestr("../zip-escaped.txt", "pwned")
    return dest
