"""config.pbtxt parsing: valid configs parse, broken ones report where they break."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.modelconfig import (
    ConfigError,
    format_model_config,
    parse_model_config,
    read_model_config,
)


def test_demo_configs_parse(demo_repository: Path) -> None:
    ensemble = read_model_config(demo_repository / "demo_ensemble" / "config.pbtxt")
    assert ensemble.platform == "ensemble"
    assert ensemble.max_batch_size == 8
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "demo_preprocess",
        "demo_classifier",
    ]
    classifier = read_model_config(demo_repository / "demo_classifier" / "config.pbtxt")
    assert classifier.platform == "onnxruntime_onnx"
    assert [(i.name, list(i.dims)) for i in classifier.input] == [("FEATURES", [4])]
    assert [(o.name, list(o.dims)) for o in classifier.output] == [("PROBABILITIES", [3])]


def test_format_round_trips() -> None:
    config = parse_model_config('name: "m" backend: "python" max_batch_size: 4')
    assert parse_model_config(format_model_config(config)) == config


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ('name: "m"\nbackend: "python"\nbogus_field: 3\n', 3, 1, "bogus_field"),
        (
            'name: "m"\ninput [\n  { name: "x" data_type: TYPE_NOPE dims: [ 4 ] }\n]\n',
            3,
            26,
            "TYPE_NOPE",
        ),
        ('name: "m"\nmax_batch_size: "eight"\n', 2, 17, "integer"),
        ('name: "m"\ninput [ { name: "x" \n', 2, 17, "Expected"),
    ],
)
def test_parse_error_reports_line_and_column(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_config(text)
    error = info.value
    assert (error.line, error.column) == (line, column)
    assert words in error.message
    assert not error.message.startswith("'")
    # The message is plain: the position is in the fields and in str(), not repeated.
    assert not error.message.startswith(f"{line}:")
    assert str(error).startswith(f"line {line}, column {column}: ")


def test_undecodable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_bytes(b'name: "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_model_config(path)


def test_config_tools_import_neither_grpc_nor_numpy_and_share_the_config_classes() -> None:
    # The data plane's staging processes use these modules; grpc and numpy would add about
    # 30 MiB to each of them for nothing they use.
    script = """
import sys
import toolkit.archive, toolkit.modelconfig, toolkit.repository, toolkit.shim
heavy = sorted({"grpc", "numpy", "boto3"} & set(sys.modules))
assert not heavy, heavy
from toolkit.modelconfig import model_config_pb2 as ours
import tritonclient.grpc
assert tritonclient.grpc.model_config_pb2 is ours
assert tritonclient.grpc.service_pb2.ModelConfigResponse().config.__class__ is ours.ModelConfig
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
