"""The rights-request register: ``rights open``, ``rights list``, ``rights close``."""

from __future__ import annotations

from datetime import date
from typing import Any

import click

from childvault.cli._context import Ctx, _, pass_ctx, safe


def _line(r: dict[str, Any]) -> str:
    return _(
        "{id}  {kind:7} {status:6} record {record}  by {by}  received {received}  "
        "deadline {deadline}{overdue}{outcome}"
    ).format(
        id=safe(r["id"]),
        kind=safe(r["kind"]),
        status=safe(r["status"]),
        record=safe(r["record"]),
        by=safe(r["by"]),
        received=safe(r["received"]),
        deadline=safe(r["deadline"]),
        overdue=_("  OVERDUE") if r.get("overdue") else "",
        outcome=f"  {safe(r['outcome'])}" if r.get("outcome") else "",
    ) + (
        _("  answered by: {links}").format(
            links=safe(_(", ").join(link["action"] for link in r["links"]))
        )
        if r.get("links")
        else ""
    )


@click.group()
def rights() -> None:
    """Requests of children and guardians: access, correct, delete, object (P-19, M-17)."""


@rights.command("open")
@click.argument("record_id")
@click.option("--kind", required=True, type=click.Choice(["access", "correct", "delete", "object"]))
@click.option("--by", "requester", required=True, type=click.Choice(["child", "guardian"]))
@click.option("--received", required=True, help="Day the request was received (YYYY-MM-DD).")
@click.option("--identity-checked", is_flag=True, help="The requester's identity was verified.")
@pass_ctx
def rights_open(
    c: Ctx, record_id: str, kind: str, requester: str, received: str, identity_checked: bool
) -> None:
    """Register a request about RECORD_ID (officers)."""
    from childvault.keys import UsageError

    try:
        day = date.fromisoformat(received)
    except ValueError:
        raise UsageError(_("--received: expected a date as YYYY-MM-DD")) from None
    row = (
        c.open()
        .rights_open(
            kind, record_id, requester=requester, received=day, identity_checked=identity_checked
        )
        .to_json()
    )
    c.emit({"ok": True, "rights": row}, _line(row))


@rights.command("list")
@pass_ctx
def rights_list(c: Ctx) -> None:
    """List the register; overdue requests are marked (officers, admins)."""
    rows = [r.to_json() for r in c.open().rights_list()]

    def human() -> None:
        for r in rows:
            click.echo(_line(r))
        click.echo(_("{n} rights request(s)").format(n=len(rows)))

    c.emit({"ok": True, "rights": rows}, human)


@rights.command("close")
@click.argument("rights_id")
@click.option("--outcome", required=True, type=click.Choice(["done", "refused", "withdrawn"]))
@click.option(
    "--reason", help="Why the request was refused (required with refused; no personal data)."
)
@pass_ctx
def rights_close(c: Ctx, rights_id: str, outcome: str, reason: str | None) -> None:
    """Close a request with its outcome (officers)."""
    # A correction request closes as done only with a linked correction
    # (`correct ... --rights-request ID`); the service says so when refusing.
    row = c.open().rights_close(rights_id, outcome, reason=reason).to_json()
    c.emit({"ok": True, "rights": row}, _line(row))
