"""The one YAML loader for untrusted documents (`berth.yaml`, test cases typed in a browser).

`yaml.safe_load` builds only plain types, but it still expands aliases (a few hundred bytes of
nested `&a [*a, *a, ...]` become gigabytes: the "billion laughs"), composes nesting of any
depth recursively (RecursionError on a few kilobytes of `[[[[...`), and reads a document of any
size. PyYAML has no option for any of these, and no maintained library wraps it with them, so
this module adds the three bounds to PyYAML's own safe loader:

- the size is checked on the bytes, before anything is scanned;
- anchors and aliases are refused at the event level, as the parser hands each event to the
  composer, so no node is ever shared or expanded;
- nesting depth is counted on the same events, so composition stops at the limit instead of
  recursing down to it.

Berth's documents need none of YAML's anchors, so refusing them costs nothing legitimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, NodeEvent

from toolkit.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, InputTooLarge, read_bounded


class YamlRefused(yaml.YAMLError):
    """A document refused before or while parsing; `line` is 1-based where one is known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class _EventBounds:
    """Checks each parser event, in order, before the composer builds a node from it."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.depth = 0

    def check(self, event: yaml.Event) -> None:
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, AliasEvent):
            raise YamlRefused(
                f"aliases (*{event.anchor}) are not allowed; write the value out in full.", line
            )
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise YamlRefused(f"anchors (&{event.anchor}) are not allowed.", line)
        if isinstance(event, CollectionStartEvent):
            self.depth += 1
            if self.depth > self.max_depth:
                raise YamlRefused(
                    f"nesting is deeper than {self.max_depth} levels of lists and mappings.", line
                )
        elif isinstance(event, CollectionEndEvent):
            self.depth -= 1


class BoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's pure-Python SafeLoader, checking every event with `_EventBounds`.

    The composer takes every event through `get_event` (after `peek_event`/`check_event`, which
    only look), so checking there sees each event before a node is built from it.
    """

    def __init__(self, stream: str | bytes, *, max_depth: int = MAX_YAML_DEPTH) -> None:
        super().__init__(stream)
        self._bounds = _EventBounds(max_depth)

    def get_event(self):  # type: ignore[no-untyped-def]
        event = super().get_event()
        self._bounds.check(event)
        return event


def _compose_c(text: str | bytes, max_depth: int) -> tuple[Any, yaml.Node | None]:
    """With libyaml: check the event stream first (libyaml's parser, events only), then let
    libyaml compose what passed. Pure-Python PyYAML takes about 10 s for a 1 MB list of
    numbers (a test case's data), libyaml about 1 s."""
    bounds = _EventBounds(max_depth)
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        bounds.check(event)
    loader = yaml.CSafeLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def compose_and_load(
    text: str | bytes,
    *,
    what: str = "the document",
    max_bytes: int = MAX_YAML_BYTES,
    max_depth: int = MAX_YAML_DEPTH,
) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document within the bounds; return its data and its node tree (the
    nodes carry line numbers). Raises `YamlRefused` for a refused document and PyYAML's own
    `YAMLError`s for a malformed one."""
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > max_bytes:
        raise YamlRefused(f"{what} is {size} bytes; the limit is {max_bytes} bytes.")
    if getattr(yaml, "__with_libyaml__", False):
        return _compose_c(text, max_depth)
    loader = BoundedSafeLoader(text, max_depth=max_depth)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


def load(text: str | bytes, **bounds: Any) -> Any:
    """`yaml.safe_load` within the bounds (see `compose_and_load`)."""
    return compose_and_load(text, **bounds)[0]


def load_file(path: Path, *, what: str | None = None, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Read and parse a YAML file, never reading more than `max_bytes` + 1 bytes of it.

    Raises `YamlRefused` for a file over the limit or not UTF-8, and PyYAML's errors for one
    that does not parse."""
    what = what or Path(path).name
    try:
        raw = read_bounded(Path(path), max_bytes, what=what)
    except InputTooLarge as exc:
        raise YamlRefused(exc.message) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlRefused(f"{what} is not UTF-8 text ({exc.reason}).") from exc
    return load(text, what=what, max_bytes=max_bytes)
