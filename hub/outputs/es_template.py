"""The Elasticsearch index template: ECS field types for everything threatseer sends.

Without a template Elasticsearch guesses types from the first document it sees (ports as
long, IPs as text, ...), and a wrong guess cannot be fixed without reindexing. The field list
comes from :data:`threatseer.sensor.ecs.FIELDS` (a test checks every field has a type here);
unknown string fields fall back to ``keyword``.
"""

from __future__ import annotations

from typing import Any

from threatseer.sensor import ecs

# ECS types of the fields in ecs.FIELDS and the hub's additions; anything not listed is keyword.
TYPES: dict[str, str] = {
    "@timestamp": "date",
    "event.risk_score": "float",
    "event.sequence": "long",
    "event.ingested": "date",
    "process.pid": "long",
    "process.args_count": "long",
    "process.exit_code": "long",
    "process.parent.pid": "long",
    "process.command_line": "wildcard",
    "process.parent.command_line": "wildcard",
    "source.ip": "ip",
    "source.port": "long",
    "destination.ip": "ip",
    "destination.port": "long",
    "threatseer.args_truncated": "boolean",
    "threatseer.exit_signal": "long",
    "threatseer.open.result": "long",
    "threatseer.cgroup.id": "unsigned_long",
    "threatseer.ns.pid": "long",
    "threatseer.ns.mnt": "long",
    "threatseer.process.start_ns": "unsigned_long",
    "threatseer.loss.events": "long",
    "threatseer.batch.seq": "long",
}

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


def field_type(name: str) -> str:
    return TYPES.get(name, "keyword")


def properties() -> dict[str, Any]:
    """Nested ``properties`` for every known field."""
    props: dict[str, Any] = {}
    names = [f for f in ecs.FIELDS if not f.endswith("*")] + list(TYPES)
    for name in names:
        node = props
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {"properties": {}})["properties"]
        leaf: dict[str, Any] = {"type": field_type(name)}
        if leaf["type"] == "keyword":
            leaf["ignore_above"] = 1024
        node[parts[-1]] = leaf
    props["threatseer"]["properties"]["indicators"] = {"properties": INDICATOR_PROPERTIES}
    props["threatseer"]["properties"]["health"] = {"type": "object"}
    props["ecs"] = {"properties": {"version": {"type": "keyword"}}}
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
