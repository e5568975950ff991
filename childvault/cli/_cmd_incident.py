"""The incident register: ``incident open``, ``add-records``, ``notify``, ``list``, ``close``."""

from __future__ import annotations

from pathlib import Path
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
        to=safe(_(", ").join(sorted(r["notified"]))) or _("nobody yet"),
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


@incident.command("contacts")
@click.argument("incident_id")
@click.option(
    "--grant",
    "grants",
    multiple=True,
    help="Approval token of a filed request, @FILE or @- (repeatable); with --out.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the contact list here, sealed to you (mode 0600).",
)
@pass_ctx
def incident_contacts(c: Ctx, incident_id: str, grants: tuple[str, ...], out: Path | None) -> None:
    """Guardian contact list of an incident (officers), in two steps (P-21).

    Without --grant: files breach_notification requests for the contact fields
    of the affected records; another officer approves them. Then run it again
    with each approval token (--grant) and --out FILE: the list is written
    sealed to you; open it with `incident read-contacts FILE`.
    """
    from childvault.cli._context import read_grant_arg

    v = c.open()
    done = v.incident_contacts(incident_id, tokens=[read_grant_arg(g) for g in grants], out=out)
    if not grants:

        def steps() -> None:
            click.echo(
                _("Filed {n} breach-notification request(s) for {count} record(s):").format(
                    n=len(done["requests"]), count=done["records"]
                )
            )
            for req in done["requests"]:
                click.echo(f"  {safe(req)}")
            click.echo(
                _(
                    "Next: another officer runs `childvault approve REQUEST_ID` for each; then "
                    "run `childvault incident contacts {id} --grant TOKEN --out FILE`."
                ).format(id=safe(incident_id))
            )

        c.emit({"ok": True, **done}, steps)
        return
    c.emit(
        {"ok": True, **done},
        _(
            "Wrote the contact list of {count} record(s) to {out}, sealed to you (mode 0600)."
        ).format(count=done["records"], out=safe(done["out"])),
    )


@incident.command("read-contacts")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@pass_ctx
def incident_read_contacts(c: Ctx, file: Path) -> None:
    """Print a contact list `incident contacts` sealed to you (officers)."""
    doc = c.open().open_incident_contacts(file)

    def human() -> None:
        for row in doc["contacts"]:
            click.echo("  ".join(safe(str(row.get(k, ""))) for k in sorted(row)))

    c.emit({"ok": True, **doc}, human)
