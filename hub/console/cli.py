"""``threatseer console``: the web console as a PUB subscriber of a hub (its own process)."""

from __future__ import annotations

import dataclasses
import os
import sys

import click

from threatseer.hub.console.config import ConsoleConfig

DEFAULT_LISTEN = "127.0.0.1:9180"


@click.command("console")
@click.option("--hub", "endpoint", metavar="ENDPOINT",
              help="The hub's PUB endpoint, e.g. tcp://hub:5556 (default: publish.endpoint "
                   "of -c).")
@click.option("--server-key", metavar="KEY|FILE",
              help="The hub's CURVE public key (Z85 text or a file); omit for a plaintext hub.")
@click.option("--key", "key_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="The console's own CURVE secret key (`threatseer keys gen --type curve`); "
                   "its public half goes into the hub's curve_subscriber_allow_list.")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="The hub's config: its console section, and on the hub's host its state "
                   "directory (status, bundle history) and profile database.")
@click.option("--listen", help=f"host:port to serve on (default: console.listen of -c, else "
                               f"{DEFAULT_LISTEN}).")
@click.option("--viewer-tokens", metavar="FILE|DIR", help="Viewer token hashes "
              "(`threatseer keys gen --type console`); overrides console.viewer_tokens.")
@click.option("--admin-tokens", metavar="FILE|DIR", help="Admin token hashes (profile reset "
              "and relearn too); overrides console.admin_tokens.")
@click.option("--state-dir", help="The hub's state directory, when the console runs on the "
                                  "hub's host (overrides -c).")
def console_command(endpoint: str | None, server_key: str | None, key_file: str | None,
                    config_path: str | None, listen: str | None, viewer_tokens: str | None,
                    admin_tokens: str | None, state_dir: str | None) -> None:
    """Serve the web console for a hub: live alerts, process trees, fleet health, profiles."""
    from threatseer.common.keys import read_key
    from threatseer.hub.cli import load_config, setup_logging

    hub_cfg = load_config(config_path) if config_path else None
    cfg = dataclasses.replace(hub_cfg.console) if hub_cfg else ConsoleConfig()
    endpoint = endpoint or (hub_cfg.publish.endpoint if hub_cfg else "")
    if not endpoint or "://" not in endpoint:
        raise click.UsageError("--hub: the hub's PUB endpoint is needed, e.g. tcp://hub:5556")
    cfg.listen = listen or cfg.listen or DEFAULT_LISTEN
    if viewer_tokens is not None:
        cfg.viewer_tokens = viewer_tokens
    if admin_tokens is not None:
        cfg.admin_tokens = admin_tokens
    try:
        cfg.validate()
    except ValueError as exc:
        raise click.UsageError(f"console.{exc}") from None
    for path in (cfg.viewer_tokens, cfg.admin_tokens):
        if path and not os.path.exists(path):
            raise click.UsageError(f"token list {path} does not exist")
    curve = None
    if server_key or key_file:
        if not (server_key and key_file):
            raise click.UsageError("--server-key and --key go together")
        try:
            curve = (read_key(key_file, "--key"), read_key(server_key, "--server-key"))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    elif hub_cfg is not None and not hub_cfg.plaintext:
        raise click.UsageError("the hub uses CURVE: give --key (this console's secret key) "
                               "and --server-key (the hub's public key)")
    directory = state_dir or (hub_cfg.state_dir if hub_cfg else None)
    if directory and not os.path.isdir(directory):
        directory = None  # another host: the stream alone
    profile_db = None
    if hub_cfg is not None and hub_cfg.profiles.enabled and directory:
        profile_db = hub_cfg.profile_db()
    elif state_dir:
        profile_db = os.path.join(state_dir, "profiles.db")
    setup_logging(hub_cfg.log_level if hub_cfg else "info")

    from threatseer.hub.console.runner import Console
    from threatseer.hub.console.server import Sources

    console = Console(cfg, endpoint, Sources("console", directory, profile_db), curve=curve)
    mode = "CURVE" if curve else "plaintext"
    print(f"console: serving {cfg.listen}, hub stream {endpoint} ({mode})", file=sys.stderr,
          flush=True)
    try:
        console.run()
    except OSError as exc:
        raise click.ClickException(f"console cannot serve on {cfg.listen}: "
                                   f"{exc.strerror or exc}") from None
