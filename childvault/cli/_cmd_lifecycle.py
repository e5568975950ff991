"""Record lifecycle: ``correct``, ``delete``, ``consent``, ``notice``,
``retention sweep`` and ``decommission``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from childvault.cli._context import (
    Ctx,
    _,
    consent_from_options,
    field_names,
    parse_assignments,
    pass_ctx,
    purpose_names,
    safe,
)


@click.command()
@click.argument("record_id")
@click.option("--field", "assignment", required=True, metavar="NAME=VALUE")
@click.option(
    "--rights-request", help="The open rights request (rights open) this answers; annotated."
)
@pass_ctx
def correct(c: Ctx, record_id: str, assignment: str, rights_request: str | None) -> None:
    """Correct one field of RECORD_ID (officers; the old value's key is destroyed)."""
    ((name, value),) = parse_assignments((assignment,)).items()
    v = c.open()
    (name,) = field_names(v, [name])
    version = v.correct(record_id, name, value, rights_request=rights_request)
    c.emit(
        {"ok": True, "record_id": record_id, "field": name, "field_version": version},
        _("Corrected {name} of {id} (now version {version}); the old value is shredded.").format(
            name=safe(name), id=safe(record_id), version=version
        ),
    )


@click.command()
@click.argument("record_id")
@click.option("--reason", required=True, help="Why (kept in the tombstone, not in the log).")
@click.option(
    "--rights-request",
    help="The open rights request (rights open) this answers; it is closed as done.",
)
@pass_ctx
def delete(c: Ctx, record_id: str, reason: str, rights_request: str | None) -> None:
    """Crypto-shred RECORD_ID, leaving a tombstone (officers and admins)."""
    c.open().delete(record_id, reason, rights_request=rights_request)
    c.emit(
        {"ok": True, "record_id": record_id, "deleted": True},
        _("Deleted {id}: its keys are destroyed; a tombstone remains.").format(id=safe(record_id)),
    )


@click.group()
def consent() -> None:
    """Consent changes: withdraw, add a purpose, renew for a new notice."""


def _consent_options(fn: Any) -> Any:
    """The options stating who consented, when and under which notice."""
    for option in reversed(
        [
            click.option("--consent-by", type=click.Choice(["guardian", "child"]), required=True),
            click.option("--consented-at", help="Date of consent (default today)."),
            click.option("--notice-version", help="Notice version shown (default: current)."),
            click.option("--guardian-informed", is_flag=True),
            click.option("--guardian-also", is_flag=True),
            click.option(
                "--consent-party",
                type=click.Choice(["guardian", "child", "institution", "civil_affairs"]),
                help="Who consented: a guardian person, the child, or the institution or "
                "civil affairs department as statutory guardian.",
            ),
            click.option(
                "--consent-relation", help="The consenting guardian's relation (e.g. 母亲)."
            ),
            click.option(
                "--consent-form",
                type=click.Path(dir_okay=False, exists=True, path_type=Path),
                help="The signed consent form; its SHA-256 is kept (needed when back-dated).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _new_consent(
    v: Any, record_id: str, purposes: list[str], retain_until: str | None, **basis: Any
) -> Any:
    """The new consent of RECORD_ID: ``retain_until`` defaults to the current one."""
    current = v.consent_of(record_id)
    return consent_from_options(
        v,
        purposes=purposes,
        retain_until=retain_until or current.retain_until.isoformat(),
        **basis,
    )


@consent.command("withdraw")
@click.argument("record_id")
@click.option("--reason", default="consent withdrawn", show_default=True)
@pass_ctx
def consent_withdraw(c: Ctx, record_id: str, reason: str) -> None:
    """Consent withdrawn: crypto-shred RECORD_ID (officers and admins)."""
    c.open().withdraw_consent(record_id, reason=reason)
    c.emit(
        {"ok": True, "record_id": record_id, "deleted": True},
        _("Consent withdrawn: {id} is shredded; a tombstone remains.").format(id=safe(record_id)),
    )


@consent.command("add-purpose")
@click.argument("record_id")
@click.option("--purpose", "purposes", multiple=True, required=True, help="Repeatable.")
@_consent_options
@pass_ctx
def consent_add_purpose(c: Ctx, record_id: str, purposes: tuple[str, ...], **basis: Any) -> None:
    """Record a new consent adding PURPOSE(s) to RECORD_ID (officers)."""
    v = c.open()
    merged = list(dict.fromkeys([*v.consent_of(record_id).purposes, *purpose_names(v, purposes)]))
    v.update_consent(record_id, _new_consent(v, record_id, merged, None, **basis))
    c.emit(
        {"ok": True, "record_id": record_id, "purposes": merged},
        _("Recorded consent for {purposes} on {id}.").format(
            purposes=safe(_(", ").join(merged)), id=safe(record_id)
        ),
    )


@consent.command("remove-purpose")
@click.argument("record_id")
@click.option("--purpose", "purposes", multiple=True, required=True, help="Repeatable.")
@_consent_options
@pass_ctx
def consent_remove_purpose(c: Ctx, record_id: str, purposes: tuple[str, ...], **basis: Any) -> None:
    """Record a narrowed consent: PURPOSE(s) withdrawn, the rest kept (officers).

    Grants already issued for a removed purpose stop working at once. To withdraw
    every purpose, use `consent withdraw`, which shreds the record.
    """
    v = c.open()
    removed = purpose_names(v, purposes)
    kept = [p for p in v.consent_of(record_id).purposes if p not in removed]
    if not kept:
        raise click.UsageError(_("no purpose would be left: use `consent withdraw` instead"))
    v.update_consent(record_id, _new_consent(v, record_id, kept, None, **basis))
    c.emit(
        {"ok": True, "record_id": record_id, "purposes": kept},
        _("Recorded consent for {purposes} only on {id}.").format(
            purposes=safe(_(", ").join(kept)), id=safe(record_id)
        ),
    )


@consent.command("renew")
@click.argument("record_id")
@click.option("--retain-until", help="New retention date (default: unchanged).")
@_consent_options
@pass_ctx
def consent_renew(c: Ctx, record_id: str, retain_until: str | None, **basis: Any) -> None:
    """Record fresh consent for RECORD_ID under the current notice (officers)."""
    v = c.open()
    purposes = list(v.consent_of(record_id).purposes)
    v.update_consent(record_id, _new_consent(v, record_id, purposes, retain_until, **basis))
    c.emit(
        {"ok": True, "record_id": record_id},
        _("Renewed consent of {id}.").format(id=safe(record_id)),
    )


@click.group()
def notice() -> None:
    """The privacy notice shown when consent is given (P-10)."""


@notice.command("publish")
@click.option("--version", "version", required=True, help="Version label, e.g. 2027-1.")
@click.option(
    "--file",
    "file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The exact notice text shown to children and guardians.",
)
@click.option(
    "--non-substantive",
    is_flag=True,
    help="A change to no P-10 item: consents under the previous version stay valid.",
)
@pass_ctx
def notice_publish(c: Ctx, version: str, file: Path, non_substantive: bool) -> None:
    """Register a notice text and make it current (admins); older consents need renewal."""
    result = c.open().publish_notice(version, file.read_bytes(), non_substantive=non_substantive)
    c.emit(
        {"ok": True, **result},
        _(
            "Published notice {version} (SHA-256 {sha256}). Records consented under another "
            "version need `childvault consent renew` before approval."
        ).format(version=safe(result["version"]), sha256=result["sha256"]),
    )


@notice.command("list")
@pass_ctx
def notice_list(c: Ctx) -> None:
    """Show every published notice version and its hash."""
    v = c.open()
    register, current = v.notices(), v.setting("notice_version")

    def human() -> None:
        for version, entry in sorted(register.items()):
            mark = _(" (current)") if version == current else ""
            click.echo(f"{safe(version):12} {entry['sha256']} {entry['published_at']}{mark}")

    c.emit({"ok": True, "current": current, "notices": register}, human)


@click.group()
def retention() -> None:
    """Retention (P-12)."""


@retention.command("sweep")
@click.option("--dry-run", is_flag=True, help="Only list what would be shredded.")
@pass_ctx
def retention_sweep(c: Ctx, dry_run: bool) -> None:
    """Crypto-shred every record past its retention date (admins, officers)."""
    report = c.open().retention_sweep(dry_run=dry_run)
    text = (
        _("Retention sweep ({day}): would shred {n} record(s).")
        if dry_run
        else _("Retention sweep ({day}): shredded {n} record(s).")
    )
    c.emit(report.to_json(), text.format(day=report.day, n=report.due))


@click.command()
@click.option("--confirm", is_flag=True, help="Required: this destroys every record.")
@click.option(
    "--cosign",
    is_flag=True,
    help="Officers: co-sign, first writing the guardian contact list to --contacts.",
)
@click.option(
    "--contacts",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --cosign: file for the contact list, sealed to you (mode 0600).",
)
@click.option(
    "--read-contacts",
    "read_contacts",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The co-signing officer: open the contact list --cosign wrote (logged).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --read-contacts: write it as CSV to this new file (mode 0600).",
)
@pass_ctx
def decommission(
    c: Ctx,
    confirm: bool,
    cosign: bool,
    contacts: Path | None,
    read_contacts: Path | None,
    out: Path | None,
) -> None:
    """Stop collection, shred every record and sign a final checkpoint (admins, after an
    officer's --cosign). The co-signing officer opens the guardian contact list with
    --read-contacts FILE, also after decommissioning."""
    from childvault.cli._context import _
    from childvault.keys import UsageError

    if out is not None and read_contacts is None:
        raise UsageError(_("--out goes with --read-contacts FILE"))
    if read_contacts is not None:
        if confirm or cosign or contacts is not None:
            raise UsageError(_("--read-contacts cannot be combined with --confirm or --cosign"))
        opened = c.open().open_decommission_contacts(read_contacts, out=out)

        def human() -> None:
            if opened.out is not None:
                click.echo(
                    _("Wrote the contact list of {n} record(s) to {out} (mode 0600).").format(
                        n=len(opened.contacts), out=safe(opened.out)
                    )
                )
                return
            order = ("record_id", "name", "guardian_name", "guardian_phone")
            for row in opened.contacts:
                # Names and phone numbers are data: escaped for the terminal.
                click.echo("  ".join(safe(row[k]) for k in order if k in row))

        doc = opened.to_json()
        if opened.out is not None:
            del doc["contacts"]  # in the 0600 file only, not on standard output too
        c.emit(doc, human)
        return
    if cosign:
        if contacts is None:
            raise UsageError(_("--cosign needs --contacts FILE for the guardian contact list"))
        done = c.open().cosign_decommission(contacts)
        c.emit(
            done.to_json(),
            _(
                "Co-signed decommissioning; the contact list of {n} record(s) is in {out} "
                "(only you can open it)."
            ).format(n=done.records, out=safe(done.contacts)),
        )
        return
    report = c.open().decommission(confirm=confirm)
    c.emit(
        report.to_json(),
        _(
            "Decommissioned: {n} record(s) shredded. Report: decommission-report.json in the home."
        ).format(n=report.records_shredded),
    )
