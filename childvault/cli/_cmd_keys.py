"""``childvault keys`` (share, rotate) and ``childvault vault setup``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from childvault.cli._context import Ctx, _, pass_ctx, progress_bar, safe, setup_vault_server


@click.group()
def keys() -> None:
    """Key management."""


@keys.command("share")
@click.argument("name")
@pass_ctx
def keys_share(c: Ctx, name: str) -> None:
    """Officer: give officer NAME the custodian key (local provider)."""
    c.open().share_custodian(name)
    c.emit(
        {"ok": True, "shared_with": name},
        _("{name} can now approve requests.").format(name=safe(name)),
    )


@keys.command("rotate")
@click.option(
    "--trim",
    is_flag=True,
    help="Vault: also delete the older Transit key versions from the server, so they "
    "cannot be re-enabled (the local provider always destroys the old key).",
)
@click.option(
    "--rekey",
    is_flag=True,
    help="Local: also re-encrypt every stored value under a new field key, so approval "
    "tokens issued before open nothing stored (or backed up) from now on.",
)
@pass_ctx
def keys_rotate(c: Ctx, trim: bool, rekey: bool) -> None:
    """Rotate the key wrapping every record's keys; resumable (local: officer; Vault: admin)."""
    v = c.open()
    with progress_bar(c, _("Rewrapping")) as progress:
        report = v.rotate_keys(progress=progress, trim=trim, rekey=rekey)
    doc = report.to_json()
    message = rotate_message(doc)
    if report.rekeyed is not None:
        message += " " + _(
            "{n} record(s) re-encrypted under new field keys: earlier approval tokens open "
            "none of them."
        ).format(n=report.rekeyed)
    c.emit(doc, message)


def rotate_message(report: Mapping[str, Any]) -> str:
    """What ``keys rotate`` did, saying exactly what was destroyed and what was not."""
    gen = report["generation"]
    head = _("Rotated to key generation {gen}: {n} record(s) rewrapped; ").format(
        gen=gen, n=report["resealed"]
    )
    if "trimmed" not in report:
        # The custodial provider destroys the old custodian key pair.
        return head + _("older keys destroyed.")
    if report["trimmed"]:
        return head + _(
            "Transit key versions below {gen} deleted from the Vault server (trimmed): "
            "blobs and backups wrapped under them can no longer be opened."
        ).format(gen=gen)
    return head + _(
        "Transit key versions below {gen} retired (min_decryption_version raised) but NOT "
        "destroyed: an admin or root can re-enable them; `childvault keys rotate --trim` "
        "deletes them."
    ).format(gen=gen)


@click.group("vault")
def vault_group() -> None:
    """HashiCorp Vault / OpenBao administration."""


@vault_group.command("setup")
@click.option("--audit-file", help="Enable a file audit device at this path on the server.")
@click.option(
    "--no-audit-device-i-accept-the-risk",
    "no_audit_device",
    is_flag=True,
    help="Finish even though the server has no audit device (nothing then records "
    "who decrypted what outside childvault).",
)
@click.option(
    "--control-groups",
    is_flag=True,
    help="Probe whether the server enforces Control Groups (a real controlled request); "
    "fail if it does not.",
)
@pass_ctx
def vault_setup(
    c: Ctx, audit_file: str | None, no_audit_device: bool, control_groups: bool
) -> None:
    """Prepare the Vault server: mounts, keys, policies (needs a root/bootstrap VAULT_TOKEN).

    Refuses to finish without an enabled audit device unless told otherwise.
    """
    lines = setup_vault_server(
        c.require_home(),
        audit_file,
        allow_no_audit_device=no_audit_device,
        control_groups=control_groups,
    )
    from childvault._i18n import localize

    # --json keeps the English lines; people read them in their language.
    c.emit({"ok": True, "actions": lines}, "\n".join(localize(line) for line in lines))
