"""The incident register: ``incident open``, ``add-records``, ``notify``, ``list``, ``close``."""

from __future__ import annotations

from typing import Any

import click

from childvault.cli._context import Ctx, _, pass_ctx, safe


def _line(r: dict[str, Any]) -> str:
    return _(
        "{id}  {kind:6} {status:6} discovered {discovered}  {count} record(s)  notified: {to}"
    ).format(
        id=safe(r["id"]),
        kind=safe(r["kind"]),
        status=safe(r["status"]),
        discovered=safe(r["discovered"]),
        count=len(r["records"]),
        to=safe(", ".join(sorted(r["notified"]))) or _("nobody yet"),
    )


@click.group()
def incident() -> None:
    """Security incidents: leak, damage, loss; notifications and reports (P-21)."""


@incident.command("open")
@click.option("--kind", required=True, type=click.Choice(["leak", "damage", "loss"]))
@click.option(
    "--discovered", required=True, help="When it was discovered (2026-11-01T08:00, or -2h)."
)
@pass_ctx
def incident_open(c: Ctx, kind: str, discovered: str) -> None:
    """Register an incident (officers)."""
    from childvault.vault._time import parse_when

    v = c.open()
    row = v.incident_open(kind, parse_when(discovered, now=v.now())).to_json()
    c.emit({"ok": True, "incident": row}, _line(row))


@incident.command("add-records")
@click.argument("incident_id")
@click.option("--record", "records", multiple=True, required=True, help="Repeatable.")
@pass_ctx
def incident_add_records(c: Ctx, incident_id: str, records: tuple[str, ...]) -> None:
    """Add affected records to an open incident (officers)."""
    row = c.open().incident_add_records(incident_id, records).to_json()
    c.emit({"ok": True, "incident": row}, _line(row))


@incident.command("notify")
@click.argument("incident_id")
@click.option("--to", "audience", required=True, type=click.Choice(["guardians", "authority"]))
@pass_ctx
def incident_notify(c: Ctx, incident_id: str, audience: str) -> None:
    """Record that the guardians or the authority were notified (officers)."""
    row = c.open().incident_notify(incident_id, audience).to_json()
    c.emit({"ok": True, "incident": row}, _line(row))


@incident.command("list")
@pass_ctx
def incident_list(c: Ctx) -> None:
    """List the incident register (officers, admins)."""
    rows = [r.to_json() for r in c.open().incidents()]

    def human() -> None:
        for r in rows:
            click.echo(_line(r))
        click.echo(_("{n} incident(s)").format(n=len(rows)))

    c.emit({"ok": True, "incidents": rows}, human)


@incident.command("close")
@click.argument("incident_id")
@pass_ctx
def incident_close(c: Ctx, incident_id: str) -> None:
    """Close an incident once the authority was notified (officers)."""
    row = c.open().incident_close(incident_id).to_json()
    c.emit({"ok": True, "incident": row}, _line(row))
