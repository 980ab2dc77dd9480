"""Bounds on untrusted input: sizes checked before a file is parsed, tensor sizes a model
may declare, and the one rule for a model file named by `default_model_filename`.

Everything a user uploads (an archive's `berth.yaml`, its `config.pbtxt` files, test cases) is
hostile until proven otherwise. The parsers behind these files (PyYAML, protobuf's text format)
hold the whole document and its parse tree in memory, so the size is checked first, from the
bytes on disk, and the file is never read past its limit.
"""

from __future__ import annotations

import os
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

# berth.yaml (and test cases typed into the browser): size and nesting depth.
MAX_YAML_BYTES = 1 * MIB
MAX_YAML_DEPTH = 32
# config.pbtxt: real configs are a few kilobytes; 1 MiB leaves room for long ensembles.
MAX_CONFIG_BYTES = 1 * MIB
# Tensors a config (or the ONNX graph it defers to) declares. The test step allocates every
# input at its declared shape (-1 counted as 1) for its smoke inference, so an input larger
# than this is refused at validation instead of failing the test step with MemoryError.
MAX_TENSOR_DIMS = 16
MAX_TENSOR_ELEMENTS = 2**27
MAX_TENSOR_BYTES = 512 * MIB
# Test cases per version (berth.yaml's plus those given at registration).
MAX_TEST_CASES = 500

# Bytes per element of each KServe v2 datatype; BYTES counts one object pointer per element,
# what the test step's numpy array of `bytes` objects costs at the least.
DATATYPE_BYTES = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "BF16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
    "BYTES": 8,
}


class InputTooLarge(ValueError):
    """A file or value over its limit; `message` says which limit, in words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def read_bounded(path: Path, limit: int, *, what: str) -> bytes:
    """The bytes of `path`, reading at most `limit` + 1 of them; `InputTooLarge` beyond."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
        if len(data) > limit:
            size = os.fstat(handle.fileno()).st_size
            raise InputTooLarge(f"{what} is {size} bytes; the limit is {limit} bytes.")
    return data


def tensor_size_problem(
    name: str, datatype: str, dims: list[int], *, kind: str = "input", check_size: bool = True
) -> str | None:
    """Why a declared tensor is too large to test or serve here, or None.

    -1 (a variable dimension) counts as 1: that is the shape the smoke inference sends.
    `check_size=False` checks the rank only.
    """
    if len(dims) > MAX_TENSOR_DIMS:
        return f"{kind.capitalize()} {name!r} has {len(dims)} dims; the limit is {MAX_TENSOR_DIMS}."
    if not check_size:
        return None
    elements = 1
    for dim in dims:
        elements *= max(int(dim), 1)
    if elements > MAX_TENSOR_ELEMENTS:
        return (
            f"{kind.capitalize()} {name!r} with dims {list(dims)} holds {elements} elements; "
            f"the limit is {MAX_TENSOR_ELEMENTS} per tensor."
        )
    nbytes = elements * DATATYPE_BYTES.get(datatype, 8)
    if nbytes > MAX_TENSOR_BYTES:
        return (
            f"{kind.capitalize()} {name!r} with dims {list(dims)} ({datatype}) takes {nbytes} "
            f"bytes; the limit is {MAX_TENSOR_BYTES} bytes per tensor."
        )
    return None


def model_filename_problem(filename: str) -> str | None:
    """Why `default_model_filename` cannot name a file of the model's version folder, or None.

    Triton joins it to `<model>/<version>/`; a separator, `..` or an absolute path would make
    the backend (or the data plane's ONNX shim) open a file outside the package.
    """
    if not filename:
        return None
    if "\x00" in filename:
        return "default_model_filename contains a NUL byte."
    if "/" in filename or "\\" in filename or os.path.isabs(filename):
        return (
            f"default_model_filename {filename!r} must be a plain file name inside the version "
            "folder, without '/' or an absolute path."
        )
    if filename in (".", ".."):
        return f"default_model_filename {filename!r} does not name a file."
    return None


def resolves_inside(path: Path, folder: Path) -> bool:
    """Whether `path`, links resolved, lies inside `folder` (links resolved too)."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
