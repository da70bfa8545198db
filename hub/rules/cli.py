"""``threatseer rules ...``: the bundle admin's commands.

Exit status: 0 success, 1 the bundle (or a request) is bad or a test failed, 2 usage errors
(click's own).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from threatseer.hub.rules.archive import ArchiveError, build_archive, read_dir, read_files
from threatseer.hub.rules.model import Bundle
from threatseer.hub.rules.yamlfile import BundleError

# "file:line: rule 'x': message" (line and rule optional), as the loader words its errors
_ERROR = re.compile(r"(?P<file>[^\n]*?)(?::(?P<line>\d+))?: (?:rule '(?P<rule>[^']*)': )?"
                    r"(?P<message>.*)\Z", re.S)


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


def error_record(text: str) -> dict[str, Any]:
    """One loader error as ``{file, line, rule, message}`` (for --json)."""
    m = _ERROR.match(text)
    if not m:
        return {"file": None, "line": None, "rule": None, "message": text}
    line = m.group("line")
    return {"file": m.group("file"), "line": int(line) if line else None,
            "rule": m.group("rule"), "message": m.group("message")}


def _where(source: str) -> dict[str, Any]:
    """``file:line`` (a test's source) as ``{file, line}``."""
    path, _, line = source.rpartition(":")
    if line.isdigit() and path:
        return {"file": path, "line": int(line)}
    return {"file": source, "line": None}


def _emit_json(doc: dict[str, Any], ok: bool) -> None:
    click.echo(json.dumps(doc, indent=1, default=str))
    if not ok:
        sys.exit(1)


class _Loaded:
    """What ``validate`` and ``test`` check: a base bundle, or a local layer on its base
    (``base`` then holds the base alone, whose own tests run against it)."""

    def __init__(self, bundle: Bundle, base: Bundle | None = None, base_path: str = "") -> None:
        self.bundle, self.base, self.base_path = bundle, base, base_path


def _load(path: str, base: str | None = None, as_json: bool = False) -> _Loaded:
    """The bundle at ``path``; a local layer is stacked on ``base`` (default: the bundle that
    ships with threatseer). Errors end the command (exit 1), as text or as JSON."""
    from threatseer.hub.rules.bundle import (
        default_bundle_dir,
        is_local_layer,
        load_files,
        load_stack,
    )

    try:
        files, _ = read_files(path)
        if not is_local_layer(files):
            if base:
                raise BundleError([f"{path.rstrip('/')}: --base is for a local layer (its "
                                   f"manifest says layer: local)"])
            return _Loaded(load_files(files, path.rstrip("/")))
        base_dir = base or default_bundle_dir()
        if base_dir is None:
            raise BundleError([f"{path}: a local layer needs --base (no default bundle here)"])
        base_files, _ = read_files(base_dir)
        base_path = str(base_dir).rstrip("/")
        return _Loaded(load_stack(base_files, base_path, files, path.rstrip("/")),
                       load_files(base_files, base_path), base_path)
    except (BundleError, ArchiveError) as exc:
        errors = exc.errors if isinstance(exc, BundleError) else [str(exc)]
        if as_json:
            _emit_json({"ok": False, "path": path, "errors": [error_record(e) for e in errors]},
                       ok=False)
        _fail(str(exc))
        raise  # unreachable


def _describe(loaded: _Loaded) -> dict[str, Any]:
    b = loaded.bundle
    local = b.local
    return {
        "name": (local or b).manifest.name, "version": (local or b).manifest.version,
        "layer": "local" if local else "base", "digest": (local or b).digest,
        "base": {"name": b.manifest.name, "version": b.manifest.version, "digest": b.digest,
                 "path": loaded.base_path} if local else None,
        "rules": len(b.ruleset), "tests": len(b.tests) + (
            len(loaded.base.tests) if loaded.base else 0),
        "unsupported": [error_record(u) for u in b.unsupported],
    }


_base_option = click.option(
    "--base", type=click.Path(exists=True),
    help="For a local layer: the base bundle it stacks on (default: the bundle that ships "
         "with threatseer).")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="One JSON document on stdout (for CI).")


@click.group("rules")
def rules_group() -> None:
    """Validate, test, build, sign, publish and roll back rule bundles and local layers."""


@rules_group.command("validate")
@click.argument("path", type=click.Path(exists=True))
@_base_option
@_json_option
def validate_cmd(path: str, base: str | None, as_json: bool) -> None:
    """Compile the bundle at PATH; print every error as file:line.

    A local layer (layer: local in its manifest) is compiled on its base.
    """
    from threatseer.hub.rules.query.compiler import BACKTRACKING_MAX_CHARS, backtracking_patterns

    loaded = _load(path, base, as_json)
    bundle = loaded.bundle
    for rule in getattr(bundle.ruleset, "rules", []):
        for pattern in backtracking_patterns(rule.condition):
            click.echo(f"warning: {rule.source or rule.name}: rule {rule.name}: regex "
                       f"{pattern!r} needs backtracking (look-around or a backreference): "
                       f"RE2 cannot run it, so Python's re does, on the first "
                       f"{BACKTRACKING_MAX_CHARS} characters of a value only", err=True)
    if as_json:
        _emit_json({"ok": True, "path": path, **_describe(loaded), "errors": []}, ok=True)
        return
    for item in bundle.unsupported:
        click.echo(f"unsupported: {item}")
    on = f" on {bundle.manifest.name} {bundle.manifest.version}" if bundle.local else ""
    own = bundle.local or bundle
    click.echo(f"ok: {own.manifest.name} {own.manifest.version}{on}: "
               f"{len(bundle.ruleset)} rules, {len(bundle.unsupported)} unsupported, "
               f"{_describe(loaded)['tests']} tests, digest {own.digest}")


def _rule_name(rule: object) -> str:
    """The name a rule is tested under: a sequence's steps are the sequence's."""
    seq = getattr(rule, "sequence", None)
    return seq.name if seq is not None else rule.name  # type: ignore[attr-defined]


@rules_group.command("test")
@click.argument("path", type=click.Path(exists=True))
@_base_option
@_json_option
def test_cmd(path: str, base: str | None, as_json: bool) -> None:
    """Run the bundle's embedded tests; exit 1 when any fails.

    For a local layer: the base's tests against the base, the layer's against the stack.
    """
    from threatseer.hub.rules.testing import check

    loaded = _load(path, base, as_json)
    runs = [("local", loaded.bundle), ("base", loaded.base)] if loaded.base else [
        ("base", loaded.bundle)]
    count, failures = 0, []
    for layer, bundle in runs:
        n, failed = check(bundle)  # type: ignore[arg-type]
        count += n
        failures += [(layer, f) for f in failed]
    tested = {t.rule for _, b in runs for t in b.tests}  # type: ignore[union-attr]
    own_rules = [r for r in getattr(loaded.bundle.ruleset, "rules", [])
                 if r.engine == "dynamic" and _rule_name(r) not in tested]
    if loaded.base:  # a layer answers for the rules it defines, not the base's
        own_rules = [r for r in own_rules if r.source.startswith(path.rstrip("/") + "/")]
    untested = list(dict.fromkeys(_rule_name(r) for r in own_rules))
    if as_json:
        _emit_json({
            "ok": not failures, "path": path, "total": count, "passed": count - len(failures),
            "failed": len(failures), "untested": untested,
            "failures": [{**_where(f.test.source), "layer": layer, "rule": f.test.rule,
                          "expect": "match" if f.test.expect_match else "no_match",
                          "event": f.test.event, "message": f.message}
                         for layer, f in failures],
        }, ok=not failures)
        return
    for _, failure in failures:
        click.echo(f"FAIL {failure.message}", err=True)

    if untested:
        click.echo(f"warning: {len(untested)} rules have no tests: {', '.join(untested)}",
                   err=True)
    click.echo(f"{count - len(failures)}/{count} tests passed")
    if failures:
        sys.exit(1)


@rules_group.command("build")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Archive to write (.tar.gz).")
@_base_option
def build_cmd(path: str, output: str, base: str | None) -> None:
    """Validate and test the bundle directory, then write a deterministic archive.

    A local layer is checked on its base (--base), but only its own files are archived.
    """
    from threatseer.hub.rules.testing import run_tests

    loaded = _load(path, base)
    failures = [m for b in (loaded.bundle, loaded.base) if b is not None
                for m in run_tests(b)[1]]
    if failures:
        _fail("refusing to build: tests fail:\n" + "\n".join(failures))
    data = build_archive(read_dir(path))
    Path(output).write_bytes(data)
    own = loaded.bundle.local or loaded.bundle
    click.echo(f"{output}: {own.manifest.name} {own.manifest.version} "
               f"content {own.digest} archive sha256 {hashlib.sha256(data).hexdigest()}")


@rules_group.command("sign")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", "--key", "key_path", required=True, type=click.Path(exists=True),
              help="Signing secret key (from `threatseer keys gen --type signing`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Signed archive (default: sign in place).")
def sign_cmd(archive: str, key_path: str, output: str | None) -> None:
    """Sign a built archive with an ed25519 signing key."""
    from threatseer.hub.rules.signing import SignatureError, load_signing_key, sign_archive

    try:
        signed = sign_archive(Path(archive).read_bytes(), load_signing_key(key_path))
    except (ArchiveError, SignatureError) as exc:
        _fail(str(exc))
    Path(output or archive).write_bytes(signed)
    click.echo(f"signed {output or archive}")


@rules_group.command("verify")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", "--key", "keys", multiple=True, required=True,
              help="Trusted public key file (repeatable).")
def verify_cmd(archive: str, keys: tuple[str, ...]) -> None:
    """Check an archive's signature against trusted public keys; exit 1 if it fails."""
    from threatseer.hub.rules.signing import SignatureError, load_verify_key, verify_files

    try:
        files, signature = read_files(archive)
        signer = verify_files(files, signature, [load_verify_key(k) for k in keys])
    except (ArchiveError, SignatureError) as exc:
        _fail(f"{archive}: {exc}")
    click.echo(f"{archive}: good signature by {signer}")


def _client(hub: str, key_path: str | None, timeout: float):  # type: ignore[no-untyped-def]
    from threatseer.hub.rules.admin import AdminClient
    from threatseer.hub.rules.signing import load_signing_key

    return AdminClient(hub, load_signing_key(key_path) if key_path else None, timeout)


_hub_option = click.option("--hub", required=True, help="Hub admin endpoint, e.g. tcp://hub:5557")
_key_option = click.option("-k", "--key", "key_path", type=click.Path(exists=True),
                           help="Admin secret key (from `threatseer keys gen --type admin`).")
_timeout_option = click.option("--timeout", default=60.0, show_default=True,
                               help="Seconds to wait for the hub.")


def _call(fn: Callable[[], dict]) -> dict:  # type: ignore[type-arg]
    import zmq

    from threatseer.hub.rules.admin import AdminError

    try:
        return fn()
    except AdminError as exc:
        _fail(f"hub refused: {exc}")
    except zmq.ZMQError as exc:  # a malformed --hub endpoint
        raise click.BadParameter(f"{exc.strerror}", param_hint="--hub") from None
    raise AssertionError("unreachable")


def _active_line(a: dict[str, Any]) -> str:
    """``active: NAME VERSION [+ local NAME VERSION] (N rules, digest D)``."""
    local = a.get("local")
    stack = f" + local {local['name']} {local['version']}" if local else ""
    rules = f"{a['rules']} rules, " if "rules" in a else ""
    return f"active: {a['name']} {a['version']}{stack} ({rules}digest {a['digest']})"


@rules_group.command("publish")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@_hub_option
@_key_option
@_timeout_option
def publish_cmd(archive: str, hub: str, key_path: str | None, timeout: float) -> None:
    """Send a built (signed) archive to a hub, which tests and activates it.

    A local layer (layer: local) is stacked on the hub's active base bundle; a base bundle
    must take the active local layer, or the hub refuses it.
    """
    client = _client(hub, key_path, timeout)
    reply = _call(lambda: client.publish(Path(archive).read_bytes()))
    click.echo(_active_line(reply["active"]))
    if reply.get("warning"):
        _fail(f"warning: {reply['warning']}")


@rules_group.command("list")
@_hub_option
@_key_option
@_timeout_option
@_json_option
def list_cmd(hub: str, key_path: str | None, timeout: float, as_json: bool) -> None:
    """Show the bundle versions and local layers a hub has installed, '*' marking the stack
    that runs: the active base and the local layer on it."""
    client = _client(hub, key_path, timeout)
    reply = _call(client.list)
    if as_json:
        _emit_json({k: reply.get(k) for k in ("installed", "active", "active_local")}, ok=True)
        return
    for item in reply["installed"]:
        mark = "*" if item["active"] else " "
        signed = "signed" if item["signed"] else "unsigned"
        layer = "local " if item.get("layer") == "local" else ""
        click.echo(f"{mark} {layer}{item['version']}  {item['digest'][:16]}  {signed}")
    if not reply["installed"]:
        click.echo("(no bundles installed)")
        return
    local = reply.get("active_local")
    click.echo(f"stack: {reply.get('active') or '(none)'}"
               + (f" + local {local}" if local else " (no local layer)"))


@rules_group.command("rollback")
@click.argument("version", required=False)
@click.option("--local", "local", is_flag=True, help="Roll back the local layer instead.")
@_hub_option
@_key_option
@_timeout_option
def rollback_cmd(version: str | None, local: bool, hub: str, key_path: str | None,
                 timeout: float) -> None:
    """Activate VERSION on a hub, or the version active before the current one (of the base
    bundle, or with --local of the local layer)."""
    client = _client(hub, key_path, timeout)
    reply = _call(lambda: client.rollback(version, local=local))
    click.echo(_active_line(reply["active"]))


@rules_group.command("unstack")
@_hub_option
@_key_option
@_timeout_option
def unstack_cmd(hub: str, key_path: str | None, timeout: float) -> None:
    """Run a hub's base bundle without its local layer (which stays installed: `rollback
    --local` stacks it again)."""
    client = _client(hub, key_path, timeout)
    reply = _call(client.unstack)
    click.echo(_active_line(reply["active"]))
