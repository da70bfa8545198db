"""The import layers of docs/architecture.md, checked: ``python tests/layering.py`` (run by
``make lint``) prints each reversed import and exits 1.

    cli                      the command line and the demo: may use everything
    sensor    hub            never each other
    common                   the contract: schema, wire format, config loading, keys
    native                   kernel side and ring-buffer reader: imports nothing above

Counted are import statements (lazy ones inside functions too), ``cimport`` lines, and import
strings: a string constant naming a module, as the CLI's lazy command table does.

Why not import-linter: it reads only Python import statements, so it misses ``.pyx`` files
and import strings, which are exactly how the old layering broke.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("native", "common", "sensor", "hub", "cli")
# package -> the packages it may import (besides itself)
ALLOWED: dict[str, frozenset[str]] = {
    "native": frozenset(),
    "common": frozenset({"native"}),
    "sensor": frozenset({"common", "native"}),
    "hub": frozenset({"common"}),
    "cli": frozenset(PACKAGES),
}
_ALTERNATIVES = "|".join(PACKAGES)
_MODULE = re.compile(rf"^threatseer\.({_ALTERNATIVES})(?:\.[A-Za-z_]\w*)*(?::\w+)?$")
_PYX_IMPORT = re.compile(r"^\s*(?:from\s+threatseer\.(\w+)\S*\s+c?import|c?import\s+threatseer\.(\w+))")
_PYX_STRING = re.compile(r"""["'](threatseer\.(\w+)[\w.]*(?::\w+)?)["']""")


def _targets_py(source: str) -> list[tuple[int, str]]:
    """(line, top package) of every threatseer import or import string in Python source."""
    out = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and _MODULE.match(node.value)):
            names = [node.value]
        for name in names:
            parts = name.split(":")[0].split(".")
            if parts[0] == "threatseer" and len(parts) > 1 and parts[1] in PACKAGES:
                out.append((node.lineno, parts[1]))
    return out


def _targets_pyx(source: str) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(source.splitlines(), 1):
        code = line.split("#", 1)[0]
        m = _PYX_IMPORT.match(code)
        if m:
            out.append((n, m.group(1) or m.group(2)))
        for s in _PYX_STRING.finditer(code):
            if _MODULE.match(s.group(1)):
                out.append((n, s.group(2)))
    return [(n, pkg) for n, pkg in out if pkg in PACKAGES]


def violations(root: Path = ROOT) -> list[str]:
    """``path:line: <package> imports threatseer.<other>`` for every import across layers."""
    found = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*")):
            if path.suffix not in (".py", ".pyx", ".pxd", ".pxi"):
                continue
            source = path.read_text(errors="replace")
            targets = _targets_py(source) if path.suffix == ".py" else _targets_pyx(source)
            for line, target in targets:
                if target != pkg and target not in ALLOWED[pkg]:
                    found.append(f"{path.relative_to(root)}:{line}: {pkg} imports "
                                 f"threatseer.{target}")
    return found


if __name__ == "__main__":
    bad = violations(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    for line in bad:
        print(line)
    if bad:
        print(f"{len(bad)} imports break the layers of docs/architecture.md", file=sys.stderr)
    sys.exit(1 if bad else 0)
