"""``threatseer fields``: every event field rules and queries can use, with its type and meaning.

As ``falco --list``: the listing comes from the schema itself (``common/ecs.py`` FIELDS), so it
is never out of step with what the sensor sends and the hub checks. It needs only the base
install.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap

import click

from threatseer.common import ecs

# Spellings the query language accepts besides the schema's own names (pure Python, no hub
# extra needed).
from threatseer.hub.rules.query.parser import ALIASES


def rows(prefixes: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    """``(name, type, description)`` of every field whose name starts with one of
    ``prefixes`` (all fields when none); lists are typed ``keyword[]``, families end in ``*``."""
    return [(name, f.type + ("[]" if f.array else ""), f.description)
            for name, f in ecs.FIELDS.items()
            if not prefixes or name.startswith(prefixes)]


@click.command("fields")
@click.argument("prefixes", nargs=-1, metavar="[PREFIX]...")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array of {name, type, array, description}.")
@click.option("--markdown", is_flag=True, help="A Markdown table.")
def fields_command(prefixes: tuple[str, ...], as_json: bool, markdown: bool) -> None:
    """Print every event field with its type and description (from the schema).

    PREFIX limits the list, e.g. `threatseer fields process. file.`. A type ending in []
    holds a list: a rule's test on it holds when any element matches. A name ending in *
    stands for a family of fields.
    """
    found = rows(prefixes)
    if not found:
        raise click.ClickException(f"no field starts with {' or '.join(map(repr, prefixes))}"
                                   " (`threatseer fields` lists them all)")
    if as_json:
        click.echo(json.dumps([{"name": n, "type": t.removesuffix("[]"), "array": t.endswith(
            "[]"), "description": d} for n, t, d in found], indent=1))
        return
    if markdown:
        click.echo("| field | type | description |\n| --- | --- | --- |")
        for name, kind, text in found:
            click.echo(f"| `{name}` | {kind} | {text} |")
        return
    name_w = max(len(n) for n, _, _ in found)
    kind_w = max(len(k) for _, k, _ in found)
    indent = name_w + kind_w + 4
    # Wrapped to a terminal's width; one line per field into a pipe (for grep).
    width = max(shutil.get_terminal_size((120, 24)).columns, indent + 30) \
        if sys.stdout.isatty() else 1 << 20
    click.echo(f"{'FIELD':<{name_w}}  {'TYPE':<{kind_w}}  DESCRIPTION")
    for name, kind, text in found:
        lines = textwrap.wrap(text, width - indent) or [""]
        click.echo(f"{name:<{name_w}}  {kind:<{kind_w}}  {lines[0]}")
        for more in lines[1:]:
            click.echo(" " * indent + more)
    aliases = [f"{a} = {n}" for a, n in ALIASES.items() if not prefixes or a.startswith(prefixes)
               or n.startswith(prefixes)]
    if aliases:
        click.echo(f"\nAliases in rule conditions: {', '.join(aliases)}")
