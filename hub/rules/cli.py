"""``threatseer rules ...``: the bundle admin's commands.

Exit status: 0 success, 1 the bundle (or a request) is bad or a test failed, 2 usage errors
(click's own).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import click

from threatseer.hub.rules.archive import ArchiveError, build_archive, read_dir, read_files
from threatseer.hub.rules.model import Bundle
from threatseer.hub.rules.yamlfile import BundleError


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


def _load(path: str) -> Bundle:
    from threatseer.hub.rules.bundle import load_files

    try:
        files, _ = read_files(path)
        return load_files(files, path.rstrip("/"))
    except (BundleError, ArchiveError) as exc:
        _fail(str(exc))
        raise  # unreachable


@click.group("rules")
def rules_group() -> None:
    """Validate, test, build, sign, publish and roll back rule bundles."""


@rules_group.command("validate")
@click.argument("path", type=click.Path(exists=True))
def validate_cmd(path: str) -> None:
    """Compile the bundle at PATH; print every error as file:line."""
    bundle = _load(path)
    for item in bundle.unsupported:
        click.echo(f"unsupported: {item}")
    click.echo(f"ok: {bundle.manifest.name} {bundle.manifest.version}: "
               f"{len(bundle.ruleset)} rules, {len(bundle.unsupported)} unsupported, "
               f"{len(bundle.tests)} tests, digest {bundle.digest}")


@rules_group.command("test")
@click.argument("path", type=click.Path(exists=True))
def test_cmd(path: str) -> None:
    """Run the bundle's embedded tests; exit 1 when any fails."""
    from threatseer.hub.rules.testing import run_tests

    bundle = _load(path)
    count, failures = run_tests(bundle)
    for failure in failures:
        click.echo(f"FAIL {failure}", err=True)
    tested = {t.rule for t in bundle.tests}
    # a sequence's steps are one rule: the sequence's name
    names = dict.fromkeys(getattr(getattr(r, "sequence", None), "name", r.name)
                          for r in getattr(bundle.ruleset, "rules", []) if r.engine == "dynamic")
    untested = [name for name in names if name not in tested]
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
def build_cmd(path: str, output: str) -> None:
    """Validate and test the bundle directory, then write a deterministic archive."""
    from threatseer.hub.rules.testing import run_tests

    bundle = _load(path)
    _, failures = run_tests(bundle)
    if failures:
        _fail("refusing to build: tests fail:\n" + "\n".join(failures))
    data = build_archive(read_dir(path))
    Path(output).write_bytes(data)
    click.echo(f"{output}: {bundle.manifest.name} {bundle.manifest.version} "
               f"content {bundle.digest} archive sha256 {hashlib.sha256(data).hexdigest()}")


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
    from threatseer.hub.rules.admin import AdminError

    try:
        return fn()
    except AdminError as exc:
        _fail(f"hub refused: {exc}")
        raise  # unreachable


@rules_group.command("publish")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@_hub_option
@_key_option
@_timeout_option
def publish_cmd(archive: str, hub: str, key_path: str | None, timeout: float) -> None:
    """Send a built (signed) archive to a hub, which tests and activates it."""
    client = _client(hub, key_path, timeout)
    reply = _call(lambda: client.publish(Path(archive).read_bytes()))
    a = reply["active"]
    click.echo(f"active: {a['name']} {a['version']} ({a['rules']} rules, digest {a['digest']})")
    if reply.get("warning"):
        _fail(f"warning: {reply['warning']}")


@rules_group.command("list")
@_hub_option
@_key_option
@_timeout_option
def list_cmd(hub: str, key_path: str | None, timeout: float) -> None:
    """Show the bundle versions a hub has installed and which is active."""
    client = _client(hub, key_path, timeout)
    reply = _call(client.list)
    for item in reply["installed"]:
        mark = "*" if item["active"] else " "
        signed = "signed" if item["signed"] else "unsigned"
        click.echo(f"{mark} {item['version']}  {item['digest'][:16]}  {signed}")
    if not reply["installed"]:
        click.echo("(no bundles installed)")


@rules_group.command("rollback")
@click.argument("version", required=False)
@_hub_option
@_key_option
@_timeout_option
def rollback_cmd(version: str | None, hub: str, key_path: str | None, timeout: float) -> None:
    """Activate VERSION on a hub, or the version active before the current one."""
    client = _client(hub, key_path, timeout)
    reply = _call(lambda: client.rollback(version))
    a = reply["active"]
    click.echo(f"active: {a['name']} {a['version']} (digest {a['digest']})")
