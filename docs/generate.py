"""Write the reference pages that are generated from the code: configuration and events.

The config dataclasses (with the comment above each field) and common/ecs.py are the one
place keys and fields are defined; this keeps docs/configuration.md and docs/events.md in
step with them. ``tests/test_docs_current.py`` fails when a page is stale.

Run: .venv/bin/python docs/generate.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from threatseer.common import configfile, ecs
from threatseer.hub.config import HubConfig
from threatseer.sensor.config import SensorConfig

DOCS = Path(__file__).resolve().parent


def _table(schema: type) -> list[str]:
    lines = ["| key | default | what it is for |", "| --- | --- | --- |"]
    for key, default, text in configfile.reference(schema):
        default = default.replace("|", "\\|")
        if len(default) > 60:
            default = default[:57] + "..."
        lines.append(f"| `{key}` | `{default}` | {text} |" if default else f"| `{key}` | | {text} |")
    return lines


def configuration() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the code by `docs/generate.py`; every key with its default.",
        "Config files are YAML; a key left out keeps its default. A bad file is reported on one",
        "line as `file:line: key: problem` and the command exits with status 2.",
        "",
        "## Sensor (`threatseer sensor -c sensor.yaml`)",
        "",
        "`threatseer sensor --print-config` prints the effective values. SIGHUP re-reads the file;",
        "`sensitive_paths` apply to the kernel filter without reloading the BPF programs.",
        "",
        *_table(SensorConfig),
        "",
        "## Hub (`threatseer hub -c hub.yaml`)",
        "",
        "`threatseer hub --print-config` prints the effective values.",
        "",
        *_table(HubConfig),
        "",
    ]
    return "\n".join(out)


def events() -> str:
    out = [
        "# Event reference",
        "",
        "Generated from `common/ecs.py` by `docs/generate.py`. Events are flat dicts keyed by",
        "dotted [ECS](https://www.elastic.co/guide/en/ecs/current/) names on the wire and in the",
        "rule engines; outputs write them as nested ECS documents.",
        "",
        "## Kinds of event",
        "",
        "| event.action | event.category | event.type | required fields |",
        "| --- | --- | --- | --- |",
    ]
    for action, (category, types) in ecs.CATEGORIES.items():
        required = ", ".join(f"`{f}`" for f in ecs.REQUIRED.get(action, ()))
        out.append(f"| `{action}` | {', '.join(category)} | {', '.join(types)} | {required} |")
    out += ["", "Every event also carries " + ", ".join(f"`{f}`" for f in ecs.COMMON) + ".",
            "", "## Fields", "", "Types are Elasticsearch's (the index template maps each field so); `[]`"
            " marks a list.", "", "| field | type | meaning |", "| --- | --- | --- |"]
    out += [f"| `{name}` | {f.type}{'[]' if f.array else ''} | {f.description} |"
            for name, f in ecs.FIELDS.items()]
    out.append("")
    return "\n".join(out)


PAGES = {"configuration.md": configuration, "events.md": events}


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for name, build in PAGES.items():
        text = build()
        path = DOCS / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale, run docs/generate.py: " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
