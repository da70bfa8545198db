"""Typed YAML config files with errors that point at the file, line and key.

Both daemons describe their config as nested dataclasses; :func:`load` checks a YAML file
against them. A bad file raises :class:`ConfigError` whose one-line message names the file,
the line and the dotted key, which the CLI prints before exiting with status 2.

Secrets stay out of config files, as with Beats: any string may use ``${NAME}`` (the
environment variable; ``${NAME:default}`` when it may be unset; ``$${`` for a literal ``${``),
and a secret setting (a key named in :data:`SECRET_KEYS`, e.g. ``password``, or in the
``SECRET_FIELDS`` of its dataclass, e.g. a webhook's ``url``) may be given as
``<key>_file: /path`` instead, whose content (without the final newline) is the value; so may
a secret key of a free-form mapping (``sasl.password_file`` in librdkafka settings, see
:func:`secret_files`). :func:`redacted` is what ``--print-config`` shows: secrets and passwords
in URLs replaced.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

# Settings holding a secret: they may come from ``<key>_file`` and are redacted when printed.
SECRET_KEYS = frozenset(("password", "api_key", "token", "sasl_password"))
# ... and any key whose name says it holds one (e.g. librdkafka's sasl.password), unless it
# names a file or a path holding it.
_SECRET_NAME = re.compile(r"password|passwd|secret|api_?key|token|passphrase|credential"
                          r"|authorization|\.key\.pem\Z|oauthbearer\.config", re.I)
_NOT_SECRET = re.compile(r"(_file|_path|\.location|_dir)\Z")
_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^@/\s]+@")
_ENV = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")
REDACTED = "<redacted>"


class ConfigError(ValueError):
    """A config file (or value) is unusable; ``str()`` is the one-line message for the user."""

    def __init__(self, source: str, key: str, message: str, line: int | None = None) -> None:
        self.source, self.key, self.line, self.message = source, key, line, message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key (as ``path -> line``)."""


def _compose_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{path}.{key_node.value}" if path else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _compose_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{path}[{i}]"
            lines[key] = item.start_mark.line + 1
            _compose_lines(item, key, lines)


def read_yaml(path: str | Path) -> tuple[Any, dict[str, int]]:
    """Parse a YAML file; return ``(data, lines)`` where ``lines`` maps dotted keys to lines."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, "", f"invalid YAML: {problem}", line) from None
    lines: dict[str, int] = {}
    if node is not None:
        _compose_lines(node, "", lines)
    return data, lines


def load(path: str | Path, schema: type[T]) -> T:
    """Read ``path`` and build the dataclass ``schema`` from it (missing keys keep defaults)."""
    data, lines = read_yaml(path)
    if data is None:
        data = {}
    data = expand_env(data, str(path), lines)
    return from_dict(data, schema, source=str(path), lines=lines)


def expand_env(data: Any, source: str = "<config>", lines: dict[str, int] | None = None,
               key: str = "") -> Any:
    """``data`` with ``${NAME}`` / ``${NAME:default}`` in every string replaced from the
    environment (``$${`` stays a literal ``${``); an unset variable without a default is a
    ConfigError naming the key."""
    lines = lines or {}
    if isinstance(data, dict):
        return {k: expand_env(v, source, lines, f"{key}.{k}" if key else str(k))
                for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, source, lines, f"{key}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def one(m: re.Match[str]) -> str:
        escaped, name, default = m.groups()
        if escaped:
            return m.group(0)[1:]
        value = os.environ.get(name, default)
        if value is None:
            raise ConfigError(source, key, f"environment variable {name} is not set (give a "
                              f"default with ${{{name}:...}}, or write $${{ for a literal)",
                              lines.get(key))
        return value

    return _ENV.sub(one, data)


def _secret_file(path: Any, source: str, key: str, line: int | None) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(source, key, "expected the path of a file holding the secret", line)
    try:
        return Path(path).read_text().removesuffix("\n")
    except OSError as exc:
        raise ConfigError(source, key, f"cannot read {path}: {exc.strerror or exc}",
                          line) from None


def secret_files(mapping: dict[str, Any], source: str = "<config>", prefix: str = "",
                 lines: dict[str, int] | None = None) -> dict[str, Any]:
    """A free-form mapping (librdkafka settings, ...) with each ``<secret key>_file: path``
    replaced by ``<secret key>: <the file's content>`` (:func:`is_secret` names the keys)."""
    lines = lines or {}
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        base = str(k).removesuffix("_file")
        dotted = f"{prefix}.{k}" if prefix else str(k)
        if base != k and is_secret(base):
            if base in mapping:
                raise ConfigError(source, dotted, f"give {base} or {k}, not both",
                                  lines.get(dotted))
            out[base] = _secret_file(v, source, dotted, lines.get(dotted))
        else:
            out[k] = v
    return out


def is_secret(key: str) -> bool:
    """Whether a setting named ``key`` holds a secret (and is redacted when printed)."""
    return key in SECRET_KEYS or (bool(_SECRET_NAME.search(key)) and
                                  not _NOT_SECRET.search(key))


def redacted(data: Any, key: str = "") -> Any:
    """Plain config data as it may be shown: secrets and passwords in URLs replaced."""
    if isinstance(data, dict):
        return {k: (REDACTED if is_secret(str(k)) and v not in ("", None, [], {})
                    else redacted(v, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [redacted(v, key) for v in data]
    if isinstance(data, str):
        return _URL_PASSWORD.sub(rf"\1{REDACTED}@", data)
    return data


def redacted_field(value: Any) -> Any:
    """A whole setting that is secret (a ``SECRET_FIELDS`` entry) as it may be shown: a URL
    keeps its scheme, host and port (a webhook's token is in its path or query), a mapping
    its keys (request headers), anything else is replaced."""
    if isinstance(value, dict):
        return {k: REDACTED for k in value}
    if isinstance(value, str) and "://" in value:
        from urllib.parse import urlsplit

        try:
            url = urlsplit(value)
            port = f":{url.port}" if url.port else ""
            return f"{url.scheme}://{url.hostname or ''}{port}/{REDACTED}"
        except ValueError:
            return REDACTED
    return REDACTED if value not in ("", None) else value


def from_dict(
    data: Any, schema: type[T], source: str = "<config>", lines: dict[str, int] | None = None,
    prefix: str = "",
) -> T:
    """Build dataclass ``schema`` from plain data, checking keys and types strictly."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise ConfigError(source, prefix or "(top level)", "expected a mapping", lines.get(prefix))
    fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(schema)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        name = str(key).replace("-", "_")
        base = name.removesuffix("_file")
        secret = base in SECRET_KEYS or base in getattr(schema, "SECRET_FIELDS", ())
        if base != name and secret and base in fields and name not in fields:
            if base in data:
                raise ConfigError(source, dotted, f"give {base} or {name}, not both",
                                  lines.get(dotted))
            kwargs[base] = _secret_file(value, source, dotted, lines.get(dotted))
            continue
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(source, dotted, f"unknown key (known: {known})", lines.get(dotted))
        kwargs[name] = _convert(value, hints[name], source, dotted, lines)
    try:
        obj = schema(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, prefix, str(exc), lines.get(prefix)) from None
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            key, _, message = str(exc).partition(": ")
            dotted = f"{prefix}.{key}" if prefix else key
            raise ConfigError(source, dotted, message or str(exc), lines.get(dotted)) from None
    return obj


def _convert(value: Any, hint: Any, source: str, key: str, lines: dict[str, int]) -> Any:
    line = lines.get(key)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, source, key, lines)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(source, key, " or ".join(errors), line)
    if dataclasses.is_dataclass(hint):
        return from_dict(value, hint, source, lines, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected a list, got {_kind(value)}", line)
        (item,) = args or (Any,)
        return [_convert(v, item, source, f"{key}[{i}]", lines) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {_kind(value)}", line)
        _k, item = args or (str, Any)
        value = secret_files(value, source, key, lines)  # e.g. kafka: {sasl.password_file: ..}
        return {str(k): _convert(v, item, source, f"{key}.{k}", lines) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(source, key, f"expected {hint.__name__}, got a boolean", line)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(source, key, f"expected {hint.__name__}, got {_kind(value)}", line)
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config dataclass (for ``config show`` and the docs)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def reference(schema: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, default, description)`` for every key of a config dataclass.

    Descriptions are the ``#`` comment lines written just above each field in the source,
    so the code stays the one place a key is documented (docs/configuration.md is generated
    from this by ``docs/generate.py``).
    """
    import inspect

    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(schema).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
        elif ":" in stripped and not stripped.startswith(("def ", "class ", "@", '"')):
            comments[stripped.split(":", 1)[0].strip()] = " ".join(pending)
            pending = []
        else:
            pending = []
    rows: list[tuple[str, str, str]] = []
    defaults = schema()
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(defaults, f.name)
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows.append((key, "", comments.get(f.name, "")))
            rows.extend(reference(hint, key))
            continue
        item = (typing.get_args(hint) or (None,))[0]
        if typing.get_origin(hint) is list and dataclasses.is_dataclass(item):
            rows.append((key, "[]", comments.get(f.name, "")))
            rows.extend(reference(item, f"{key}[]"))
            continue
        shown = yaml.safe_dump(to_dict(value), default_flow_style=True, width=1000).strip()
        shown = shown.removesuffix("...").strip()
        rows.append((key, shown, comments.get(f.name, "")))
    return rows
