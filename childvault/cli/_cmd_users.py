"""``childvault user``: enrol and list users (admins)."""

from __future__ import annotations

from pathlib import Path

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
    text = _("Added {name} ({roles}).").format(name=safe(name), roles=", ".join(info.roles))
    if "officer" in info.roles and not info.can_approve:
        text += _(
            "\n{name} cannot approve yet: an existing officer must run "
            "`childvault --as OFFICER keys share {name}`."
        ).format(name=safe(name))
    c.emit(doc, text)


@user.command("list")
@pass_ctx
def user_list(c: Ctx) -> None:
    """List users, roles and checkpoint verifier keys."""
    users = c.open().users()

    def human() -> None:
        for u in users:
            extra = _(" (can approve)") if u.can_approve else ""
            click.echo(f"{safe(u.name):20} {','.join(u.roles):22} {u.created_at}{extra}")
            if u.vkey:
                click.echo(f"  vkey {u.vkey}")

    c.emit({"ok": True, "users": [u.to_json() for u in users]}, human)
