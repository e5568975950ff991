"""``childvault backup``: a consistent copy of the vault while it is in use."""

from __future__ import annotations

from pathlib import Path

import click

from childvault.cli._context import Ctx, _, pass_ctx, safe


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A new or empty directory for the copy (created 0700).",
)
@pass_ctx
def backup(c: Ctx, out: Path) -> None:
    """Copy the vault (database, key slots, config, schema, identities, witness)
    into OUT while other commands keep running (officers, admins)."""
    done = c.open().backup(out)
    c.emit(
        done.to_json(),
        _("Backed up {n} files to {out}.").format(n=len(done.files), out=safe(out)),
    )
