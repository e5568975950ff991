"""``childvault doctor``: check an installation and report problems."""

from __future__ import annotations

import click

from childvault.cli._context import EXIT_ERROR, Ctx, _, pass_ctx, safe


@click.command()
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    envvar="CHILDVAULT_WITNESS_KEYS",
    help="Verifier key of an HTTP witness: check its cosignatures too (repeatable; default: "
    "the keys recorded with `childvault witness-keys add`).",
)
@pass_ctx
def doctor(c: Ctx, witness_keys: tuple[str, ...]) -> None:
    """Check the home, database, keys, log and provider; report problems."""
    from childvault._i18n import localize
    from childvault.vault._doctor import diagnose

    report = diagnose(c.require_home(), c.open, witness_keys=witness_keys)

    def human() -> None:
        for check in report["checks"]:
            # The message may quote a path: escaped; translated when the library marked it.
            click.echo(
                _("[{status:4}] {name}: {message}").format(
                    status=check["status"],
                    name=check["name"],
                    message=safe(localize(check["message"])),
                )
            )

    c.emit(report, human)
    if not report["ok"]:
        raise click.exceptions.Exit(EXIT_ERROR)
