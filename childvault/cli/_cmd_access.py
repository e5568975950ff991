"""Requests and approvals: ``request``, ``requests``, ``approve``, ``deny``,
``revoke`` and ``read``."""

from __future__ import annotations

from pathlib import Path

import click

from childvault.cli._context import Ctx, pass_ctx, read_grant_arg


@click.command()
@click.option("--record", "records", multiple=True, required=True, help="Repeatable.")
@click.option("--field", "fields", multiple=True, required=True, help="Repeatable.")
@click.option("--purpose", required=True)
@click.option("--reason", required=True, help="Why the access is needed.")
@pass_ctx
def request(
    c: Ctx, records: tuple[str, ...], fields: tuple[str, ...], purpose: str, reason: str
) -> None:
    """File an access request for an officer to approve."""
    request_id = c.open().request_access(records, fields, purpose, reason)
    c.emit(
        {"ok": True, "request_id": request_id},
        f"Filed request {request_id}; an officer must approve it.",
    )


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include decided requests.")
@pass_ctx
def requests(c: Ctx, show_all: bool) -> None:
    """List pending access requests (officers)."""
    from childvault.vault._time import parse_iso

    v = c.open()
    items = v.requests(None if show_all else "pending")

    def human() -> None:
        now = v.now()
        for r in items:
            age = now - parse_iso(r.created_at)
            click.echo(
                f"{r.id}  {r.status:8} by {r.requester:12} {len(r.records)} record(s) "
                f"fields {','.join(r.fields)}  purpose {r.purpose}  "
                f"age {int(age.total_seconds() // 60)} min\n    reason: {r.reason}"
            )
        click.echo(f"{len(items)} request(s)")

    c.emit({"ok": True, "requests": [r.to_json() for r in items]}, human)


@click.command()
@click.argument("request_id")
@click.option("--ttl", default=None, help="Validity, e.g. 30m, 1h (default 1h; max 8h).")
@click.option("--uses", default=1, show_default=True, type=int, help="Reads allowed.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the token to this file (mode 0600) instead of printing it.",
)
@pass_ctx
def approve(c: Ctx, request_id: str, ttl: str | None, uses: int, out: Path | None) -> None:
    """Approve REQUEST_ID and issue an approval token (officers)."""
    from childvault.keys._files import atomic_write
    from childvault.vault._time import parse_duration

    v = c.open()
    approval = v.approve(request_id, ttl=parse_duration(ttl) if ttl else None, uses=uses)
    if out is not None:
        atomic_write(out, approval.token.encode() + b"\n", mode=0o600)
    doc = {"ok": True, **approval.to_json()}
    if out is not None:
        doc.pop("token")
        doc["token_file"] = str(out)
    where = f"Token written to {out}." if out else f"Token:\n{approval.token}"
    c.emit(
        doc,
        f"Approved request {request_id} for {approval.requester} as grant {approval.grant_id}, "
        f"valid until {approval.expires_at} for {approval.uses} read(s).\n{where}",
    )


@click.command()
@click.argument("request_id")
@click.option("--reason", required=True)
@pass_ctx
def deny(c: Ctx, request_id: str, reason: str) -> None:
    """Deny REQUEST_ID with a reason (officers)."""
    c.open().deny(request_id, reason)
    c.emit(
        {"ok": True, "request_id": request_id, "status": "denied"}, f"Denied request {request_id}."
    )


@click.command()
@click.argument("grant_id")
@pass_ctx
def revoke(c: Ctx, grant_id: str) -> None:
    """Revoke GRANT_ID; later reads with its token are denied (officers)."""
    c.open().revoke(grant_id)
    c.emit({"ok": True, "grant_id": grant_id, "revoked": True}, f"Revoked grant {grant_id}.")


@click.command()
@click.argument("record_ids", nargs=-1, required=True)
@click.option("--grant", "grant", required=True, help="Token, @FILE or @- for stdin.")
@click.option("--field", "fields", multiple=True, help="Only these fields (default: all granted).")
@pass_ctx
def read(c: Ctx, record_ids: tuple[str, ...], grant: str, fields: tuple[str, ...]) -> None:
    """Read approved fields of RECORD_IDS with an approval token."""
    values = c.open().read_with_grant(read_grant_arg(grant), record_ids, fields or None)

    def human() -> None:
        for rid, vals in values.items():
            click.echo(f"record {rid}")
            for name, value in vals.items():
                shown = value if len(value) <= 200 else value[:200] + f"... ({len(value)} chars)"
                click.echo(f"  {name}: {shown}")

    c.emit({"ok": True, "records": values}, human)
