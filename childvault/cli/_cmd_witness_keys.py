"""``childvault witness-keys``: the witnesses' verifier keys recorded in the vault.

The keys are the signed setting ``witness_keys`` (an admin signs it; logged as
``setting.set``; a ``meta`` row an insider edits is ignored: docs/trust.md).
``audit verify``, ``doctor`` and ``serve`` use them when no ``--witness-key``
is given (docs/server.md, "Witness").
"""

from __future__ import annotations

import click

from childvault.cli._context import Ctx, _, pass_ctx, safe

KEY = "witness_keys"


def recorded(c: Ctx) -> list[str]:
    """The witness keys recorded in the vault (verified signed setting)."""
    from childvault.vault._settings import witness_keys

    return witness_keys(c.open().setting(KEY))


def _set(c: Ctx, keys: list[str], text: str) -> None:
    from childvault.vault._settings import witness_keys

    done = c.open().set_setting(KEY, ",".join(keys)).to_json()
    c.emit(
        {"ok": True, "witness_keys": witness_keys(done["value"]), "signed_by": done["signed_by"]},
        text,
    )


@click.group("witness-keys")
def witness_keys_group() -> None:
    """The witnesses' verifier keys recorded in the vault (signed by an admin)."""


@witness_keys_group.command("list")
@pass_ctx
def witness_keys_list(c: Ctx) -> None:
    """List the recorded witness keys (used when no --witness-key is given)."""
    keys = recorded(c)

    def human() -> None:
        if not keys:
            click.echo(_("No witness key is recorded in this vault."))
        for key in keys:
            click.echo(safe(key))

    c.emit({"ok": True, "witness_keys": keys}, human)


@witness_keys_group.command("add")
@click.argument("vkey")
@pass_ctx
def witness_keys_add(c: Ctx, vkey: str) -> None:
    """Admin: record VKEY (from `childvault witness`) as a witness's key (signed, logged)."""
    keys = recorded(c)
    if vkey.strip() in keys:
        raise click.UsageError(_("this witness key is recorded already"))
    _set(c, [*keys, vkey.strip()], _("Witness key recorded: {vkey}").format(vkey=safe(vkey)))


@witness_keys_group.command("remove")
@click.argument("vkey")
@pass_ctx
def witness_keys_remove(c: Ctx, vkey: str) -> None:
    """Admin: stop accepting VKEY's cosignatures by default (signed, logged)."""
    keys = recorded(c)
    if vkey.strip() not in keys:
        raise click.UsageError(_("this witness key is not recorded"))
    rest = [k for k in keys if k != vkey.strip()]
    _set(c, rest, _("Witness key removed: {vkey}").format(vkey=safe(vkey)))
