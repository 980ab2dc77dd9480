"""Load YAML and remember on which line each value sits, to point problems at their line."""

from typing import Any

import yaml

from toolkit.yamlsafe import YamlRefused, compose_and_load

Path_ = tuple[str | int, ...]


class YamlError(Exception):
    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.message = message
        self.line = line


def load_with_lines(text: str, *, what: str = "berth.yaml") -> tuple[Any, dict[Path_, int]]:
    """Parse `text` with the bounded safe loader (size, depth, no aliases) and return the data
    and {path: line} for every node."""
    try:
        data, node = compose_and_load(text, what=what)
    except YamlRefused as exc:
        raise YamlError(exc.message, exc.line) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        raise YamlError(message, mark.line + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise YamlError(str(exc), None) from exc
    lines: dict[Path_, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines)


def line_of(lines: dict[Path_, int] | None, path: Path_) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one."""
    if not lines:
        return None
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]
