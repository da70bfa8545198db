"""The rule model: the one definition of what a rule bundle holds once loaded.

Loading and compiling (query language, Sigma) live beside this module; the hub's engines
consume only these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from threatseer.hub.indicators import Indicator

BASE, LOCAL = "base", "local"


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    description: str = ""
    min_threatseer: str = "0.1.0"
    # "base": a bundle on its own; "local": a layer of overrides stacked on a base bundle
    # (as Falco's falco_rules.local.yaml), compiled together with it.
    layer: str = BASE
    # A local layer's expected base bundle name ("" = any base).
    base: str = ""


@dataclass(frozen=True)
class Layer:
    """The local layer of a stacked bundle: what it is and where it came from."""

    manifest: Manifest
    digest: str
    source: str = ""


# The one response action a rule may carry besides alerting: the hub asks the sensor that
# reported the event to kill its process (hub/response.py; off unless response.kill_rules
# in the hub's config names the rule).
KILL = "kill"
ACTIONS = (KILL,)


@dataclass(frozen=True)
class RiskyProcess:
    name: str  # process.name (or basename of process.executable)
    reason: str
    score: int
    tags: tuple[str, ...] = ()
    action: str = ""


@dataclass(frozen=True)
class SensitiveFile:
    glob: str  # fnmatch-style glob over file.path
    reason: str
    read_score: int
    write_score: int
    tags: tuple[str, ...] = ()
    action: str = ""


@dataclass(frozen=True)
class ExecRule:
    """Execs the sensors' kernels deny at exec, before the program's first instruction:
    of a file under one of ``prefixes`` whose kind is one of ``kinds`` (any, memfd,
    deleted). Enforced only where the hub's response.kill_rules names it."""

    name: str
    description: str
    prefixes: tuple[str, ...]
    kinds: tuple[str, ...]
    source: str = ""  # file:line


@dataclass(frozen=True)
class Iocs:
    sha256: dict[str, str] = field(default_factory=dict)  # hash -> description
    networks: dict[str, str] = field(default_factory=dict)  # IP or CIDR -> description
    domains: dict[str, str] = field(default_factory=dict)  # DNS name (suffix match) -> desc


@dataclass(frozen=True)
class StaticData:
    risky_processes: dict[str, RiskyProcess] = field(default_factory=dict)
    sensitive_files: tuple[SensitiveFile, ...] = ()
    iocs: Iocs = field(default_factory=Iocs)


class RuleSet(Protocol):
    """Compiled dynamic (query and Sigma) rules."""

    def match(self, event: dict[str, Any]) -> list[Indicator]:
        """Indicators of every rule that matches ``event`` (flat ECS dict)."""
        ...

    def __len__(self) -> int: ...


class EmptyRuleSet:
    def match(self, event: dict[str, Any]) -> list[Indicator]:
        return []

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class RuleTest:
    """One embedded test: ``event`` must (``expect_match``) or must not fire ``rule``; for a
    sequence rule, ``events`` in that order must (or must not) complete it."""

    rule: str  # rule name (Sigma rules: title or id)
    event: dict[str, Any]
    expect_match: bool
    source: str = ""  # file:line of the event
    events: tuple[dict[str, Any], ...] = ()


@dataclass
class Bundle:
    manifest: Manifest
    static: StaticData = field(default_factory=StaticData)
    ruleset: RuleSet = field(default_factory=EmptyRuleSet)
    digest: str = ""  # sha256 of the bundle's content
    source: str = ""  # where it was loaded from
    # Rules that could not be loaded, each "file: rule: reason" (never dropped silently).
    unsupported: list[str] = field(default_factory=list)
    # A stack's tests are the local layer's (the base's ran against the base when it was
    # installed); a base bundle's are its own.
    tests: list[RuleTest] = field(default_factory=list)
    # The indicator rule name (threatseer.indicators[].rule) of every rule with an action
    # -> the action: a query rule's name, a Sigma rule's title, risky_process:NAME, a
    # sensitive-file glob, sha256:HASH.
    actions: dict[str, str] = field(default_factory=dict)
    exec_rules: tuple[ExecRule, ...] = ()
    # The local layer compiled into this bundle, or None. ``manifest`` and ``digest`` stay
    # the base's.
    local: Layer | None = None

    def describe(self) -> str:
        """``name version`` of the base, ``+ local name version`` when stacked."""
        text = f"{self.manifest.name} {self.manifest.version}"
        if self.local is not None:
            text += f" + local {self.local.manifest.name} {self.local.manifest.version}"
        return text
