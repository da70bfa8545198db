"""CLI of the cluster roles: gateway, scorer, output-worker, and `cluster` (status, bundles).

Each role reads the same hub.yaml as ``threatseer hub`` (its ``cluster:`` section names the
Kafka cluster; docs/cluster.md), runs until SIGTERM/SIGINT and stops gracefully.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import threading
import time
from typing import Any

import click
import yaml

from threatseer.hub.cli import DEFAULT_CONFIG, load_config, setup_logging
from threatseer.hub.cluster.kafka import ClusterError
from threatseer.hub.config import HubConfig, printable

_config = click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
                       help=f"Hub YAML config with a cluster: section (packaged at "
                            f"{DEFAULT_CONFIG}).")
_print = click.option("--print-config", is_flag=True,
                      help="Print the effective config (secrets masked) and exit.")


def _show(cfg: HubConfig) -> None:
    click.echo(yaml.safe_dump(printable(cfg), sort_keys=False))


def _run(role: str, make: Any, cfg: HubConfig) -> None:
    setup_logging(cfg.log_level)
    try:
        member = make(cfg)
    except Exception as exc:  # ClusterError, a config the loader let through, ...
        raise click.ClickException(f"{role} cannot start: {exc}") from None
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        member.start()
    except ClusterError as exc:
        member.stop()
        raise click.ClickException(f"{role} cannot start: {exc}") from None
    print(f"{role} ready: {cfg.cluster.member()} on {cfg.cluster.bootstrap_servers}"
          + (f", ingest {member.endpoint}" if role == "gateway" else ""),
          file=sys.stderr, flush=True)
    while not stopping.wait(0.5):
        if not member.running:
            logging.getLogger("threatseer.hub.cluster").error("%s stopped by itself", role)
            break
    member.stop()


@click.command("gateway")
@_config
@_print
def gateway_command(config_path: str | None, print_config: bool) -> None:
    """Take sensors' batches (CURVE/ZeroMQ, as the hub does) and store them in Kafka."""
    cfg = load_config(config_path)
    if print_config:
        return _show(cfg)
    from threatseer.hub.cluster.gateway import Gateway

    _run("gateway", Gateway, cfg)


@click.command("scorer")
@_config
@_print
def scorer_command(config_path: str | None, print_config: bool) -> None:
    """Score batches from Kafka, exactly once, in the scorers' consumer group."""
    cfg = load_config(config_path)
    if print_config:
        return _show(cfg)
    from threatseer.hub.cluster.scorer import Scorer

    _run("scorer", Scorer, cfg)


@click.command("output-worker")
@_config
@_print
def output_worker_command(config_path: str | None, print_config: bool) -> None:
    """Send the cluster's scored events to the configured outputs (and its tap)."""
    cfg = load_config(config_path)
    if print_config:
        return _show(cfg)
    from threatseer.hub.cluster.output_worker import EventsReader

    _run("output-worker", EventsReader, cfg)


@click.group("cluster")
def cluster_group() -> None:
    """Inspect a hub cluster and announce rule bundles to its scorers."""


@cluster_group.command("status")
@_config
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status_cmd(config_path: str | None, as_json: bool) -> None:
    """Every member's latest status: role, name, bundle version (scorers), counts."""
    from threatseer.hub.cluster.status import read_status

    cfg = load_config(config_path)
    try:
        docs = read_status(cfg.cluster)
    except Exception as exc:
        raise click.ClickException(f"cannot read {cfg.cluster.status_topic}: {exc}") from None
    if as_json:
        click.echo(json.dumps(docs, indent=1, sort_keys=True, default=str))
        return
    now = time.time()
    for key in sorted(docs):
        d = docs[key]
        if "stopped_at" in d:
            click.echo(f"{key:40} stopped {now - d['stopped_at']:.0f} s ago")
            continue
        age = now - d.get("updated_at", 0)
        extra = ""
        if d.get("role") == "scorer":
            bundle = d.get("bundle") or {}
            extra = (f" bundle={bundle.get('version', '?')} rules={bundle.get('rules', '?')} "
                     f"partitions={d.get('partitions')} emitted={d.get('emitted')}")
            extra += "".join(f"\n  WARNING: {p}" for p in bundle.get("problems") or [])
            if bundle.get("rules") == 0:
                extra += "\n  WARNING: no rules are active: events get only the default action"
        elif d.get("role") == "gateway":
            extra = (f" produced={d.get('produced')} acknowledged={d.get('acknowledged')} "
                     f"refused={d.get('bad_input')} "
                     f"bound_sensors={(d.get('bindings') or {}).get('bound')}")
        elif d.get("role") == "output-worker":
            extra = f" events={d.get('events')}"
        click.echo(f"{key:40} seen {age:.0f} s ago{extra}")


@cluster_group.command("publish-bundle")
@_config
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
def publish_bundle_cmd(config_path: str | None, archive: str) -> None:
    """Announce a signed bundle archive (`threatseer rules build` + `sign`) to every scorer."""
    from threatseer.hub.cluster.bundles import publish_bundle

    cfg = load_config(config_path)
    try:
        with open(archive, "rb") as f:
            publish_bundle(cfg.cluster, f.read())
    except (ClusterError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"announced {archive} on {cfg.cluster.bundles_topic}; "
               "`threatseer cluster status` shows each scorer's version")


@cluster_group.command("create-topics")
@_config
def create_topics_cmd(config_path: str | None) -> None:
    """Create the cluster's topics that are missing (every role does this at start too)."""
    from threatseer.hub.cluster.kafka import ensure_topics

    cfg = load_config(config_path)
    try:
        counts = ensure_topics(cfg.cluster)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    for topic, n in sorted(counts.items()):
        click.echo(f"{topic}: {n} partitions")
