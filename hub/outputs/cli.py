"""``threatseer es-setup``: install the index template with ECS mappings.

The Elasticsearch output installs it itself when it connects (setup_template: true); this
command is for clusters where the hub's user may write documents but not manage templates,
so an administrator installs it once with their own credentials.
"""

from __future__ import annotations

import click

from .config import ElasticsearchOptions


@click.command("es-setup")
@click.option("--hosts", multiple=True, default=["http://127.0.0.1:9200"], show_default=True,
              help="Elasticsearch URL (repeat for several nodes).")
@click.option("--index", default="threatseer-events", show_default=True,
              help="Data stream name, or index prefix with --index-mode daily.")
@click.option("--index-mode", type=click.Choice(["data_stream", "daily"]),
              default="data_stream", show_default=True)
@click.option("--shards", type=int, default=1, show_default=True)
@click.option("--replicas", type=int, default=None, help="Replicas per shard (cluster default).")
@click.option("--username", default="", envvar="ES_USERNAME")
@click.option("--password", default="", envvar="ES_PASSWORD")
@click.option("--api-key", default="", envvar="ES_API_KEY")
@click.option("--ca-certs", default="", help="CA bundle for https hosts.")
@click.option("--insecure", is_flag=True, help="Do not verify the server certificate.")
def es_setup_command(hosts: tuple[str, ...], index: str, index_mode: str, shards: int,
                     replicas: int | None, username: str, password: str, api_key: str,
                     ca_certs: str, insecure: bool) -> None:
    """Install the Elasticsearch index template with ECS mappings."""
    from elasticsearch import ApiError, TransportError

    from . import es_template
    from .sinks.elasticsearch_sink import client_for

    opts = ElasticsearchOptions(hosts=list(hosts), index=index, index_mode=index_mode,
                                username=username, password=password, api_key=api_key,
                                ca_certs=ca_certs, verify_certs=not insecure)
    try:
        opts.validate()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    client = client_for(opts)
    data_stream = index_mode == "data_stream"
    try:
        name = es_template.install(client, index, data_stream, shards, replicas)
    except (ApiError, TransportError) as exc:
        raise click.ClickException(f"cannot install the template on {', '.join(hosts)}: {exc}"
                                   ) from None
    finally:
        client.close()
    pattern = es_template.template_body(index, data_stream)["index_patterns"][0]
    kind = "data stream" if data_stream else "daily indices"
    click.echo(f"installed index template {name!r} for {kind} {pattern!r} "
               f"({len(es_template.properties())} top-level ECS field groups)")
