"""``childvault passphrase change``: re-encrypt one's own identity file."""

from __future__ import annotations

from pathlib import Path

import click

from childvault.cli._context import Ctx, _, new_passphrase, pass_ctx, safe


@click.group()
def passphrase() -> None:
    """Your own passphrase."""


@passphrase.command("change")
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the new passphrase (else you type it twice).",
)
@pass_ctx
def passphrase_change(c: Ctx, passphrase_file: Path | None) -> None:
    """Change your passphrase (the current one is required).

    Your identity file is re-encrypted in place (atomically); your keys do not
    change, so everything you could read stays readable, and the old
    passphrase stops working. A copy of the file made earlier still opens with
    the old passphrase: run `childvault keys renew` if one may exist.
    """
    from childvault.keys._identity import change_passphrase, check_user_name
    from childvault.vault._config import Home

    user = check_user_name(c.require_user())
    path = Home(c.require_home()).identity(user)
    old = c.passphrase(user)
    change_passphrase(path, old, new_passphrase(passphrase_file, user))
    c.emit(
        {"ok": True, "user": user, "identity": str(path)},
        _("Passphrase of {user} changed.").format(user=safe(user)),
    )
