"""A local rules layer: a site's own overrides of the active bundle, as Falco's
``falco_rules.local.yaml``.

A local layer is a bundle whose manifest says ``layer: local`` (and, optionally, ``base:``
the base bundle's name). It is compiled together with the base (``bundle.load_stack``), its
entries applied over the base's in the order Falco applies a later rules file:

lists (``lists:``)
    ``name: [items]`` defines a list, or replaces the base's list of that name;
    ``name: {items: [...], override: append}`` adds items to the base's list
    (``override: replace`` replaces it).

macros (``macros:``)
    ``name: condition`` defines or replaces a macro;
    ``name: {condition: "or ...", override: append}`` extends the base's macro: the text
    starts with ``and`` or ``or`` and is joined to the base's as ``(base) or (text)``.

rules (``rules:``)
    ``{rule: NAME, enabled: false}`` turns a rule of the base (query or Sigma, by title or
    id) off, or on;
    ``{rule: NAME, override: {KEY: append|replace}, KEY: ...}`` changes the named keys only:
    ``condition`` (append: ``and ...``/``or ...``, or replace), ``exceptions`` and ``tags``
    (append or replace), ``score``, ``output``, ``description`` (replace). As in Falco, a key
    given without its ``override`` entry is an error. Sigma rules take ``score``,
    ``exceptions`` and ``enabled``;
    a rule with a ``condition`` and no ``override`` defines a new rule, or replaces the base's
    rule of that name whole.

Its ``tests`` (top level or per rule) run against the stack. ``sigma: {exclude, overrides}``
adds to the base's Sigma tuning; ``static.yaml`` adds risky processes, sensitive files and
IOCs (an entry with the name or glob of the base's replaces it); ``sigma/`` adds Sigma rules.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from threatseer.hub.rules.model import Iocs, StaticData
from threatseer.hub.rules.yamlfile import LineDict, line_of

if TYPE_CHECKING:
    from threatseer.hub.rules.bundle import _Loader

APPEND, REPLACE = "append", "replace"
# What an override may do to each key of a rule (Falco's choices for the equivalent keys).
RULE_OVERRIDES: dict[str, tuple[str, ...]] = {
    "condition": (APPEND, REPLACE),
    "exceptions": (APPEND, REPLACE),
    "tags": (APPEND, REPLACE),
    "score": (REPLACE,),
    "output": (REPLACE,),
    "description": (REPLACE,),
    "enabled": (REPLACE,),
}
SIGMA_OVERRIDES = ("score", "exceptions", "enabled")
_JOIN = re.compile(r"\s*(and|or)\s+(.*)\Z", re.S | re.I)


def apply(loader: _Loader, sigma_names: set[str]) -> None:
    """Merge the local layer's collected entries into the loader's base entries, recording
    every problem at the local file and line."""
    _lists(loader)
    _macros(loader)
    _rules(loader, sigma_names)
    _sigma_section(loader)


def _override(loader: _Loader, rel: str, line: int, value: Any, name: str) -> str | None:
    if value not in (APPEND, REPLACE):
        loader.error(rel, line, f"{name}: override must be {APPEND} or {REPLACE}, "
                     f"not {value!r}")
        return None
    return str(value)


def _lists(loader: _Loader) -> None:
    seen: set[str] = set()
    for rel, line, name, value in loader.local_lists:
        if name in seen:
            loader.error(rel, line, f"list {name!r} defined twice in the local layer")
            continue
        seen.add(name)
        if isinstance(value, list):
            loader.lists[name] = tuple(value)
            continue
        if not isinstance(value, dict) or not isinstance(value.get("items"), list):
            loader.error(rel, line, f"list {name!r}: a list, or {{items: [...], override: "
                         f"append}}")
            continue
        for key in sorted(set(value) - {"items", "override"}):
            loader.error(rel, line, f"list {name!r}: unknown key {key!r}")
        how = _override(loader, rel, line, value.get("override", REPLACE), f"list {name!r}")
        if how == APPEND:
            if name not in loader.lists:
                loader.error(rel, line, f"list {name!r}: no such list in the base to append "
                             f"to")
                continue
            loader.lists[name] = (*loader.lists[name], *value["items"])
        elif how == REPLACE:
            loader.lists[name] = tuple(value["items"])


def _joined(base: str, text: str) -> tuple[str, str] | None:
    """``(base) OP (rest)`` for an appended condition ``OP rest``, or None when ``text`` does
    not start with ``and``/``or``."""
    m = _JOIN.match(text)
    if not m:
        return None
    return f"({base}) {m.group(1).lower()} ({m.group(2)})", m.group(1).lower()


def _macros(loader: _Loader) -> None:
    seen: set[str] = set()
    for rel, line, name, value in loader.local_macros:
        where = loader.where(rel, line)
        if name in seen:
            loader.error(rel, line, f"macro {name!r} defined twice in the local layer")
            continue
        seen.add(name)
        if isinstance(value, str | int | float | bool) and not isinstance(value, dict):
            loader.macro_text[name] = (str(value), where)
            continue
        if not isinstance(value, dict) or not isinstance(value.get("condition"), str):
            loader.error(rel, line, f"macro {name!r}: a condition, or {{condition: 'or ...', "
                         f"override: append}}")
            continue
        for key in sorted(set(value) - {"condition", "override"}):
            loader.error(rel, line, f"macro {name!r}: unknown key {key!r}")
        how = _override(loader, rel, line, value.get("override", REPLACE), f"macro {name!r}")
        if how == REPLACE:
            loader.macro_text[name] = (value["condition"], where)
        elif how == APPEND:
            if name not in loader.macro_text:
                loader.error(rel, line, f"macro {name!r}: no such macro in the base to append "
                             f"to")
                continue
            joined = _joined(loader.macro_text[name][0], value["condition"])
            if joined is None:
                loader.error(rel, line, f"macro {name!r}: an appended condition starts with "
                             f"'and' or 'or'")
                continue
            loader.macro_text[name] = (joined[0], where)


def _rules(loader: _Loader, sigma_names: set[str]) -> None:
    position = {doc.get("rule"): i for i, (_, doc) in enumerate(loader.rule_docs)
                if isinstance(doc.get("rule"), str)}
    seen: set[str] = set()
    for rel, doc in loader.local_rule_docs:
        line = line_of(doc)
        name = doc.get("rule")
        if not isinstance(name, str) or not name:
            loader.error(rel, line, "rule: a name is required")
            continue
        if name in seen:
            loader.error(rel, line, "defined twice in the local layer", name)
            continue
        seen.add(name)
        override = doc.get("override")
        keys = set(doc) - {"rule", "override", "tests"}
        if override is None and "condition" in doc:  # a new rule, or the base's replaced
            if name in position:
                loader.rule_docs[position[name]] = (rel, doc)
            else:
                position[name] = len(loader.rule_docs)
                loader.rule_docs.append((rel, doc))
            continue
        if override is not None and not isinstance(override, dict):
            loader.error(rel, line, "override must map keys to append or replace", name)
            continue
        changes = dict(override or {})
        if override is None:
            if keys != {"enabled"}:
                given = ", ".join(sorted(keys)) or "nothing"
                loader.error(rel, line, f"changes {given} without override: name each key "
                             f"in override: {{KEY: append|replace}}, or give a condition to "
                             f"define the rule", name)
                continue
            changes = {"enabled": REPLACE}
        elif "enabled" in doc:
            changes.setdefault("enabled", REPLACE)
        if not _changes_ok(loader, rel, line, name, doc, changes):
            continue
        if name in position:
            i = position[name]
            base_rel, base_doc = loader.rule_docs[i]
            merged = _merge_rule(loader, rel, doc, base_doc, changes, name)
            if merged is not None:
                # the merged rule is reported where the local layer shaped it
                loader.rule_docs[i] = (rel, merged) if set(changes) - {"enabled"} else (
                    base_rel, merged)
        elif name in sigma_names:
            _sigma_rule(loader, rel, doc, changes, name)
        else:
            loader.error(rel, line, "no such rule in the base bundle (query rules by name, "
                         "Sigma rules by title or id)", name)


def _changes_ok(loader: _Loader, rel: str, line: int, name: str, doc: dict[str, Any],
                changes: dict[str, Any]) -> bool:
    ok = True
    for key, how in changes.items():
        allowed = RULE_OVERRIDES.get(key)
        if allowed is None:
            loader.error(rel, line, f"override: {key!r} cannot be overridden (known: "
                         f"{', '.join(RULE_OVERRIDES)})", name)
            ok = False
        elif how not in allowed:
            loader.error(rel, line, f"override: {key} can be {' or '.join(allowed)}, not "
                         f"{how!r}", name)
            ok = False
        elif key not in doc:
            loader.error(rel, line, f"override names {key!r}, which the rule does not give",
                         name)
            ok = False
    for key in sorted(set(doc) - {"rule", "override", "tests"} - set(changes)):
        loader.error(rel, line, f"{key!r} is given without override: {{{key}: append|"
                     f"replace}}", name)
        ok = False
    return ok


def _merge_rule(loader: _Loader, rel: str, doc: LineDict, base: LineDict,
                changes: dict[str, str], name: str) -> LineDict | None:
    merged = LineDict(base)
    merged.line = line_of(doc) if set(changes) - {"enabled"} else line_of(base)
    merged.pop("tests", None)  # the base's tests ran against the base
    for key, how in changes.items():
        value = doc[key]
        if how == REPLACE:
            merged[key] = value
        elif key == "condition":
            joined = _joined(str(base.get("condition") or "true"), str(value))
            if joined is None:
                loader.error(rel, line_of(doc), "an appended condition starts with 'and' or "
                             "'or'", name)
                return None
            merged[key] = joined[0]
        elif key in ("exceptions", "tags"):
            if not isinstance(value, list):
                loader.error(rel, line_of(doc), f"{key} must be a list", name)
                return None
            merged[key] = [*(base.get(key) or []), *value]
    return merged


def _sigma_rule(loader: _Loader, rel: str, doc: LineDict, changes: dict[str, str],
                name: str) -> None:
    for key in changes:
        if key not in SIGMA_OVERRIDES:
            loader.error(rel, line_of(doc), f"a Sigma rule takes {', '.join(SIGMA_OVERRIDES)} "
                         f"only, not {key!r}", name)
            return
    tune = LineDict({k: doc[k] for k in changes})
    tune.line = line_of(doc)
    tune.replace_exceptions = changes.get("exceptions") == REPLACE  # type: ignore[attr-defined]
    loader.sigma_tunes.setdefault(name, []).append((rel, tune))


def _sigma_section(loader: _Loader) -> None:
    if loader.local_sigma_doc is None:
        return
    rel, doc = loader.local_sigma_doc
    for key in sorted(set(doc) - {"exclude", "overrides"}):
        loader.error(rel, line_of(doc), f"sigma: unknown key {key!r}")
    if doc.get("exclude"):
        loader.sigma_excludes.append((rel, line_of(doc), str(doc["exclude"])))
    overrides = doc.get("overrides") or {}
    if not isinstance(overrides, dict):
        loader.error(rel, line_of(doc), "sigma.overrides must be a mapping")
        return
    for name, o in overrides.items():
        if not isinstance(o, dict):
            loader.error(rel, line_of(overrides), "sigma.overrides: each must be a mapping",
                         str(name))
            continue
        if not isinstance(o, LineDict):
            o = LineDict(o)
            o.line = line_of(overrides)
        loader.sigma_tunes.setdefault(str(name), []).append((rel, o))


def merge_static(base: StaticData, local: StaticData) -> StaticData:
    """The base's static data with the local layer's added: a risky process of the same name
    or a sensitive file of the same glob replaces the base's; IOCs are added (the local
    description wins)."""
    risky = {**base.risky_processes, **local.risky_processes}
    globs = {f.glob: f for f in base.sensitive_files}
    globs.update({f.glob: f for f in local.sensitive_files})
    iocs = Iocs({**base.iocs.sha256, **local.iocs.sha256},
                {**base.iocs.networks, **local.iocs.networks},
                {**base.iocs.domains, **local.iocs.domains})
    return StaticData(risky, tuple(globs.values()), iocs)
