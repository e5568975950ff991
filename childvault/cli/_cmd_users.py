"""``childvault user``: enrol and list users (admins)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from childvault.cli._context import Ctx, _, new_passphrase, pass_ctx, safe


@click.group()
def user() -> None:
    """Manage users (admin)."""


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["staff", "officer", "admin"]),
    help="Role (repeatable).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the new user's passphrase.",
)
@pass_ctx
def user_add(c: Ctx, name: str, roles: tuple[str, ...], passphrase_file: Path | None) -> None:
    """Enrol user NAME with one or more roles."""
    v = c.open()
    info = v.add_user(name, roles, new_passphrase(passphrase_file, name))
    doc = {"ok": True, "user": info.to_json()}
    text = f"Added {name} ({', '.join(info.roles)})."
    if "officer" in info.roles and not info.can_approve:
        text += (
            f"\n{name} cannot approve yet: an existing officer must run "
            f"`childvault --as OFFICER keys share {name}`."
        )
    c.emit(doc, text)


@user.command("list")
@pass_ctx
def user_list(c: Ctx) -> None:
    """List users, roles and checkpoint verifier keys."""
    users = c.open().users()

    def human() -> None:
        for u in users:
            extra = " (can approve)" if u.can_approve else ""
            click.echo(f"{u.name:20} {','.join(u.roles):22} {u.created_at}{extra}")
            if u.vkey:
                click.echo(f"  vkey {u.vkey}")

    c.emit({"ok": True, "users": [u.to_json() for u in users]}, human)


@user.command("disable")
@click.argument("name")
@click.option("--reason", required=True, help="Why the user is disabled (kept in the log).")
@pass_ctx
def user_disable(c: Ctx, name: str, reason: str) -> None:
    """Disable user NAME (admin): signed, revokes their grants, removes their key slot."""
    done = c.open().disable_user(name, reason=reason)
    revoked = [str(g) for g in cast("list[str]", done["revoked_grants"])]
    rotate = bool(done["rotation_required"])
    doc = {"ok": True, "user": name, "revoked_grants": revoked, "rotation_required": rotate}
    text = _("Disabled {name}; revoked {count} grant(s).").format(
        name=safe(name), count=len(revoked)
    )
    if rotate:
        text += "\n" + _(
            "{name} held the custodian key: an officer must run `childvault keys rotate` "
            "before new records can be written."
        ).format(name=safe(name))
    c.emit(doc, text)
