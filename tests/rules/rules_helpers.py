"""Helpers for the rules tests: writing small bundles to disk."""

from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = REPO / "rules" / "default"


def write_bundle(root: Path, files: dict[str, str], version: str = "1.0.0") -> Path:
    """A bundle directory with a manifest plus ``files`` (dedented)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {"manifest.yaml": f"name: test\nversion: '{version}'\n", **files}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


SIMPLE_RULES = """\
lists:
  shells: [bash, sh]
macros:
  spawned: event.action = exec
rules:
  - rule: shell_from_web
    description: web server spawns a shell
    condition: spawned and process.name in shells and process.parent.name = nginx
    score: 70
    tags: [attack.t1505.003]
    output: "{process.parent.name} -> {process.name} ({process.args})"
    exceptions:
      - name: health
        fields: [host.name, process.args]
        values: [[web1, /srv/health.sh]]
    tests:
      match:
        - {event.action: exec, process.name: sh, process.parent.name: nginx}
      no_match:
        - {event.action: exec, process.name: sh, process.parent.name: sshd}
"""


def build(root: Path, version: str, rule_score: int = 70, broken: bool = False) -> bytes:
    """A built archive of a small bundle at ``version`` (optionally with a failing test)."""
    from threatseer.hub.rules.archive import build_archive, read_dir

    text = SIMPLE_RULES.replace("score: 70", f"score: {rule_score}")
    if broken:
        text = text.replace("process.parent.name: sshd}", "process.parent.name: nginx}")
    src = write_bundle(root / f"src-{version}-{rule_score}-{broken}", {"rules/main.yaml": text},
                       version=version)
    return build_archive(read_dir(src))
