"""``childvault keys renew``: replace one's own key pairs (approved by an admin).

Registered on the ``keys`` group by :mod:`childvault.cli.main`.
"""

from __future__ import annotations

from pathlib import Path

import click

from childvault.cli._context import Ctx, _, new_passphrase, pass_ctx, safe


@click.command("renew")
@click.option(
    "--approve",
    "approve",
    metavar="NAME",
    help="Admin: complete NAME's pending renewal.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the passphrase of your new identity (else you type it twice).",
)
@pass_ctx
def renew(c: Ctx, approve: str | None, passphrase_file: Path | None) -> None:
    """Replace your key pairs with new ones, signed by the old key and an admin.

    You run it first: your new identity is made in your own process and waits
    beside the current one. An admin then runs `childvault keys renew
    --approve NAME`; from then on your new identity file is the one in use,
    and a copy of the old one opens nothing new.
    """
    v = c.open()
    if approve is not None:
        if passphrase_file is not None:
            raise click.UsageError(_("--approve takes no --passphrase-file"))
        done = v.approve_key_renewal(approve)
        c.emit(
            done.to_json(),
            _("Renewed the keys of {name}.").format(name=safe(approve)),
        )
        return
    user = v.user
    pending = v.request_key_renewal(new_passphrase(passphrase_file, user))
    c.emit(
        pending.to_json(),
        _(
            "New keys for {name} are waiting in {path}: an admin must run "
            "`childvault keys renew --approve {name}`. Until then keep using your current "
            "identity."
        ).format(name=safe(user), path=safe(pending.identity)),
    )
