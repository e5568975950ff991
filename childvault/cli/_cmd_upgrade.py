"""``childvault upgrade``: bring a vault made by an earlier childvault up to date."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from childvault.cli._context import Ctx, _, pass_ctx, safe


@click.command()
@click.option(
    "--fingerprint",
    help="The vault fingerprint the admin told you (else you are asked to confirm it).",
)
@click.option(
    "--migration-dsn-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PostgreSQL: file holding the migration role's DSN (or CHILDVAULT_MIGRATION_DSN).",
)
@pass_ctx
def upgrade(c: Ctx, fingerprint: str | None, migration_dsn_file: Path | None) -> None:
    """Upgrade this vault (admin first, then every user once).

    The admin's run migrates the schema (PostgreSQL: as the migration role,
    whose DSN comes from --migration-dsn-file or CHILDVAULT_MIGRATION_DSN,
    never from the command line), checks the log and the users table, and
    signs the vault's anchor. Each user then runs it once: they confirm the
    vault fingerprint with the admin and sign their own registration. The
    admin runs it again to countersign them; the first officer runs it again
    to sign the custodian key; further officers are countersigned by an
    officer at `childvault keys share`.
    """
    from childvault.vault import Vault
    from childvault.vault._config import read_dsn_file

    migration_dsn = os.environ.get("CHILDVAULT_MIGRATION_DSN", "").strip() or None
    if migration_dsn_file is not None:
        migration_dsn = read_dsn_file(migration_dsn_file)

    def confirm(shown: str) -> bool:
        if fingerprint is not None:
            return " ".join(fingerprint.lower().split()) == shown
        if not sys.stdin.isatty():
            raise click.UsageError(_("pass --fingerprint with the fingerprint the admin told you"))
        click.echo(_("Vault fingerprint: {fingerprint}").format(fingerprint=shown), err=True)
        return bool(
            click.confirm(_("Is this the fingerprint the admin told you?"), default=False, err=True)
        )

    user = c.require_user()
    done = Vault.upgrade(
        c.require_home(),
        user,
        c.passphrase(user),
        confirm=confirm,
        migration_dsn=migration_dsn,
    )
    steps = list(done.steps)
    pending = list(done.pending)

    def human() -> None:
        from childvault._i18n import localize

        for step in steps or [_("nothing to do")]:
            click.echo(safe(localize(step)))
        click.echo(_("Vault fingerprint: {fingerprint}").format(fingerprint=done.fingerprint))
        if pending:
            click.echo(
                _("Not yet verified (they run `childvault upgrade`): {names}").format(
                    names=safe(_(", ").join(pending))
                )
            )

    c.emit(done.to_json(), human)
