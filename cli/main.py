"""The ``threatseer`` command: one entry point, a subcommand per job.

Subcommands are imported only when used, so ``threatseer sensor`` on a host never loads the
hub's engines and ``threatseer --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from threatseer.common import __version__
from threatseer.common.configfile import ConfigError

# name -> "module:attribute" of a click command; imported lazily.
COMMANDS = {
    "sensor": "threatseer.sensor.daemon:sensor_command",
    "hub": "threatseer.hub.cli:hub_command",
    "tap": "threatseer.hub.cli:tap_command",
    "replay": "threatseer.hub.cli:replay_command",
    "profiles": "threatseer.hub.cli:profiles_group",
    "rules": "threatseer.hub.rules.cli:rules_group",
    "keys": "threatseer.cli.keys:keys_group",
    "fields": "threatseer.cli.fields:fields_command",
    "status": "threatseer.hub.cli:status_command",
    "console": "threatseer.hub.console.cli:console_command",
    "es-setup": "threatseer.hub.outputs.cli:es_setup_command",
    "demo": "threatseer.cli.demo:demo_command",
    "gateway": "threatseer.hub.cluster.cli:gateway_command",
    "scorer": "threatseer.hub.cluster.cli:scorer_command",
    "output-worker": "threatseer.hub.cluster.cli:output_worker_command",
    "cluster": "threatseer.hub.cluster.cli:cluster_group",
}
# A sensor host installs the base package; every other command needs the ``hub`` extra.
BASE_COMMANDS = {"sensor", "keys", "fields"}
EXTRA_HINT = "pip install 'threatseer[hub]'"

HELP = {
    "sensor": "Capture kernel events with eBPF and ship them to a hub.",
    "hub": "Score events from a fleet of sensors and emit them to outputs.",
    "tap": "Watch a hub's scored events live.",
    "replay": "Score recorded events offline (backtest a rule bundle).",
    "profiles": "List, show, reset or relearn behaviour profiles.",
    "rules": "Validate, test, build, sign, publish and roll back rule bundles.",
    "keys": "Generate key pairs (bundle signing, CURVE transport).",
    "fields": "List every event field with its type and description.",
    "status": "Show a hub's state: sensors, outputs, bundle.",
    "console": "Serve the web console: live alerts, process trees, fleet health.",
    "es-setup": "Install the Elasticsearch ILM policy and index template (ECS mappings).",
    "demo": "Run a hub and a local sensor here and show an attack being caught.",
    "gateway": "Cluster: take sensors' batches and store them in Kafka.",
    "scorer": "Cluster: score batches from Kafka exactly once.",
    "output-worker": "Cluster: send the scored events to the outputs.",
    "cluster": "Cluster: status of every member, announce bundles, create topics.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        if name not in BASE_COMMANDS:
            why = _lacking_hub_extra()
            if why:
                return _unavailable(name, why)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return _unavailable(name, f"{module_name} is not part of this build")
            return _unavailable(name, _missing(exc))
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _lacking_hub_extra() -> str | None:
    """Why a hub command cannot run here (packages of the ``hub`` extra missing), or None."""
    from threatseer.cli.extras import missing

    lacking = missing("hub")
    if not lacking:
        return None
    return f"needs the hub's packages ({', '.join(lacking)}), which this install lacks: " \
           f"{EXTRA_HINT}"


def _missing(exc: ModuleNotFoundError) -> str:
    """Why a command cannot run: a module it imports is not installed."""
    return _lacking_hub_extra() or f"needs the Python module '{exc.name}', which this " \
                                   f"install lacks"


def _unavailable(name: str, why: str) -> click.Command:
    """A stand-in for command ``name`` that takes any arguments and fails with ``why``."""
    @click.command(name, help=f"{HELP.get(name, '')} (unavailable: {why})",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: tuple[str, ...]) -> None:
        raise click.ClickException(f"'{name}' is unavailable: {why}")

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="threatseer")
def cli() -> None:
    """threatseer: eBPF security telemetry for Linux fleets.

    Sensors capture process, file, network and container events in the kernel; a hub scores
    them with static, dynamic (query and Sigma rules) and learned-profile engines and sends
    them to Elasticsearch, Kafka, Logstash, Redis, files and a ZeroMQ tap.
    """


DEBUG_ENV = "THREATSEER_DEBUG"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error is one line on stderr, never a traceback.

    A bad config exits 2; a usage error 2 (click's); a file that cannot be read or written, an
    unreachable or malformed endpoint and anything else unexpected exit 1 with one line.
    ``THREATSEER_DEBUG=1`` shows the traceback of an unexpected error instead.
    """
    try:
        _run(argv)
    except SystemExit:
        raise
    except BrokenPipeError:  # `threatseer tap | head`: the reader left; leave quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except BaseException as exc:
        if os.environ.get(DEBUG_ENV) or isinstance(exc, KeyboardInterrupt):
            raise
        click.echo(f"threatseer: {one_line(exc)}", err=True)
        sys.exit(1)


def one_line(exc: BaseException) -> str:
    """An error the user can act on, in one line: the file and the OS's reason for an OSError,
    the message otherwise, and for a bug (not an OSError nor a ValueError) its type and where
    to get the traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError | ValueError | LookupError) or type(exc).__module__ == "zmq.error":
        return text
    return f"unexpected error ({type(exc).__name__}: {text}); {DEBUG_ENV}=1 shows the traceback"


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="threatseer", standalone_mode=False)
    except ConfigError as exc:
        click.echo(f"threatseer: config error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.UsageError as exc:  # one line, not click's usage block
        where = exc.ctx.command_path if exc.ctx is not None else "threatseer"
        message = exc.format_message()
        if message.startswith("Usage:"):  # a group run without a command: its help
            click.echo(message, err=True)
        else:
            click.echo(f"{where}: {message} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except ModuleNotFoundError as exc:  # e.g. ed25519 keys (PyNaCl) on a sensor-only install
        if not exc.name or exc.name.startswith("threatseer"):
            raise
        click.echo(f"threatseer: {_missing(exc)}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
