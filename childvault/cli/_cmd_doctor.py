"""``childvault doctor``: check an installation and report problems."""

from __future__ import annotations

import click

from childvault.cli._context import EXIT_ERROR, Ctx, pass_ctx


@click.command()
@pass_ctx
def doctor(c: Ctx) -> None:
    """Check the home, database, keys, log and provider; report problems."""
    from childvault.vault._doctor import diagnose

    report = diagnose(c.require_home(), c.open)

    def human() -> None:
        for check in report["checks"]:
            click.echo(f"[{check['status']:4}] {check['name']}: {check['message']}")

    c.emit(report, human)
    if not report["ok"]:
        raise click.exceptions.Exit(EXIT_ERROR)
