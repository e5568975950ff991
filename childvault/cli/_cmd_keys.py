"""``childvault keys`` (share, rotate) and ``childvault vault setup``."""

from __future__ import annotations

import click

from childvault.cli._context import Ctx, pass_ctx, progress_bar, setup_vault_server


@click.group()
def keys() -> None:
    """Key management."""


@keys.command("share")
@click.argument("name")
@pass_ctx
def keys_share(c: Ctx, name: str) -> None:
    """Officer: give officer NAME the custodian key (local provider)."""
    c.open().share_custodian(name)
    c.emit({"ok": True, "shared_with": name}, f"{name} can now approve requests.")


@keys.command("rotate")
@pass_ctx
def keys_rotate(c: Ctx) -> None:
    """Rotate the key wrapping every record's keys; resumable (local: officer; Vault: admin)."""
    v = c.open()
    with progress_bar(c, "Rewrapping") as progress:
        report = v.rotate_keys(progress=progress)
    c.emit(
        report,
        f"Rotated to key generation {report['generation']}: "
        f"{report['resealed']} record(s) rewrapped; older keys destroyed.",
    )


@click.group("vault")
def vault_group() -> None:
    """HashiCorp Vault / OpenBao administration."""


@vault_group.command("setup")
@click.option("--audit-file", help="Enable a file audit device at this path on the server.")
@pass_ctx
def vault_setup(c: Ctx, audit_file: str | None) -> None:
    """Prepare the Vault server: mounts, keys, policies (needs a root/bootstrap VAULT_TOKEN)."""
    lines = setup_vault_server(c.require_home(), audit_file)
    c.emit({"ok": True, "actions": lines}, "\n".join(lines))
