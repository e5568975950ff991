"""``childvault init``: create a vault and its first admin."""

from __future__ import annotations

from pathlib import Path

import click

from childvault.cli._context import Ctx, init_vault, new_passphrase, pass_ctx


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
) -> None:
    """Create a new vault in --home with its first admin."""
    home = c.require_home()
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
    )
    doc = {
        "ok": True,
        "vault_id": created["vault_id"],
        "home": created["home"],
        "admin": admin,
        "provider": provider,
        "witness": created["witness"],
    }
    c.emit(
        doc,
        f"Created vault {doc['vault_id']} in {home} (provider: {provider}).\n"
        f"Admin: {admin}. Witness file: {doc['witness']} (keep a copy on other media).\n"
        f"Next: childvault --as {admin} user add NAME --role officer",
    )
