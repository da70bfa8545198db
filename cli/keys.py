"""``threatseer keys gen``: key pairs for CURVE transport (every role), ed25519 signing and
admin access (hub side), and web console tokens (the token, and its hash for the hub's
``console.viewer_tokens`` / ``console.admin_tokens``).

CURVE keys need only the base install, so a sensor host can make its own; ed25519 keys need
PyNaCl, part of the ``hub`` extra, and are imported only when asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from threatseer.common.keys import curve_keypair, write_key_pair


def _ed25519() -> tuple[str, str]:
    from threatseer.hub.rules.signing import generate_ed25519

    return generate_ed25519()


def _console_token() -> tuple[str, str]:
    from threatseer.hub.console.tokens import new_token

    return new_token()


# --type name -> generator of (secret file text, public file text)
KEY_TYPES: dict[str, Callable[[], tuple[str, str]]] = {
    "signing": _ed25519,  # rule bundles
    "admin": _ed25519,  # signed admin requests
    "curve": curve_keypair,  # transport (Z85)
    "console": _console_token,  # web console access: the token, and its hash for the hub
}


@click.group("keys")
def keys_group() -> None:
    """Generate key pairs (bundle signing, admin access, transport)."""


@keys_group.command("gen")
@click.option("--type", "key_type", required=True,
              type=click.Choice(sorted(KEY_TYPES)), help="What the key is for.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Secret key file (mode 0600); the public key goes to OUTPUT.pub.")
def keys_gen_cmd(key_type: str, output: str) -> None:
    """Generate a key pair: OUTPUT (secret, 0600) and OUTPUT.pub."""
    secret, public = KEY_TYPES[key_type]()
    if key_type == "console":  # the comment names the holder in the hub's token list
        public = f"{public}  # {os.path.basename(output)}\n"
    try:
        secret_path, public_path = write_key_pair(output, secret, public)
    except FileExistsError:
        raise click.ClickException(f"{output} exists: refusing to overwrite a key") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"{key_type} key: secret {secret_path} (0600), public {public_path}")
