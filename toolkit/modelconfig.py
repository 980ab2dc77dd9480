"""Triton `config.pbtxt` parsing with the model_config protobuf that tritonclient ships.

https://github.com/triton-inference-server/common/blob/main/protobuf/model_config.proto
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from google.protobuf import text_format

from toolkit.limits import MAX_CONFIG_BYTES, InputTooLarge, read_bounded


def _import_model_config_pb2() -> ModuleType:
    """tritonclient's generated `model_config_pb2`, without running `tritonclient.grpc`'s
    `__init__`: that imports grpc and numpy (about 28 MiB of resident memory), which reading
    a config never uses, in every process that stages packages.

    The module is registered under its own name, so a later `import tritonclient.grpc` (the
    gateway's repository client) finds it there and both use the same classes."""
    name = "tritonclient.grpc.model_config_pb2"
    if name in sys.modules or "tritonclient.grpc" in sys.modules:
        return importlib.import_module(name)
    package = importlib.util.find_spec("tritonclient")
    if package is None or not package.submodule_search_locations:
        raise ImportError("tritonclient is not installed (pip install 'tritonclient[grpc]')")
    path = Path(next(iter(package.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


model_config_pb2 = _import_model_config_pb2()

ModelConfig = model_config_pb2.ModelConfig

# protobuf prefixes its messages with "line:column : " (or "line:column :" ).
_POSITION_PREFIX = re.compile(r"^\s*\d+:\d+\s*:\s*")


class ConfigError(ValueError):
    """A config.pbtxt that does not parse, with the 1-based line and column protobuf reports."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        if self.column is None:
            return f"line {self.line}: {self.message}"
        return f"line {self.line}, column {self.column}: {self.message}"


def parse_model_config(text: str) -> model_config_pb2.ModelConfig:
    """Parse config.pbtxt text into a `ModelConfig`; raise `ConfigError` with its position."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line = exc.GetLine()
        column = exc.GetColumn()
        message = _POSITION_PREFIX.sub("", str(exc))
        # Some messages quote the offending source line first; the line number says it.
        lines = text.splitlines()
        if line and 0 < line <= len(lines):
            message = message.removeprefix(f"'{lines[line - 1]}': ")
        message = message or "invalid model configuration"
        raise ConfigError(message, line, column) from exc
    return config


def read_model_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse the config.pbtxt at `path` (undecodable bytes are a `ConfigError` too)."""
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES, what="config.pbtxt").decode("utf-8")
    except InputTooLarge as exc:
        raise ConfigError(exc.message) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config is not UTF-8 text ({exc.reason})") from exc
    return parse_model_config(text)


def format_model_config(config: model_config_pb2.ModelConfig) -> str:
    """The text form of `config`, as Triton reads it from config.pbtxt."""
    return text_format.MessageToString(config)
