"""``childvault vault gc`` and ``childvault vault identity add``.

Both are added to the ``vault`` group of :mod:`._cmd_keys` by ``main.py``.
``gc`` opens the vault as an admin (it needs the database to know which
salts belong to records); ``identity add`` talks to the Vault server only,
with a root or bootstrap ``VAULT_TOKEN``, like ``vault setup``.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from childvault.cli._context import Ctx, _, pass_ctx, safe

_DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_grace(value: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``0s`` as a timedelta; click error otherwise."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise click.BadParameter(_("use a number and a unit (s, m, h, d), e.g. 7d"))
    return timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])


@click.command("gc")
@click.option(
    "--grace",
    default="7d",
    show_default=True,
    help="Only salts older than this (s, m, h, d): a batch still being written is spared.",
)
@click.option(
    "--yes",
    "destroy",
    is_flag=True,
    help="Destroy the orphaned salts (default: only list them).",
)
@pass_ctx
def vault_gc(c: Ctx, grace: str, destroy: bool) -> None:
    """Admin, Vault mode: list (with --yes destroy) salts in Vault that no record uses.

    A batch that failed after writing its salts leaves them behind; they are
    destroyed like shredded salts (a tombstone stays) and the destruction is
    logged. Dry run by default. Also reports shredded records whose salt was
    written back (a live version, or the shredded mark cleared): exit 4.
    """
    report = c.open().vault_gc(grace=parse_grace(grace), destroy=destroy)

    def human() -> None:
        orphans = report.orphans
        for item in orphans:
            shown = item.to_json()
            click.echo(
                _("orphan salt {record} (created {created}, {versions} version(s))").format(
                    record=safe(item.record_id),
                    created=safe(shown["created"]),
                    versions=item.versions,
                )
            )
        if not orphans:
            click.echo(_("No orphaned salts older than {grace}.").format(grace=safe(grace)))
        elif destroy:
            click.echo(
                _("Destroyed {n} orphaned salt document(s); tombstones kept.").format(
                    n=report.destroyed
                )
            )
        else:
            click.echo(
                _("{n} orphaned salt document(s); run again with --yes to destroy them.").format(
                    n=len(orphans)
                )
            )

        for found in report.revived:
            click.echo(
                _(
                    "SHREDDED RECORD REVIVED {record}: live salt version(s) {versions}, "
                    "shredded mark {mark}"
                ).format(
                    record=safe(str(found["record_id"])),
                    versions=",".join(str(v) for v in found["live_versions"]) or "-",
                    mark=_("kept") if found["marked"] else _("cleared"),
                )
            )

    c.emit(report.to_json(), human)
    if report.revived:
        # Someone cleared a shredding tombstone and wrote a salt back: exit 4,
        # as audit reconcile does for what it finds.
        raise click.exceptions.Exit(4)


@click.group("identity")
def vault_identity() -> None:
    """Per-person Vault identities (AppRole role + identity entity)."""


@vault_identity.command("add")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["staff", "officer", "admin"]),
    help="The person's childvault role: decides their Vault identity group and policy.",
)
@click.option(
    "--wrap-ttl",
    default="24h",
    show_default=True,
    help="How long the person has to unwrap their secret id.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the role id and the wrapped secret id to this file (mode 0600).",
)
@pass_ctx
def vault_identity_add(c: Ctx, name: str, role: str, wrap_ttl: str, out: Path | None) -> None:
    """Give NAME their own Vault identity (needs a root/bootstrap VAULT_TOKEN).

    Creates an AppRole role named NAME and an identity entity in the identity
    group of ROLE (which carries the childvault-ROLE policy), so Vault's audit
    log names the person. Prints the role id and a response-wrapped secret
    id: NAME unwraps it once (`bao unwrap TOKEN`) and logs in with
    --role-id and --secret-id-file. Running it again issues a new secret id.
    """
    result = add_identity(c.require_home(), name, role, wrap_ttl=wrap_ttl)
    if out is not None:
        _write_private(out, {k: result[k] for k in ("role_name", "role_id", "wrapped_secret_id")})
        result["written_to"] = str(out)
    lines = [safe(a) for a in result["actions"]]
    lines.append(_("role id: {role_id}").format(role_id=safe(result["role_id"])))
    lines.append(
        _("wrapped secret id (single use, expires in {ttl}): {token}").format(
            ttl=safe(result["wrap_ttl"]), token=safe(result["wrapped_secret_id"])
        )
    )
    if out is not None:
        lines.append(_("Written to {out}.").format(out=safe(out)))
    c.emit({"ok": True, **result}, "\n".join(lines))


def add_identity(home: Path, name: str, role: str, *, wrap_ttl: str = "24h") -> dict[str, Any]:
    """Create or update ``name``'s Vault identity for the vault in ``home``.

    The hook for ``user add`` in Vault mode: with a root/bootstrap
    ``VAULT_TOKEN`` it does what ``vault identity add`` does.
    """
    from childvault.keys import VaultSettings
    from childvault.keys._openbao._identity import add_person
    from childvault.vault._config import Config, Home

    config = Config.load(Home(home))
    if config.provider != "vault" or not config.vault_settings:
        raise click.UsageError(_("this vault uses the local key provider; no Vault identities"))
    token = os.environ.get("VAULT_TOKEN")
    if not token:
        raise click.UsageError(_("set VAULT_TOKEN to a root or bootstrap token"))
    settings = VaultSettings.from_json(config.vault_settings)
    return add_person(settings, token, name, role, wrap_ttl=wrap_ttl)


def _write_private(path: Path, doc: dict[str, Any]) -> None:
    # O_EXCL: never overwrite (or follow a link to) an existing file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=2)
        handle.write("\n")
