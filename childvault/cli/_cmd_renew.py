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
    "--finish",
    is_flag=True,
    help="Over a server, after an admin approved: put your new identity file in place.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the passphrase of your new identity (else you type it twice).",
)
@pass_ctx
def renew(c: Ctx, approve: str | None, finish: bool, passphrase_file: Path | None) -> None:
    """Replace your key pairs with new ones, signed by the old key and an admin.

    You run it first: your new identity is made in your own process and waits
    beside the current one. An admin then runs `childvault keys renew
    --approve NAME`; from then on your new identity file is the one in use,
    and a copy of the old one opens nothing new. Over a server (--server) the
    new identity waits on your workstation: after the approval you run
    `childvault keys renew --finish` there to put it in place.
    """
    if finish:
        if approve is not None:
            raise click.UsageError(_("--finish takes no --approve"))
        _finish(c, passphrase_file)
        return
    v = c.open()
    if approve is not None:
        if passphrase_file is not None:
            raise click.UsageError(_("--approve takes no --passphrase-file"))
        done = v.approve_key_renewal(approve)
        text = _("Renewed the keys of {name}.").format(name=safe(approve))
        if c.server:
            text += " " + _(
                "{name} now runs `childvault keys renew --finish` on their workstation."
            ).format(name=safe(approve))
        c.emit(done.to_json(), text)
        return
    user = v.user
    where = _waiting(c, user) if c.server else None
    pending = v.request_key_renewal(new_passphrase(passphrase_file, user), identity_path=where)
    c.emit(
        pending.to_json(),
        _(
            "New keys for {name} are waiting in {path}: an admin must run "
            "`childvault keys renew --approve {name}`. Until then keep using your current "
            "identity."
        ).format(name=safe(user), path=safe(pending.identity)),
    )


def _waiting(c: Ctx, user: str) -> Path:
    """Where the new identity waits on this workstation (as in a local home)."""
    from childvault.keys._identity import check_user_name
    from childvault.vault._config import Home

    return Home(c.require_home()).identities / f"{check_user_name(user)}.renewing.id"


def _finish(c: Ctx, passphrase_file: Path | None) -> None:
    """Swap in the approved new identity on a workstation (server mode only).

    The new identity must open a session with the server and the trust state
    this process verifies must name its keys as the user's current ones
    before the old file is replaced (atomically, as `passphrase change`
    does; locally the approval replaces it the same way).
    """
    import os

    from childvault.keys import AccessDenied, Identity
    from childvault.vault import Vault
    from childvault.vault._config import Home

    if not c.server:
        raise click.UsageError(
            _("--finish is for a workstation with --server: locally the approval swaps the files")
        )
    user = c.require_user()
    waiting = _waiting(c, user)
    if not waiting.exists():
        text = _("no new identity of {user} waits in {path}: run `childvault keys renew` first")
        raise click.UsageError(text.format(user=safe(user), path=safe(waiting)))
    if passphrase_file is not None:
        secret = new_passphrase(passphrase_file, user)
    else:
        secret = c.passphrase(user)
    identity = Identity.load(waiting, secret)
    ca = os.environ.get("CHILDVAULT_SERVER_CA")
    try:
        vault = Vault.connect(str(c.server), identity, verify=ca or True)
    except AccessDenied as exc:
        raise click.UsageError(
            _(
                "the server does not accept the new keys of {user} yet: an admin must run "
                "`childvault keys renew --approve {user}` first ({why})"
            ).format(user=safe(user), why=safe(str(exc)))
        ) from exc
    with vault:
        current = vault.identity_is_current()
    if not current:
        raise click.UsageError(
            _(
                "the verified log does not name the new keys of {user} as theirs: "
                "the renewal is not approved"
            ).format(user=safe(user))
        )
    target = Home(c.require_home()).identity(user)
    os.replace(waiting, target)
    c.emit(
        {"ok": True, "user": user, "identity": str(target)},
        _("The new identity of {user} is in place: {path}.").format(
            user=safe(user), path=safe(target)
        ),
    )
