"""The bounded YAML loader: no anchors or aliases, bounded size and depth, with or without
libyaml."""

import time

import pytest
import yaml

from toolkit import yamlsafe
from toolkit.yamlsafe import YamlRefused

ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request, monkeypatch):
    """Both code paths: libyaml where installed, PyYAML's pure-Python parser otherwise."""
    if request.param == "libyaml":
        if not yaml.__with_libyaml__:
            pytest.skip("PyYAML is built without libyaml here")
    else:
        monkeypatch.setattr(yaml, "__with_libyaml__", False)
    return request.param


def test_plain_documents_load_as_safe_load_does(loader):
    text = "model: m\ntests:\n  - name: a\n    inputs: {X: {shape: [1, 2], data: [1, 2.5]}}\n"
    assert yamlsafe.load(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        (ALIAS_BOMB, "anchors (&a) are not allowed", 1),
        ("x: 1\ny: *nowhere\n", "aliases (*nowhere) are not allowed", 2),
        ("x: !!str &s text\n", "anchors (&s) are not allowed", 1),
        ("x:\n  y: " + "[" * 40 + "]" * 40, "nesting is deeper than 32", 2),
    ],
)
def test_refused_documents_name_the_reason_and_line(loader, text, message, line):
    started = time.monotonic()
    with pytest.raises(YamlRefused) as info:
        yamlsafe.load(text)
    assert message in info.value.message and info.value.line == line
    assert time.monotonic() - started < 1


def test_nesting_at_the_limit_loads(loader):
    assert yamlsafe.load("[" * 32 + "]" * 32, max_depth=32) is not None


def test_very_deep_nesting_is_refused_without_recursing(loader):
    with pytest.raises(yaml.YAMLError, match="nesting"):
        yamlsafe.load("x: " + "[" * 50_000 + "]" * 50_000)


def test_size_is_checked_before_parsing():
    with pytest.raises(YamlRefused, match="is 2049 bytes; the limit is 2048 bytes"):
        yamlsafe.load("[" + "1," * 1023 + "1]", max_bytes=2048, what="berth.yaml")


def test_load_file_reads_at_most_the_limit(tmp_path):
    path = tmp_path / "berth.yaml"
    path.write_bytes(b"model: m\n" + b"#" * 4096)
    with pytest.raises(YamlRefused, match="berth.yaml is 4105 bytes"):
        yamlsafe.load_file(path, max_bytes=4096)
    path.write_bytes(b"model: caf\xe9\n")
    with pytest.raises(YamlRefused, match="not UTF-8"):
        yamlsafe.load_file(path)
    path.write_text("model: m\n")
    assert yamlsafe.load_file(path) == {"model": "m"}


def test_python_tags_stay_refused(loader):
    with pytest.raises(yaml.constructor.ConstructorError):
        yamlsafe.load("x: !!python/object/apply:os.system [true]")
