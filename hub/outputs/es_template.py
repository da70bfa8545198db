"""The Elasticsearch index template: ECS field types for everything threatseer sends.

Without a template Elasticsearch guesses types from the first document it sees (ports as
long, IPs as text, ...), and a wrong guess cannot be fixed without reindexing. Every field and
its type come from the schema, :data:`threatseer.common.ecs.FIELDS`; string fields the schema
does not name fall back to ``keyword``.
"""

from __future__ import annotations

from typing import Any

from threatseer.common import ecs

from .config import ElasticsearchOptions

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


def data_stream_fields(opts: ElasticsearchOptions) -> dict[str, str]:
    """The fields every document of the output's data stream carries (flat), as Elastic's
    data stream naming scheme has them; none for daily indices or an explicit name."""
    if opts.index_mode != "data_stream" or opts.index:
        return {}
    return {"data_stream.type": "logs", "data_stream.dataset": opts.dataset,
            "data_stream.namespace": opts.namespace, "event.dataset": opts.dataset}


def template_name(opts: ElasticsearchOptions) -> str:
    """One template per dataset (it serves every namespace), or per explicit index."""
    return f"logs-{opts.dataset}" if data_stream_fields(opts) else opts.target


def template_body(opts: ElasticsearchOptions, shards: int = 1,
                  replicas: int | None = None) -> dict[str, Any]:
    """Arguments of ``indices.put_index_template`` for the output's data stream or indices."""
    data_stream = opts.index_mode == "data_stream"
    stream = data_stream_fields(opts)
    if stream:
        pattern = f"logs-{opts.dataset}-*"
    else:
        pattern = opts.target if data_stream else f"{opts.target}-*"
    settings: dict[str, Any] = {"number_of_shards": shards}
    if replicas is not None:
        settings["number_of_replicas"] = replicas
    if opts.ilm_policy:
        settings["index.lifecycle.name"] = opts.ilm_policy
    props = properties()
    if stream:  # constant per dataset; the namespace is constant per data stream
        ds = props["data_stream"]["properties"]
        ds["type"]["value"] = "logs"
        ds["dataset"]["value"] = opts.dataset
    body: dict[str, Any] = {
        "index_patterns": [pattern],
        # above the built-in logs-*-* template (100), so this one's mappings apply
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
                "properties": props,
            },
        },
        "_meta": {"managed_by": "threatseer", "ecs_version": ecs.ECS_VERSION},
    }
    if data_stream:
        body["data_stream"] = {}
    return body


def install(client: Any, opts: ElasticsearchOptions, shards: int = 1,
            replicas: int | None = None) -> str:
    """Put the template (idempotent: same name, replaced); return its name."""
    name = template_name(opts)
    client.indices.put_index_template(name=name, **template_body(opts, shards, replicas))
    return name


def ilm_policy_body(retention_days: int = 30, rollover_max_age: str = "1d",
                    rollover_max_size: str = "50gb") -> dict[str, Any]:
    """An ILM policy as Elastic's own logs policy shapes it: roll the data stream's write
    index over daily or at ``rollover_max_size`` per primary shard, delete indices
    ``retention_days`` after their rollover."""
    return {
        "phases": {
            "hot": {"actions": {"rollover": {"max_age": rollover_max_age,
                                             "max_primary_shard_size": rollover_max_size}}},
            "delete": {"min_age": f"{retention_days}d", "actions": {"delete": {}}},
        },
        "_meta": {"managed_by": "threatseer"},
    }


def install_ilm_policy(client: Any, name: str, policy: dict[str, Any]) -> None:
    client.ilm.put_lifecycle(name=name, policy=policy)
