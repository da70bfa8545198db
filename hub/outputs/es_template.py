"""The Elasticsearch index template: ECS field types for everything threatseer sends.

Without a template Elasticsearch guesses types from the first document it sees (ports as
long, IPs as text, ...), and a wrong guess cannot be fixed without reindexing. Every field and
its type come from the schema, :data:`threatseer.common.ecs.FIELDS`; string fields the schema
does not name fall back to ``keyword``.
"""

from __future__ import annotations

from typing import Any

from threatseer.common import ecs

# threatseer.indicators: one object per engine finding (hub/indicators.py Indicator.as_dict).
INDICATOR_PROPERTIES: dict[str, Any] = {
    "engine": {"type": "keyword"},
    "rule": {"type": "keyword"},
    "type": {"type": "keyword"},
    "description": {"type": "text"},
    "score": {"type": "long"},
    "tags": {"type": "keyword"},
    # Free-form per engine: stored, not indexed, so it cannot explode the mapping.
    "extra_info": {"type": "object", "enabled": False},
}
# Families of fields (``name.*`` in the schema): their members are mapped dynamically.
_FAMILY = {"type": "object"}


def field_type(name: str) -> str:
    field = ecs.FIELDS.get(name)
    return field.type if field is not None else "keyword"


def properties() -> dict[str, Any]:
    """Nested ``properties`` for every field of the schema."""
    props: dict[str, Any] = {}
    for name, field in ecs.FIELDS.items():
        node = props
        parts = name.removesuffix(".*").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {"properties": {}})["properties"]
        if name.endswith("*"):
            leaf: dict[str, Any] = dict(_FAMILY)
        elif name == "threatseer.indicators":
            leaf = {"type": "object", "properties": INDICATOR_PROPERTIES}
        else:
            leaf = {"type": field.type}
            if field.type == "keyword":
                leaf["ignore_above"] = 1024
        node[parts[-1]] = leaf
    return props


def template_body(index: str, data_stream: bool, shards: int = 1,
                  replicas: int | None = None) -> dict[str, Any]:
    """Arguments of ``indices.put_index_template`` for the index/data stream ``index``."""
    settings: dict[str, Any] = {"number_of_shards": shards}
    if replicas is not None:
        settings["number_of_replicas"] = replicas
    body: dict[str, Any] = {
        "index_patterns": [index if data_stream else f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": settings,
            "mappings": {
                "date_detection": False,
                "dynamic_templates": [
                    {"strings_as_keyword": {
                        "match_mapping_type": "string",
                        "mapping": {"type": "keyword", "ignore_above": 1024},
                    }},
                ],
                "properties": properties(),
            },
        },
        "_meta": {"managed_by": "threatseer", "ecs_version": ecs.ECS_VERSION},
    }
    if data_stream:
        body["data_stream"] = {}
    return body


def install(client: Any, index: str, data_stream: bool, shards: int = 1,
            replicas: int | None = None) -> str:
    """Put the template (idempotent: same name, replaced); return its name."""
    client.indices.put_index_template(name=index, **template_body(index, data_stream, shards,
                                                                  replicas))
    return index
