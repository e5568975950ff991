"""Requests and approvals: ``request``, ``requests``, ``approve``, ``deny``,
``revoke`` and ``read``."""

from __future__ import annotations

from pathlib import Path

import click

from childvault.cli._context import (
    Ctx,
    _,
    field_names,
    field_title,
    local_time,
    pass_ctx,
    purpose_names,
    purpose_title,
    read_grant_arg,
    safe,
)


@click.command()
@click.option("--record", "records", multiple=True, required=True, help="Repeatable.")
@click.option("--field", "fields", multiple=True, required=True, help="Repeatable.")
@click.option("--purpose", required=True)
@click.option("--reason", required=True, help="Why the access is needed.")
@click.option(
    "--basis",
    type=click.Choice(["consent", "subject_access", "breach_notification", "legal_obligation"]),
    default="consent",
    show_default=True,
    help="The basis of the request (statutory bases are not blocked by consent).",
)
@click.option("--link", default=None, help="Rights request id or incident id the basis needs.")
@click.option(
    "--recipient",
    default=None,
    help="The receiving organisation (legal_obligation, or a transfer under consent).",
)
@click.option("--provision", default=None, help="legal_obligation: the legal provision.")
@click.option(
    "--assessment",
    default=None,
    help="The assessment reference (legal_obligation, or a transfer under consent).",
)
@pass_ctx
def request(
    c: Ctx,
    records: tuple[str, ...],
    fields: tuple[str, ...],
    purpose: str,
    reason: str,
    basis: str,
    link: str | None,
    recipient: str | None,
    provision: str | None,
    assessment: str | None,
) -> None:
    """File an access request for an officer to approve."""
    from childvault.vault import Basis

    v = c.open()
    # Fields and the purpose may be given by their Chinese labels (姓名, 个案管理).
    (chosen,) = purpose_names(v, [purpose])
    request_id = v.request_access(
        records,
        field_names(v, fields),
        chosen,
        reason,
        basis=Basis(basis, link, recipient, provision, assessment),
    )
    c.emit(
        {"ok": True, "request_id": request_id},
        _("Filed request {request}; an officer must approve it.").format(request=safe(request_id)),
    )


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include decided requests.")
@pass_ctx
def requests(c: Ctx, show_all: bool) -> None:
    """List pending access requests: officers see everyone's, staff their own."""
    from childvault._i18n import environment_locale
    from childvault._labels import status_label
    from childvault.vault._time import iso

    v = c.open()
    items = v.requests(None if show_all else "pending")

    def human() -> None:
        now = v.now()
        for r in items:
            # Codes in English; a Chinese reader gets the labels (姓名 (name), 待审批).
            fields = (
                ",".join(r.fields)
                if environment_locale() == "en"
                else _(", ").join(field_title(v, f) for f in r.fields)
            )
            age = now - r.created_at
            # Everything but the status and numbers was typed by someone: escaped.
            click.echo(
                _(
                    "{id}  {status:8} requested by {requester}  at {created} "
                    "({age} min ago)\n"
                    "    purpose {purpose}  fields {fields}\n"
                    "    records ({count}): {records}\n"
                    "    reason: {reason}"
                ).format(
                    id=safe(r.id),
                    status=safe(status_label(r.status)),
                    requester=safe(r.requester),
                    created=local_time(iso(r.created_at)),
                    age=int(age.total_seconds() // 60),
                    purpose=safe(purpose_title(r.purpose)),
                    fields=safe(fields),
                    count=len(r.records),
                    records=safe(" ".join(r.records)),
                    reason=safe(r.reason),
                )
            )
            if r.decided_by:
                click.echo(
                    _("    decided by {officer}: {status}{why}").format(
                        officer=safe(r.decided_by),
                        status=safe(status_label(r.status)),
                        why=_(" ({reason})").format(reason=safe(r.decision_reason))
                        if r.decision_reason
                        else "",
                    )
                )
        click.echo(_("{n} request(s)").format(n=len(items)))
        if items:
            # Request rows (the reason above all) are not in the signed log, so a
            # listing cannot verify them: said plainly rather than implied.
            click.echo(
                _(
                    "(as stored in the database, not verified against the signed log; "
                    "`approve` checks each record's signed version and the rules first)"
                )
            )

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
    from childvault.vault._time import iso, parse_duration

    v = c.open()
    approval = v.approve(request_id, ttl=parse_duration(ttl) if ttl else None, uses=uses)
    if out is not None:
        atomic_write(out, approval.token.encode() + b"\n", mode=0o600)
    doc = {"ok": True, **approval.to_json()}
    if out is not None:
        doc.pop("token")
        doc["token_file"] = str(out)
    where = (
        _("Token written to {out}.").format(out=safe(out))
        if out
        else _("Token:\n{token}").format(token=safe(approval.token))
    )
    c.emit(
        doc,
        _(
            "Approved request {request} for {requester} as grant {grant}, "
            "valid until {until} for {uses} read(s).\n{where}"
        ).format(
            request=safe(request_id),
            requester=safe(approval.requester),
            grant=safe(approval.grant_id),
            until=local_time(iso(approval.expires_at)),
            uses=approval.uses,
            where=where,
        ),
    )


@click.command()
@click.argument("request_id")
@click.option("--reason", required=True)
@pass_ctx
def deny(c: Ctx, request_id: str, reason: str) -> None:
    """Deny REQUEST_ID with a reason (officers)."""
    c.open().deny(request_id, reason)
    c.emit(
        {"ok": True, "request_id": request_id, "status": "denied"},
        _("Denied request {request}.").format(request=safe(request_id)),
    )


@click.command()
@click.argument("grant_id")
@pass_ctx
def revoke(c: Ctx, grant_id: str) -> None:
    """Revoke GRANT_ID; later reads with its token are denied (officers)."""
    c.open().revoke(grant_id)
    c.emit(
        {"ok": True, "grant_id": grant_id, "revoked": True},
        _("Revoked grant {grant}.").format(grant=safe(grant_id)),
    )


@click.command()
@click.argument("record_ids", nargs=-1, required=True)
@click.option("--grant", "grant", required=True, help="Token, @FILE or @- for stdin.")
@click.option("--field", "fields", multiple=True, help="Only these fields (default: all granted).")
@pass_ctx
def read(c: Ctx, record_ids: tuple[str, ...], grant: str, fields: tuple[str, ...]) -> None:
    """Read approved fields of RECORD_IDS with an approval token.

    A malformed token, a forgotten ``@`` before a file name, a malformed record
    id or a field the schema does not have is a usage error (exit 2), told
    apart before the vault is asked, so a typo is neither shown nor logged as a
    refused read.
    """
    token = read_grant_arg(grant)
    _check_read_args(token, grant, record_ids, fields)
    v = c.open()
    fields = tuple(field_names(v, fields))
    known = {name for t in v.schema.types.values() for name in t.fields}
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise click.BadParameter(
            _("no field {names} in this vault's schema (known: {known})").format(
                names=safe(_(", ").join(unknown)), known=_(", ").join(sorted(known))
            ),
            param_hint="--field",
        )
    values = v.read_with_grant(token, record_ids, fields or None)

    def human() -> None:
        for rid, vals in values.items():
            click.echo(_("record {id}").format(id=safe(rid)))
            for name, value in vals.items():
                shown = (
                    value
                    if len(value) <= 200
                    else value[:200] + _("... ({n} chars)").format(n=len(value))
                )
                click.echo(f"  {safe(field_title(v, name))}: {safe(shown)}")

    c.emit({"ok": True, "records": values}, human)


def _check_read_args(
    token: str, grant: str, record_ids: tuple[str, ...], fields: tuple[str, ...]
) -> None:
    """Usage errors of ``read`` that need no vault: token shape and record ids."""
    from childvault._i18n import localize
    from childvault.keys import ApprovalInvalid
    from childvault.keys._encoding import is_hex_id
    from childvault.vault._tokens import key_id

    try:
        key_id(token)
    except ApprovalInvalid as exc:
        hint = ""
        if not grant.startswith("@") and Path(grant).exists():
            hint = _(" (did you mean --grant @{path}?)").format(path=safe(grant))
        raise click.BadParameter(
            _("not an approval token: {why}{hint}").format(
                # The detail is an English Message: shown in the reader's language.
                why=safe(localize(exc.detail) if exc.detail else _("malformed")),
                hint=hint,
            ),
            param_hint="--grant",
        ) from exc
    bad = [r for r in record_ids if not is_hex_id(r)]
    if bad:
        raise click.BadParameter(
            _("not a record id: {ids}").format(ids=safe(_(", ").join(bad))),
            param_hint="RECORD_IDS",
        )


@click.command()
@click.argument("request_id")
@pass_ctx
def cosign(c: Ctx, request_id: str) -> None:
    """Co-sign a legal-obligation request: the first of its two officers (officers)."""
    c.open().cosign(request_id)
    c.emit(
        {"ok": True, "request_id": request_id},
        _("Co-signed request {request}; another officer may now approve it.").format(
            request=safe(request_id)
        ),
    )
