"""JSON bodies made from an event: the webhook output's templates.

A template is any JSON-like structure (mappings, lists, strings, numbers). Its strings may
hold placeholders, filled from the scored event:

- ``{field.name}``: a field of the event (``threatseer fields`` lists them), as text;
  ``<NA>`` when absent, as in rule outputs;
- ``{@summary}`` one readable line (time, score, kind, action, host, process, rules),
  ``{@title}`` "threatseer alert (score 120): shadow_file_read on web1", ``{@rules}`` the
  names of the rules that fired, ``{@outputs}`` their output texts, ``{@score}`` the score
  as text, ``{@color}`` a colour for the kind (alert red, scored amber, else grey);
- a string that is nothing but one placeholder keeps the value's own JSON type: ``"{@event}"``
  is the whole nested ECS document, ``"{process.args}"`` a list, ``"{event.risk_score}"`` a
  number.

Templates are checked when the config loads: an unknown field or special is an error naming
it (``outputs[2].options.template: unknown field 'proces.name'``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from threatseer.common import ecs

from .events import to_text

_PLACEHOLDER = re.compile(r"\{(@?[A-Za-z_@][\w.@\[\]-]*)\}")
MISSING = "<NA>"
COLOURS = {"alert": "#d40000", "scored": "#e8a200", "event": "#8a8a8a"}


def _rules(ev: dict[str, Any]) -> list[dict[str, Any]]:
    found = ev.get("threatseer.indicators")
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


def _title(ev: dict[str, Any]) -> str:
    kind = "alert" if ev.get("event.kind") == "alert" else "event"
    names = [str(i.get("rule")) for i in _rules(ev)]
    top = max(_rules(ev), key=lambda i: i.get("score") or 0, default=None)
    what = str(top.get("rule")) if top else str(ev.get("event.action", "event"))
    host = ev.get("host.name") or ev.get("agent.id") or "?"
    more = f" (+{len(names) - 1} more)" if len(names) > 1 else ""
    return f"threatseer {kind} (score {_score(ev)}): {what}{more} on {host}"


def _score(ev: dict[str, Any]) -> str:
    score = ev.get("event.risk_score", 0)
    return f"{score:g}" if isinstance(score, int | float) else str(score)


def _colour(ev: dict[str, Any]) -> str:
    if ev.get("event.kind") == "alert":
        return COLOURS["alert"]
    score = ev.get("event.risk_score", 0)
    return COLOURS["scored"] if isinstance(score, int | float) and score > 0 else \
        COLOURS["event"]


SPECIALS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "@event": ecs.nest,
    "@summary": to_text,
    "@title": _title,
    "@rules": lambda ev: ", ".join(str(i.get("rule")) for i in _rules(ev)),
    "@outputs": lambda ev: "; ".join(str((i.get("extra_info") or {}).get("output"))
                                     for i in _rules(ev)
                                     if isinstance(i.get("extra_info"), dict)
                                     and i["extra_info"].get("output")),
    "@score": _score,
    "@color": _colour,
}


def _text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


class TemplateError(ValueError):
    """A template names a field or special that does not exist; ``str()`` says which."""


class _Str:
    """One template string, split once into text and placeholders."""

    __slots__ = ("keys", "pieces", "whole")

    def __init__(self, text: str) -> None:
        self.pieces = _PLACEHOLDER.split(text)  # text, key, text, key, ..., text
        self.keys = self.pieces[1::2]
        self.whole = len(self.keys) == 1 and self.pieces[0] == self.pieces[2] == ""
        for key in self.keys:
            if key.startswith("@"):
                if key not in SPECIALS:
                    raise TemplateError(f"unknown special {{{key}}} (known: "
                                        f"{', '.join(SPECIALS)})")
            elif ecs.field(key.split("[", 1)[0]) is None:
                raise TemplateError(f"unknown field {key!r} (`threatseer fields` lists them)")

    def render(self, ev: dict[str, Any]) -> Any:
        if not self.keys:
            return self.pieces[0]
        values = [SPECIALS[k](ev) if k.startswith("@") else ev.get(k) for k in self.keys]
        if self.whole:
            return values[0]
        out = list(self.pieces)
        out[1::2] = [_text(v) for v in values]
        return "".join(out)


def _compile(node: Any) -> Any:
    if isinstance(node, str):
        return _Str(node)
    if isinstance(node, dict):
        return {str(k): _compile(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_compile(v) for v in node]
    if node is None or isinstance(node, bool | int | float):
        return node
    raise TemplateError(f"a template holds mappings, lists, strings and numbers, not "
                        f"{type(node).__name__}")


def _render(node: Any, ev: dict[str, Any]) -> Any:
    if isinstance(node, _Str):
        return node.render(ev)
    if isinstance(node, dict):
        return {k: _render(v, ev) for k, v in node.items()}
    if isinstance(node, list):
        return [_render(v, ev) for v in node]
    return node


class BodyTemplate:
    """A compiled template; :meth:`render` makes the JSON-ready body for one flat event."""

    def __init__(self, template: Any) -> None:
        self._root = _compile(template)

    def render(self, event: dict[str, Any]) -> Any:
        return _render(self._root, event)


# Bodies of the webhook output's formats (format: custom takes the configured template).
_FACTS = [("Score", "{@score}"), ("Host", "{host.name}"), ("Process", "{process.executable}"),
          ("Rules", "{@rules}")]
PRESETS: dict[str, Any] = {
    # The scored event itself: what a SOAR, a log pipeline or a home-made receiver wants.
    "generic": "{@event}",
    # Slack incoming webhooks: a line of text and an attachment with the details.
    "slack": {
        "text": "{@title}",
        "attachments": [{
            "color": "{@color}", "fallback": "{@summary}", "text": "{@outputs}",
            "fields": [{"title": t, "value": v, "short": t != "Rules"} for t, v in _FACTS],
            "footer": "threatseer {event.action} {event.id}",
        }],
    },
    # Mattermost incoming webhooks take Slack's attachments, and a sender name.
    "mattermost": {
        "username": "threatseer",
        "text": "{@title}",
        "attachments": [{
            "color": "{@color}", "fallback": "{@summary}", "text": "{@outputs}",
            "fields": [{"title": t, "value": v, "short": t != "Rules"} for t, v in _FACTS],
            "footer": "threatseer {event.action} {event.id}",
        }],
    },
    # Microsoft Teams (a Workflows "when a webhook request is received" flow): a message with
    # an Adaptive Card.
    "teams": {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard", "version": "1.4",
                "body": [
                    {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": True,
                     "text": "{@title}"},
                    {"type": "TextBlock", "wrap": True, "text": "{@outputs}"},
                    {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in _FACTS]},
                    {"type": "TextBlock", "wrap": True, "isSubtle": True,
                     "text": "{@summary}"},
                ],
            },
        }],
    },
}
