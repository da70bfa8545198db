"""``threatseer es-setup``: install the ILM policy and the index template with ECS mappings.

The Elasticsearch output installs the template itself when it connects (setup_template: true);
this command is for clusters where the hub's user may write documents but not manage
templates or policies, so an administrator installs them once with their own credentials.
"""

from __future__ import annotations

import click

from .config import ElasticsearchOptions


@click.command("es-setup")
@click.option("--hosts", multiple=True, default=["http://127.0.0.1:9200"], show_default=True,
              help="Elasticsearch URL (repeat for several nodes).")
@click.option("--index-mode", type=click.Choice(["data_stream", "daily"]),
              default="data_stream", show_default=True)
@click.option("--dataset", default="threatseer.events", show_default=True,
              help="Data stream dataset (logs-<dataset>-<namespace>).")
@click.option("--namespace", default="default", show_default=True,
              help="Data stream namespace (the template serves every namespace).")
@click.option("--index", default="", help="An explicit data stream name, or the daily "
              "indices' prefix (default with --index-mode daily: threatseer-events).")
@click.option("--ilm-policy", default="threatseer-events", show_default=True,
              help="ILM policy to install and name in the template; '' for none.")
@click.option("--retention-days", type=click.IntRange(1, 36500), default=30,
              show_default=True, help="ILM: delete indices this long after rollover.")
@click.option("--rollover-max-age", default="1d", show_default=True,
              help="ILM: roll the write index over after this long.")
@click.option("--rollover-max-size", default="50gb", show_default=True,
              help="ILM: ... or at this primary shard size.")
@click.option("--shards", type=click.IntRange(1, 1024), default=1, show_default=True)
@click.option("--replicas", type=click.IntRange(0, 64), default=None,
              help="Replicas per shard (cluster default).")
@click.option("--username", default="", envvar="ES_USERNAME")
@click.option("--password", default="", envvar="ES_PASSWORD")
@click.option("--api-key", default="", envvar="ES_API_KEY")
@click.option("--ca-certs", default="", help="CA bundle for https hosts.")
@click.option("--client-cert", default="", help="Client certificate (PEM) for TLS client "
              "authentication.")
@click.option("--client-key", default="", help="Its private key (PEM).")
@click.option("--insecure", is_flag=True, help="Do not verify the server certificate.")
def es_setup_command(hosts: tuple[str, ...], index_mode: str, dataset: str, namespace: str,
                     index: str, ilm_policy: str, retention_days: int, rollover_max_age: str,
                     rollover_max_size: str, shards: int, replicas: int | None, username: str,
                     password: str, api_key: str, ca_certs: str, client_cert: str,
                     client_key: str, insecure: bool) -> None:
    """Install the ILM policy and the Elasticsearch index template with ECS mappings."""
    from elasticsearch import ApiError, TransportError

    from . import es_template
    from .sinks.elasticsearch_sink import client_for

    opts = ElasticsearchOptions(
        hosts=list(hosts), index=index, index_mode=index_mode, dataset=dataset,
        namespace=namespace, ilm_policy=ilm_policy, username=username, password=password,
        api_key=api_key, ca_certs=ca_certs, verify_certs=not insecure,
        client_cert=client_cert, client_key=client_key)
    try:
        opts.validate()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    client = client_for(opts)
    where = ", ".join(hosts)
    try:
        if ilm_policy:
            policy = es_template.ilm_policy_body(retention_days, rollover_max_age,
                                                 rollover_max_size)
            try:
                es_template.install_ilm_policy(client, ilm_policy, policy)
            except ApiError as exc:
                raise click.ClickException(
                    f"cannot install the ILM policy {ilm_policy!r} on {where}: {exc} (a "
                    "server without index lifecycle management: --ilm-policy '')") from None
            click.echo(f"installed ILM policy {ilm_policy!r} (rollover at {rollover_max_age}"
                       f" or {rollover_max_size}, delete {retention_days} days after)")
        name = es_template.install(client, opts, shards, replicas)
    except (ApiError, TransportError) as exc:
        raise click.ClickException(f"cannot install the template on {where}: {exc}") from None
    finally:
        client.close()
    pattern = es_template.template_body(opts)["index_patterns"][0]
    kind = "data streams" if index_mode == "data_stream" else "daily indices"
    click.echo(f"installed index template {name!r} for {kind} {pattern!r} "
               f"({len(es_template.properties())} top-level ECS field groups); the output "
               f"writes to {opts.target!r}")
