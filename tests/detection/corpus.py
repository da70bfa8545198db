"""The detection corpora: attack behaviours and benign workloads, as YAML under corpus/.

An attack behaviour is one technique done for real by a short bash script (written for this
corpus from the ATT&CK technique's description), with the rules expected to alert on it::

    - id: persist-bashrc-append              # unique; the test id
      technique: T1546.004                   # ATT&CK (sub-)technique
      description: what an attacker does and why
      expect: [shell_profile_modified]       # an alert must carry one of these rules
      infra: [web]                           # optional: props from corpus/infra.yaml (a
                                             # payload server, a listener, a lived-in home)
      setup: |                               # optional: more props, as a script; neither is
        ...                                  # part of what is judged
      script: |
        echo 'nohup /tmp/.u &' >> ~/.bashrc

A behaviour the bundle knowingly does not alert on says why in ``gap:`` (it still counts in the
bench's percentage; its test checks that the sensor saw it and that it does not alert, so that
closing the gap means updating the corpus).

A benign workload is the same without ``technique``/``expect``: something fleets do all day,
whose events must not alert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"
TACTICS = ("credential-access", "execution", "persistence", "privilege-escalation",
           "defense-evasion", "discovery", "collection", "exfiltration", "impact",
           "command-and-control")
_ID = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
_TECHNIQUE = re.compile(r"T\d{4}(\.\d{3})?\Z")


@dataclass(frozen=True)
class Behaviour:
    id: str
    tactic: str
    technique: str
    description: str
    expect: tuple[str, ...]
    script: str
    infra: str = ""
    timeout: float = 10.0
    gap: str = ""


@dataclass(frozen=True)
class Workload:
    id: str
    description: str
    script: str
    infra: str = ""
    timeout: float = 60.0


def _infra(where: str, names: object, setup: object) -> str:
    """The props script: the prelude, the named snippets of infra.yaml, then ``setup``."""
    if not names and not setup:
        return ""
    snippets = yaml.safe_load((CORPUS / "infra.yaml").read_text())
    if isinstance(names, str):
        names = [names]
    parts = [snippets["prelude"]]
    for name in names or ():
        if name == "prelude" or name not in snippets:
            raise ValueError(f"{where}: no infra snippet {name!r}")
        parts.append(snippets[name])
    if setup:
        parts.append(str(setup))
    return "\n".join(parts)


def _docs(kind: str) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted((CORPUS / kind).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: must be a mapping")
        out.append((path, doc))
    return out


def attacks() -> list[Behaviour]:
    """Every attack behaviour, checked (ids unique, tactics and techniques well formed)."""
    out: list[Behaviour] = []
    for path, doc in _docs("attacks"):
        tactic = doc.get("tactic")
        if tactic not in TACTICS:
            raise ValueError(f"{path}: tactic {tactic!r} is not one of {TACTICS}")
        for item in doc.get("behaviours") or []:
            where = f"{path}: {item.get('id')!r}"
            unknown = set(item) - {"id", "technique", "description", "expect", "script",
                                   "infra", "setup", "timeout", "tactic", "gap"}
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
            if not _ID.match(str(item.get("id", ""))):
                raise ValueError(f"{where}: id must be lower-case words joined by '-'")
            if not _TECHNIQUE.match(str(item.get("technique", ""))):
                raise ValueError(f"{where}: technique must look like T1059 or T1059.004")
            if not item.get("expect") or not item.get("script"):
                raise ValueError(f"{where}: needs expect and script")
            out.append(Behaviour(
                item["id"], item.get("tactic", tactic), item["technique"],
                " ".join(str(item.get("description", "")).split()), tuple(item["expect"]),
                item["script"], _infra(where, item.get("infra"), item.get("setup")),
                float(item.get("timeout", 10)), " ".join(str(item.get("gap", "")).split())))
    _unique(out)
    return out


def benign() -> list[Workload]:
    out: list[Workload] = []
    for path, doc in _docs("benign"):
        for item in doc.get("workloads") or []:
            where = f"{path}: {item.get('id')!r}"
            unknown = set(item) - {"id", "description", "script", "infra", "setup", "timeout"}
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
            if not _ID.match(str(item.get("id", ""))) or not item.get("script"):
                raise ValueError(f"{where}: needs an id and a script")
            out.append(Workload(item["id"], " ".join(str(item.get("description", "")).split()),
                                item["script"],
                                _infra(where, item.get("infra"), item.get("setup")),
                                float(item.get("timeout", 60))))
    _unique(out)
    return out


def _unique(items: list) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"corpus id {item.id!r} used twice")
        seen.add(item.id)
