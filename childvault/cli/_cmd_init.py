"""``childvault init``: create a vault and its first admin."""

from __future__ import annotations

import os
from pathlib import Path

import click

from childvault.cli._context import Ctx, _, init_vault, new_passphrase, pass_ctx, safe


@click.command()
@click.option("--institution", required=True, help="Name of the institution.")
@click.option("--admin", required=True, help="User name of the first admin.")
@click.option(
    "--provider",
    type=click.Choice(["local", "vault"]),
    default="local",
    show_default=True,
    help="Key provider.",
)
@click.option(
    "--schema",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TOML schema (default: the packaged child schema).",
)
@click.option(
    "--witness",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Witness file for checkpoints (put it on other media).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the admin's new passphrase.",
)
@click.option(
    "--store",
    default="sqlcipher",
    show_default=True,
    callback=lambda _c, _p, value: _store_kind(value),
    help="Where rows live: sqlcipher (a file in the home) or postgresql "
    "(DSN from --dsn-file or CHILDVAULT_DSN, never on the command line).",
)
@click.option(
    "--dsn-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the PostgreSQL DSN (--store postgresql); its path goes in the config.",
)
@click.option("--vault-addr", envvar="VAULT_ADDR", help="Vault/OpenBao address (vault provider).")
@click.option("--transit-mount", default="childvault-transit", show_default=True)
@click.option("--kv-mount", default="childvault-kv", show_default=True)
@click.option("--key-name", default="childvault-dek", show_default=True)
@pass_ctx
def init(
    c: Ctx,
    institution: str,
    admin: str,
    provider: str,
    schema: Path | None,
    witness: Path | None,
    passphrase_file: Path | None,
    vault_addr: str | None,
    transit_mount: str,
    kv_mount: str,
    key_name: str,
    store: str,
    dsn_file: Path | None,
) -> None:
    """Create a new vault in --home with its first admin."""
    home = c.require_home()
    dsn = None
    if store == "postgresql":
        dsn = None if dsn_file else (os.environ.get("CHILDVAULT_DSN", "").strip() or None)
        if dsn_file is None and dsn is None:
            raise click.UsageError(_("--store postgresql needs --dsn-file or CHILDVAULT_DSN"))
    elif dsn_file is not None:
        raise click.UsageError(_("--dsn-file goes with --store postgresql"))
    created = init_vault(
        home,
        institution=institution,
        admin=admin,
        passphrase=lambda: new_passphrase(passphrase_file, admin),
        provider=provider,
        schema=schema,
        witness=witness,
        vault_addr=vault_addr,
        transit_mount=transit_mount,
        kv_mount=kv_mount,
        key_name=key_name,
        store_dsn=dsn,
        store_dsn_file=dsn_file,
    )
    doc = {
        "ok": True,
        "vault_id": created["vault_id"],
        "home": created["home"],
        "admin": admin,
        "provider": provider,
        "witness": created["witness"],
        # Only for PostgreSQL, so the SQLCipher output keeps its shape.
        **({"store": store} if store != "sqlcipher" else {}),
    }
    c.emit(
        doc,
        _(
            "Created vault {id} in {home} (provider: {provider}).\n"
            "Admin: {admin}. Witness file: {witness} (keep a copy on other media).\n"
            "Next: childvault --as {admin} user add NAME --role officer"
        ).format(
            id=doc["vault_id"],
            home=safe(home),
            provider=provider,
            admin=safe(admin),
            witness=safe(doc["witness"]),
        ),
    )


def _store_kind(value: str) -> str:
    """``sqlcipher`` or ``postgresql``; a DSN here is refused (it would show in ``ps``)."""
    if "://" in value or "=" in value:
        raise click.UsageError(
            _(
                "--store takes sqlcipher or postgresql; the DSN holds a password, so put it in "
                "--dsn-file or CHILDVAULT_DSN, never on the command line"
            )
        )
    if value not in ("sqlcipher", "postgresql"):
        raise click.UsageError(_("--store takes sqlcipher or postgresql"))
    return value
