"""CLI commands of the hub side: hub, tap, replay, profiles, status (see sensor/cli.py)."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime

import click
import yaml

from threatseer.common import configfile
from threatseer.hub.config import HubConfig, printable

DEFAULT_CONFIG = "/etc/threatseer/hub.yaml"


def load_config(path: str | None) -> HubConfig:
    """The hub config from ``path`` (defaults when None); ConfigError -> exit 2 in main()."""
    if path is None:
        return HubConfig()
    return configfile.load(path, HubConfig)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command("hub")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help=f"Hub YAML config (default: built-in defaults; packaged at {DEFAULT_CONFIG}).")
@click.option("--print-config", is_flag=True, help="Print the effective config and exit.")
def hub_command(config_path: str | None, print_config: bool) -> None:
    """Score events from a fleet of sensors and emit them to outputs and the PUB tap."""
    cfg = load_config(config_path)
    if print_config:
        click.echo(yaml.safe_dump(printable(cfg), sort_keys=False))
        return
    setup_logging(cfg.log_level)
    from threatseer.hub.daemon import Hub

    try:
        hub = Hub(cfg)
    except Exception as exc:  # e.g. endpoint in use, unwritable state_dir
        raise click.ClickException(f"hub cannot start: {exc}") from None
    stopping = threading.Event()
    reloading = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    def on_hup(signum: int, _frame: object) -> None:
        reloading.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # systemd's ExecReload and the init script's reload send SIGHUP: reload, never die of it
    signal.signal(signal.SIGHUP, on_hup)
    # Events are acyclic and freed by reference counting; the cyclic GC would only rescan the
    # long-lived profiles and rules on every few thousand allocations.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    hub.start()
    print(f"hub ready: ingest {hub.ingest.endpoint}", file=sys.stderr, flush=True)
    while not stopping.wait(0.5):
        if not hub.running:
            break
        if reloading.is_set():
            reloading.clear()
            _reload(hub, config_path)
    logging.getLogger("threatseer.hub").info("stopping: emitting what was received")
    hub.stop()


def _reload(hub: object, config_path: str | None) -> None:
    """SIGHUP: re-read the config file and apply it; a bad file keeps the running config."""
    log = logging.getLogger("threatseer.hub")
    if config_path is None:
        log.info("SIGHUP: no config file to re-read")
        return
    try:
        cfg = load_config(config_path)
    except configfile.ConfigError as exc:
        log.error("reload refused, keeping the running config: %s", exc)
        return
    try:
        hub.reload(cfg)  # type: ignore[attr-defined]
    except Exception:
        log.exception("reload failed; the hub goes on with what it has")


@click.command("tap")
@click.option("--endpoint", default="tcp://127.0.0.1:5556", show_default=True,
              help="The hub's PUB endpoint.")
@click.option("--min-score", type=int, default=None, help="Only events scoring at least this.")
@click.option("--topic", "topics", multiple=True,
              help="Topic prefix, e.g. 'alert.' or 'event.network.' (repeatable; default all).")
@click.option("--host", "hosts", multiple=True, metavar="GLOB",
              help="Only events of these hosts (host.name; globs like 'web-*'; repeatable).")
@click.option("--rule", "rules", multiple=True, metavar="GLOB",
              help="Only events on which one of these rules fired (repeatable).")
@click.option("--process", "processes", multiple=True, metavar="GLOB",
              help="Only events of these process names (process.name; repeatable).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (nested ECS) instead of text.")
@click.option("--color", "colour_choice", type=click.Choice(["auto", "always", "never"]),
              default="auto", show_default=True,
              help="Colour text lines: auto = on a terminal unless NO_COLOR is set.")
@click.option("--count", type=int, default=None, help="Exit after this many events.")
@click.option("--server-key", metavar="KEY|FILE",
              help="The hub's CURVE public key (Z85 text or a file); omit for a plaintext hub.")
@click.option("--key", "key_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Our CURVE secret key file (`threatseer keys gen --type curve`); its public "
                   "half must be in the hub's curve_subscriber_allow_list.")
def tap_command(endpoint: str, min_score: int | None, topics: tuple[str, ...],
                hosts: tuple[str, ...], rules: tuple[str, ...], processes: tuple[str, ...],
                as_json: bool, colour_choice: str, count: int | None, server_key: str | None,
                key_file: str | None) -> None:
    """Watch a hub's scored events live.

    Text lines start with the event's time (UTC), then score, topic, host, process and the
    rules that fired. Filters of different kinds must all hold; a repeated one matches any
    of its values. The message format is in docs/tap.md.
    """
    from threatseer.common.keys import read_key
    from threatseer.hub.event_filter import EventFilter
    from threatseer.hub.tap import run_tap

    curve = None
    if server_key or key_file:
        if not (server_key and key_file):
            raise click.UsageError("--server-key and --key go together")
        try:
            curve = (read_key(key_file, "--key"), read_key(server_key, "--server-key"))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    want = EventFilter(hosts=hosts, rules=rules, processes=processes, min_score=min_score)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    mode = "CURVE" if curve else "plaintext (a CURVE hub sends nothing without --key)"
    with contextlib.suppress(KeyboardInterrupt):
        try:
            run_tap(endpoint, topics, want, as_json, count, curve=curve,
                    colour_choice=colour_choice,
                    on_ready=lambda: print(f"tap: subscribed to {endpoint}, {mode}",
                                           file=sys.stderr, flush=True))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--endpoint") from None


@click.command("replay")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--bundle", "bundle_path", type=click.Path(exists=True),
              help="Rule bundle (directory or archive) to score with.")
@click.option("--local", "local_path", type=click.Path(exists=True),
              help="A local rules layer to stack on --bundle (default: the shipped bundle).")
@click.option("--profiles", "profiles_db", type=click.Path(dir_okay=False),
              help="Profile database to score against (and learn into); default: fresh, "
                   "in memory.")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Hub config whose actions and profiles sections apply.")
@click.option("--all", "include_tossed", is_flag=True, help="Also print tossed events.")
def replay_command(events: str, bundle_path: str | None, local_path: str | None,
                   profiles_db: str | None, config_path: str | None,
                   include_tossed: bool) -> None:
    """Score recorded events (JSON lines) offline and print them scored (backtest a bundle)."""
    from threatseer.hub.replay import replay

    cfg = load_config(config_path)
    bundle = None
    if bundle_path or local_path:
        try:
            from threatseer.hub.rules.bundle import default_bundle_dir, load_bundle
        except ImportError as exc:
            raise click.ClickException(f"cannot load bundles in this build: {exc}") from None
        base = bundle_path or default_bundle_dir()
        if base is None:
            raise click.UsageError("--local needs --bundle (no default bundle here)")
        try:
            bundle = load_bundle(base, local_path)
        except Exception as exc:
            raise click.ClickException(f"bundle {local_path or base}: {exc}") from None
    stream = sys.stdin if events == "-" else open(events)  # noqa: SIM115
    try:
        counts = replay(stream, sys.stdout, bundle, profiles_db, cfg.actions, cfg.profiles,
                        include_tossed, source=events)
    finally:
        if stream is not sys.stdin:
            stream.close()
    print(f"replay: {counts['read']} read, {counts['emitted']} emitted, {counts['tossed']} "
          f"tossed, {counts['bad']} bad", file=sys.stderr)
    if counts["bad"] and not counts["emitted"] and not counts["tossed"]:
        sys.exit(1)


def _open_store(config_path: str | None, db: str | None):  # type: ignore[no-untyped-def]
    import sqlite3

    from threatseer.hub.profiles import ProfileStore

    path = db or load_config(config_path).profile_db()
    if not os.path.exists(path):
        raise click.ClickException(f"no profile database at {path}")
    try:
        return ProfileStore(path)
    except sqlite3.Error as exc:
        raise click.ClickException(f"{path}: not a usable profile database ({exc})") from None


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.group("profiles")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Hub config (to find the profile database).")
@click.option("--db", type=click.Path(dir_okay=False), help="Profile database (overrides -c).")
@click.pass_context
def profiles_group(ctx: click.Context, config_path: str | None, db: str | None) -> None:
    """List, show, reset or relearn behaviour profiles."""
    ctx.obj = (config_path, db)


@profiles_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def profiles_list(obj: tuple[str | None, str | None], as_json: bool) -> None:
    """Every subject, whether it is still learning, and how much it has learned."""
    rows = _open_store(*obj).list()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'STATE':<9} {'EVENTS':>8} {'ITEMS':>6} {'LAST SEEN':<20} SUBJECT")
    for r in rows:
        state = "learned" if r["learned"] else "learning"
        click.echo(f"{state:<9} {r['events']:>8} {r['behaviors']:>6} "
                   f"{_when(r['last_seen']):<20} {r['subject']}")


@profiles_group.command("show")
@click.argument("subject")
@click.pass_obj
def profiles_show(obj: tuple[str | None, str | None], subject: str) -> None:
    """What one subject learned (JSON)."""
    prof = _open_store(*obj).show(subject)
    if prof is None:
        raise click.ClickException(f"no profile {subject!r}")
    click.echo(json.dumps(prof, indent=1))


@profiles_group.command("reset")
@click.argument("subject")
@click.pass_obj
def profiles_reset(obj: tuple[str | None, str | None], subject: str) -> None:
    """Forget SUBJECT ('*' for all): it learns again from scratch."""
    n = _open_store(*obj).reset(subject)
    click.echo(f"reset {n} profile(s)")


@profiles_group.command("relearn")
@click.argument("subject")
@click.pass_obj
def profiles_relearn(obj: tuple[str | None, str | None], subject: str) -> None:
    """Open a new learning window for SUBJECT ('*' for all), keeping what it learned."""
    n = _open_store(*obj).relearn(subject)
    click.echo(f"relearning {n} profile(s)")


@click.command("status")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Hub config (to find its state_dir).")
@click.option("--state-dir", help="The hub's state directory (overrides -c).")
@click.option("--json", "as_json", is_flag=True)
def status_command(config_path: str | None, state_dir: str | None, as_json: bool) -> None:
    """Show a hub's state: sensors, outputs, bundle (from the status file it keeps)."""
    from threatseer.hub.daemon import STATUS_FILE

    directory = state_dir or load_config(config_path).state_dir
    path = os.path.join(directory, STATUS_FILE)
    try:
        with open(path) as f:
            st = json.load(f)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"no hub status at {path}: {exc}") from None
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    age = time.time() - st.get("updated_at", 0)
    b = st.get("bundle", {})
    click.echo(f"hub pid {st.get('pid')}  updated {age:.0f}s ago  ingest {st.get('ingest')}  "
               f"publish {st.get('publish')}")
    local = b.get("local")
    stack = f" + local {local.get('name')} {local.get('version')}" if local else ""
    click.echo(f"bundle {b.get('name')} {b.get('version')}{stack} ({b.get('rules')} rules, "
               f"{b.get('unsupported')} unsupported)  profiles {st.get('profiles')}")
    for problem in b.get("problems") or []:
        click.echo(f"  WARNING: {problem}")
    if not b.get("rules"):
        click.echo("  WARNING: no rules are active: events get only the default action")
    click.echo("sensors:")
    for sid, s in sorted(st.get("sensors", {}).items()):
        bad = ", ".join(f"{k}={v}" for k, v in s.get("bad", {}).items()) or "none"
        click.echo(f"  {sid:<24} host {s.get('host') or '-':<16} in {s['events_in']:>10} "
                   f"out {s['events_out']:>10}  last seen {_when(s.get('last_seen'))}  bad {bad}")
    click.echo("outputs:")
    for o in st.get("outputs", []):
        click.echo(f"  {o.get('name'):<16} {o.get('type'):<14} connected {o.get('connected')} "
                   f"queue {o.get('queue_depth')} sent {o.get('sent')} failed {o.get('failed')} "
                   f"dropped {o.get('dropped')}")
