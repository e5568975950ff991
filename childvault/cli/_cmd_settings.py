"""Signed vault settings: ``settings list`` and ``settings set KEY VALUE`` (docs/trust.md)."""

from __future__ import annotations

from typing import Any

import click

from childvault.cli._context import Ctx, _, pass_ctx, safe


def _line(s: dict[str, Any]) -> str:
    source = _("signed") if s["source"] == "signed" else _("default")
    line = _("{key:32} {value:16} {source:8} signed by: {signer}").format(
        key=safe(s["key"]), value=safe(s["value"]), source=source, signer=safe(s["signer"])
    )
    if s["meta"] is not None:
        line += _("  (database row {row} ignored)").format(row=safe(s["meta"]))
    return line


@click.group()
def settings() -> None:
    """Vault settings: signed statements, never database rows an insider can edit."""


@settings.command("list")
@pass_ctx
def settings_list(c: Ctx) -> None:
    """List every setting, its effective value and who signs it."""
    rows = [s.to_json() for s in c.open().list_settings()]

    def human() -> None:
        for row in rows:
            click.echo(_line(row))

    c.emit({"ok": True, "settings": rows}, human)


@settings.command("set")
@click.argument("key")
@click.argument("value")
@pass_ctx
def settings_set(c: Ctx, key: str, value: str) -> None:
    """Sign KEY = VALUE (approval limits: an admin; compliance settings: an officer)."""
    done = c.open().set_setting(key, value).to_json()
    c.emit(
        {"ok": True, "setting": done},
        _("{key} = {value}, signed by {signer}").format(
            key=safe(done["key"]), value=safe(done["value"]), signer=safe(done["signed_by"])
        ),
    )
