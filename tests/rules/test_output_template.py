"""A rule's ``output`` template: ``{dotted.field}`` placeholders filled from the event."""

from __future__ import annotations

from threatseer.hub.rules.ruleset import render


def test_placeholders_are_filled_lists_joined_and_absent_fields_marked() -> None:
    ev = {"process.name": "cat", "file.path": "/etc/shadow", "process.args": ["cat", "-n", 3],
          "process.pid": 0}
    out = render("{process.name} read {file.path} (user {user.name}, argv {process.args})", ev)
    assert out == "cat read /etc/shadow (user <NA>, argv cat -n 3)"
    assert render("{process.pid}{process.name}", ev) == "0cat"  # adjacent, falsy value kept
    assert render("no placeholders", ev) == "no placeholders"
    assert render("", ev) == ""
    assert render("{not a field} {{process.name}}", ev) == "{not a field} {cat}"
