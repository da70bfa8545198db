"""YAML from bundle files with the line of every mapping kept, for file:line errors.

Mappings come back as :class:`LineDict` (a dict with ``.line``); errors raise
:class:`BundleError` naming the file and line.
"""

from __future__ import annotations

from typing import Any

import yaml


class BundleError(ValueError):
    """Everything wrong with a bundle, one ``file:line: [rule 'x':] message`` per line."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


class LineDict(dict):  # type: ignore[type-arg]
    line: int = 0


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict(loader.construct_pairs(node, deep=True))
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# A bare `=` is YAML 1.1's "value" key; in rule files it is the comparison (Falco's
# `comps: [=, in]`), so it reads as the string "=".
_Loader.add_constructor("tag:yaml.org,2002:value",
                        lambda loader, node: loader.construct_scalar(node))


def load_yaml(text: bytes | str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BundleError([f"{source}{line}: invalid YAML: {problem}"]) from None


def line_of(value: Any, default: int = 0) -> int:
    return getattr(value, "line", default)
