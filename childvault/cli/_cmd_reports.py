"""Report, export and proof commands (thin: parse, call the library, print).

``report subject``, ``report incident``, ``export anonymized`` and
``audit prove``. ``audit prove`` is a command on its own here, beside the
report and proof files it reads and writes; :mod:`childvault.cli.main` adds
it to the ``audit`` group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from childvault._i18n import _t
from childvault.cli._context import (
    Ctx,
    _,
    ngettext,
    pass_ctx,
    read_bounded,
    read_grant_arg,
    safe,
)

_MAX_DOC_BYTES = 256 << 20  # a report of a very busy record is still far smaller


def _write_json(path: Path, doc: Any) -> None:
    """Write a JSON document atomically with mode 0600 (it may hold a child's data)."""
    from childvault.keys._files import atomic_write

    data = json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
    atomic_write(path, data, mode=0o600)


def _load_doc(path: Path, what: str) -> dict[str, Any]:
    """Read a saved report or proof; accept the ``--json`` wrapper around it too."""
    from childvault.keys import IntegrityError

    raw = read_bounded(path, what, _MAX_DOC_BYTES)
    if len(raw) > _MAX_DOC_BYTES:
        raise IntegrityError(
            _t("{path} is too large to be a childvault report or proof", path=path)
        )
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise IntegrityError(
            _t(
                "{path} is not a JSON document (damaged, or not a childvault report or proof)",
                path=path,
            )
        ) from None
    if isinstance(doc, dict) and doc.get("ok") is True:
        # The `--json` output of `report subject` / `audit prove --entry`.
        for key in ("report", "proof"):
            if isinstance(doc.get(key), dict):
                return dict(doc[key])
    if not isinstance(doc, dict):
        raise IntegrityError(_t("{path} is not a childvault report or proof", path=path))
    return doc


def _vkeys(values: tuple[str, ...]) -> list[str]:
    """``--vkey`` values; ``@FILE`` reads one vkey per line."""
    out: list[str] = []
    for value in values:
        if value.startswith("@"):
            try:
                text = Path(value[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise click.BadParameter(
                    _("cannot read {path}: {why}").format(path=safe(value[1:]), why=exc.strerror),
                    param_hint="--vkey",
                ) from exc
            out.extend(line.strip() for line in text.splitlines() if line.strip())
        else:
            out.append(value.strip())
    return out


# -------------------------------------------------------------------- report


@click.group()
def report() -> None:
    """Subject-access and breach-impact reports."""


@report.command("subject")
@click.argument("record_id")
@click.option("--grant", "grant", required=True, help="Approval token, @FILE or @- for stdin.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report here (mode 0600) instead of printing it.",
)
@click.option(
    "--rights-request",
    help="The open rights request (rights open) this answers; it is closed as done.",
)
@pass_ctx
def report_subject(
    c: Ctx, record_id: str, grant: str, out: Path | None, rights_request: str | None
) -> None:
    """Subject-access report of RECORD_ID for the child or guardian (M-17, P-19).

    Needs an approval token issued to you for this record and the fields to
    disclose. The report holds the granted data, the consent and retention,
    and every log entry about the record with its inclusion proof; the child
    or guardian checks it with `childvault audit prove --verify FILE --vkey ...`.
    """
    v = c.open()
    doc = v.subject_report(record_id, read_grant_arg(grant), rights_request=rights_request)
    pending = int(doc["pending"]["entries"])
    summary = {
        "record_id": record_id,
        "entries": len(doc["entries"]),
        "pending": pending,
        "checkpoint_size": doc["checkpoint"]["size"],
        "fields_disclosed": doc["record"]["fields_disclosed"],
    }
    if out is not None:
        _write_json(out, doc)
        c.emit(
            {"ok": True, "out": str(out), **summary},
            _(
                "Wrote the subject report of {id} to {out} (mode 0600): "
                "{entries} log entries, {pending} not yet proven."
            ).format(
                id=safe(record_id), out=safe(out), entries=len(doc["entries"]), pending=pending
            )
            + (f"\n{doc['pending']['message']}" if pending else ""),
        )
        return
    if c.as_json:
        c.emit({"ok": True, **summary, "report": doc})
        return
    click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    if pending:
        click.echo(_("note: {message}").format(message=doc["pending"]["message"]), err=True)


@report.command("incident")
@click.option(
    "--actor",
    "actors",
    multiple=True,
    help="A user whose accesses are examined (repeat for several).",
)
@click.option(
    "--record",
    "records",
    multiple=True,
    help="A record whose accesses are examined (repeat for several).",
)
@click.option("--incident", default=None, help="Examine the records of this registered incident.")
@click.option("--since", required=True, help="Start: 2026-11-01, 2026-11-01T08:00 or -7d.")
@click.option("--until", default=None, help="End (inclusive; default now).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as JSON here (mode 0600).",
)
@pass_ctx
def report_incident(
    c: Ctx,
    actors: tuple[str, ...],
    records: tuple[str, ...],
    incident: str | None,
    since: str,
    until: str | None,
    out: Path | None,
) -> None:
    """Breach impact (P-21): what users read or exported, or who read records, in a window.

    Give --actor (users), --record or --incident (records), or both: the
    report then holds what those users read of those records. Officers and
    admins. Lists record ids and field names with counts, and denied attempts
    separately; never names or contact details (`incident contacts` gets
    those with an approval).
    """
    from childvault.vault._time import parse_when

    v = c.open()
    now = v.now()
    doc = v.incident_report(
        list(actors),
        parse_when(since, now=now),
        parse_when(until, now=now) if until else None,
        records=list(records),
        incident=incident,
    )
    if out is not None:
        _write_json(out, doc)

    def human() -> None:
        t = doc["totals"]
        who = _(", ").join(safe(a) for a in doc["actors"]) if doc["actors"] else _("anyone")
        click.echo(
            _(
                "Accesses by {actor} from {since} to {until}: {records} record(s), "
                "{reads} read(s), {exports} export batch(es), {denied} denied attempt(s)."
            ).format(
                actor=who,
                since=doc["since"],
                until=doc["until"],
                records=t["records"],
                reads=t["read_events"],
                exports=t["export_events"],
                denied=t["denied_attempts"],
            )
        )
        if doc["records_asked"]:
            click.echo(
                _("  limited to {count} record(s){incident}").format(
                    count=len(doc["records_asked"]),
                    incident=_(" of incident {id}").format(id=safe(doc["incident"]))
                    if doc["incident"]
                    else "",
                )
            )
        for r in doc["records"]:
            fields = sorted({*r["read"]["fields"], *r["exported"]["fields"]})
            click.echo(
                _(
                    "  {id}  {status:7} read {reads}  exported {exports}  fields {fields}  "
                    "{first} .. {last}"
                ).format(
                    id=r["record_id"],
                    status=r["status"],
                    reads=r["read"]["events"],
                    exports=r["exported"]["events"],
                    fields=",".join(fields),
                    first=r["first"],
                    last=r["last"],
                )
            )
            users = _(", ").join(f"{safe(u)} {n}" for u, n in r["users"].items())
            click.echo(_("    by {users}").format(users=users))
        for name, s in doc["fields"].items():
            click.echo(
                _(
                    "  field {name}: {records} record(s), {reads} read(s), {exports} export(s)"
                ).format(name=name, records=s["records"], reads=s["read"], exports=s["exported"])
            )
        if doc["denied"]["attempts"]:
            by = _(", ").join(f"{a} {n}" for a, n in doc["denied"]["by_action"].items())
            click.echo(_("  denied or failed attempts: {by}").format(by=by))
        click.echo(doc["contact_details"])
        if out is not None:
            click.echo(_("Written to {out}.").format(out=safe(out)))

    c.emit({"ok": True, **doc, **({"out": str(out)} if out else {})}, human)


@report.command("transfers")
@pass_ctx
def report_transfers(c: Ctx) -> None:
    """Reads that handed data to another organisation, with the recipient (P-17)."""
    rows = c.open().transfers()

    def human() -> None:
        for t in (row.to_json() for row in rows):
            click.echo(
                _(
                    "{ts}  {reader} -> {recipient}  ({provision}; {assessment})  {n} record(s): "
                    "{fields}"
                ).format(
                    ts=safe(t["ts"]),
                    reader=safe(t["reader"]),
                    recipient=safe(t["recipient"]),
                    # A transfer under consent cites no provision: its basis is the consent.
                    provision=safe(t["provision"] or _("consent")),
                    assessment=safe(t["assessment"]),
                    n=len(t["records"]),
                    fields=safe(",".join(t["fields"])),
                )
            )
        click.echo(_("{n} transfer(s)").format(n=len(rows)))

    c.emit({"ok": True, "transfers": [row.to_json() for row in rows]}, human)


# -------------------------------------------------------------------- export


@click.group()
def export() -> None:
    """Anonymised statistical exports (M-3, M-14)."""


@export.command("anonymized")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file to write (mode 0600).",
)
@click.option("--k", "k", default=5, show_default=True, type=int, help="Smallest class kept.")
@pass_ctx
def export_anonymized(c: Ctx, out: Path, k: int) -> None:
    """Write anonymised counts per class of the records consenting to statistics (officer).

    Direct identifiers are never decrypted; quasi identifiers are generalised
    (age band, district); classes of fewer than K records are suppressed.
    """
    done = c.open().export_anonymized(out, k=k)
    doc = done.to_json()
    c.emit(
        {"ok": True, **doc},
        _(
            "Wrote {classes} class(es) covering {records} record(s) to {out} (mode 0600); "
            "suppressed {suppressed} record(s) in {suppressed_classes} class(es) smaller than "
            "{k}. Excluded: {no_consent} without statistics consent, {past} past retention, "
            "{outdated} under an outdated notice."
        ).format(
            classes=doc["classes"],
            records=doc["records_exported"],
            out=safe(out),
            suppressed=doc["suppressed_records"],
            suppressed_classes=doc["suppressed_classes"],
            k=k,
            no_consent=doc["excluded"]["no_statistics_consent"],
            past=doc["excluded"]["past_retention"],
            outdated=doc["excluded"]["outdated_notice"],
        ),
    )


# --------------------------------------------------------------- audit prove


@click.command("prove")
@click.option("--entry", "entry", type=int, help="Prove log entry N (officer/admin).")
@click.option(
    "--verify",
    "verify_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Verify a saved report or proof FILE (no database needed).",
)
@click.option(
    "--complete",
    "complete_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Prove the pending entries of a saved subject report (officer/admin).",
)
@click.option("--vkey", "vkeys", multiple=True, help="Checkpoint verifier key (or @FILE).")
@click.option(
    "--previous",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --verify: an earlier report about the same record, to compare.",
)
@click.option("--strict", is_flag=True, help="With --verify: fail unless everything is proven.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the proof or completed report here (mode 0600).",
)
@pass_ctx
def audit_prove(
    c: Ctx,
    entry: int | None,
    verify_file: Path | None,
    complete_file: Path | None,
    vkeys: tuple[str, ...],
    previous: Path | None,
    strict: bool,
    out: Path | None,
) -> None:
    """Inclusion proofs: make one (--entry N), verify one (--verify FILE --vkey ...),
    or complete a staff-made subject report (--complete FILE --out FILE).

    --verify needs no --home and no user: only the file and the institution's
    published verifier keys. Exit 4 if anything fails to verify.
    """
    chosen = [x for x in (entry, verify_file, complete_file) if x is not None]
    if len(chosen) != 1:
        raise click.UsageError(_("give exactly one of --entry N, --verify FILE or --complete FILE"))
    if verify_file is not None:
        _prove_verify(c, verify_file, _vkeys(vkeys), previous, strict)
    elif complete_file is not None:
        if out is None:
            raise click.UsageError(_("--complete needs --out FILE for the completed report"))
        v = c.open()
        doc = v.complete_subject_report(_load_doc(complete_file, "--complete"))
        _write_json(out, doc)
        c.emit(
            {"ok": True, "out": str(out), "entries": len(doc["entries"])},
            _(
                "Every entry of the report is now proven against checkpoint size {size}; "
                "written to {out} (mode 0600)."
            ).format(size=doc["checkpoint"]["size"], out=safe(out)),
        )
    else:
        assert entry is not None
        v = c.open()
        bundle = v.prove_entry(entry)
        if out is not None:
            _write_json(out, bundle)

        def human() -> None:
            click.echo(_("entry {seq}: {entry}").format(seq=bundle["seq"], entry=bundle["entry"]))
            click.echo(_("leaf hash: {hash}").format(hash=bundle["leaf_hash"]))
            click.echo(_("proof ({n} hashes, leaf to root):").format(n=len(bundle["proof"])))
            for h in bundle["proof"]:
                click.echo(f"  {h}")
            click.echo(_("checkpoint (size {size}):").format(size=bundle["checkpoint"]["size"]))
            click.echo(bundle["checkpoint"]["note"], nl=False)
            if out is not None:
                click.echo(_("Written to {out}.").format(out=safe(out)))

        c.emit({"ok": True, "proof": bundle, "vkeys": v.signer_vkeys()}, human)


def _prove_verify(
    c: Ctx, path: Path, vkeys: list[str], previous: Path | None, strict: bool
) -> None:
    from childvault.keys import IntegrityError
    from childvault.vault._reports import (
        ENTRY_PROOF_FORMAT,
        SUBJECT_REPORT_FORMAT,
        verify_entry_proof,
        verify_subject_report,
    )

    if not vkeys:
        raise click.UsageError(
            _(
                "--verify needs the institution's verifier keys: --vkey VKEY (repeatable) or "
                "--vkey @FILE"
            )
        )
    doc = _load_doc(path, "--verify")
    fmt = doc.get("format")
    if fmt == SUBJECT_REPORT_FORMAT:
        earlier = _load_doc(previous, "--previous") if previous is not None else None
        result = verify_subject_report(doc, vkeys, previous=earlier)
    elif fmt == ENTRY_PROOF_FORMAT:
        if previous is not None:
            raise click.UsageError(_("--previous applies to subject reports only"))
        result = verify_entry_proof(doc, vkeys)
    else:
        raise IntegrityError(
            _t("{path} is not a childvault subject report or entry proof", path=path)
        )
    if strict and not result.complete:
        unbound = not result.data_authenticated and result.kind == "subject-report"
        raise IntegrityError(
            _t(
                "{path} verified only partly: {n} entr(y/ies) not yet proven{unbound}; "
                "ask the institution for a completed report (`audit prove --complete`)",
                path=path,
                n=len(result.pending),
                unbound=_t(", and its data is not yet bound to a signed checkpoint")
                if unbound
                else "",
            )
        )

    def human() -> None:
        what = (
            _("record {id}").format(id=safe(result.record_id))
            if result.record_id
            else _("log entry")
        )
        n = len(result.proven)
        click.echo(
            ngettext(
                "ok: {n} entry about {what} proven against the checkpoint of {size} entries "
                "signed by {signers}.",
                "ok: {n} entries about {what} proven against the checkpoint of {size} entries "
                "signed by {signers}.",
                n,
            ).format(
                n=n,
                what=what,
                size=result.checkpoint_size,
                signers=safe(_(", ").join(result.signers)),
            )
        )
        if result.kind == "subject-report":
            click.echo(
                _("The report's data, consent and bookkeeping are bound to the signed log.")
                if result.data_authenticated
                else _("warning: the report's data is not yet bound to a signed checkpoint.")
            )
        if result.pending:
            click.echo(
                ngettext(
                    "warning: {n} entry newer than the checkpoint could not be proven yet "
                    "(seq {seqs}): ask the institution for a completed report "
                    "(`childvault audit prove --complete`).",
                    "warning: {n} entries newer than the checkpoint could not be proven yet "
                    "(seq {seqs}): ask the institution for a completed report "
                    "(`childvault audit prove --complete`).",
                    len(result.pending),
                ).format(n=len(result.pending), seqs=_(", ").join(map(str, result.pending)))
            )
        if previous is not None:
            click.echo(_("Every entry proven in the earlier report is unchanged."))

    c.emit(result.to_json(), human)
