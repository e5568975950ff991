"""Writing and listing records: ``record add``, ``import``, ``list``, ``find``."""

from __future__ import annotations

from pathlib import Path

import click

from childvault._i18n import environment_locale, localize
from childvault.cli._context import (
    Ctx,
    _,
    consent_from_options,
    field_names,
    parse_assignments,
    pass_ctx,
    progress_bar,
    purpose_title,
    require_regular_file,
    safe,
)


@click.group(invoke_without_command=False)
def record() -> None:
    """Add records one at a time (see also `import`)."""


@record.command("add")
@click.option("--type", "type_name", default="child", show_default=True)
@click.option("--field", "fields", multiple=True, metavar="NAME=VALUE", help="Repeatable.")
@click.option("--consent-by", type=click.Choice(["guardian", "child"]), required=True)
@click.option("--consented-at", help="Date of consent (default today).")
@click.option("--notice-version", help="Notice version shown (default: current).")
@click.option("--purpose", "purposes", multiple=True, required=True, help="Repeatable.")
@click.option("--retain-until", required=True, help="Retention date (YYYY-MM-DD).")
@click.option("--guardian-informed", is_flag=True, help="Child consented; guardian informed.")
@click.option(
    "--guardian-also",
    is_flag=True,
    help="Child of 14+ who cannot express a will: guardian consents as well.",
)
@click.option(
    "--consent-party",
    type=click.Choice(["guardian", "child", "institution", "civil_affairs"]),
    help="Who consented: a guardian person, the child, or the institution or civil affairs "
    "department as statutory guardian.",
)
@click.option("--consent-relation", help="The consenting guardian's relation (e.g. 母亲).")
@click.option(
    "--consent-form",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The signed consent form; its SHA-256 is kept (needed when back-dated).",
)
@pass_ctx
def record_add(
    c: Ctx,
    type_name: str,
    fields: tuple[str, ...],
    consent_by: str,
    consented_at: str | None,
    notice_version: str | None,
    purposes: tuple[str, ...],
    retain_until: str,
    guardian_informed: bool,
    guardian_also: bool,
    consent_party: str | None,
    consent_relation: str | None,
    consent_form: Path | None,
) -> None:
    """Add one record (staff)."""
    v = c.open()
    consent = consent_from_options(
        v,
        purposes=list(purposes),
        retain_until=retain_until,
        consent_by=consent_by,
        consented_at=consented_at,
        notice_version=notice_version,
        guardian_informed=guardian_informed,
        guardian_also=guardian_also,
        consent_party=consent_party,
        consent_relation=consent_relation,
        consent_form=consent_form,
    )
    given = parse_assignments(fields)
    # Chinese labels (姓名=...) are accepted as field names.
    values = dict(zip(field_names(v, given, type_name), given.values(), strict=True))
    record_id = v.add_record(type_name, values, consent)
    c.emit({"ok": True, "record_id": record_id}, _("Added record {id}.").format(id=safe(record_id)))


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--type", "type_name", help="Record type (default: the schema's first).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    help="Default: by extension (.jsonl/.ndjson = JSON Lines, else CSV).",
)
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows, report the rest.")
@click.option(
    "--encoding",
    type=click.Choice(["utf-8", "gbk", "gb18030"], case_sensitive=False),
    default=None,
    help="Text encoding of FILE (default utf-8; gbk for Excel/WPS on Chinese Windows).",
)
@click.option(
    "--allow-duplicates",
    is_flag=True,
    help="Import rows whose identity number repeats a row or a record of the vault.",
)
@click.option(
    "--confirm-backdated",
    is_flag=True,
    help="Officer: confirm rows whose consent date is beyond the back-dating window "
    "(each needs its consent form's SHA-256 in the consent_form_sha256 column).",
)
@pass_ctx
def import_(
    c: Ctx,
    file: Path,
    type_name: str | None,
    fmt: str | None,
    skip_invalid: bool,
    encoding: str | None,
    allow_duplicates: bool,
    confirm_backdated: bool,
) -> None:
    """Import records from a CSV or JSON Lines FILE (staff). Resumable.

    Column names may be the field names or the schema's Chinese labels (姓名,
    性别, 出生日期...). A row repeating the identity number of an earlier row
    or of a record already in the vault is refused as a duplicate. A row whose
    consent date is more than the back-dating window (30 days) before today is
    refused unless it carries its signed consent form's SHA-256 and an officer
    imports with --confirm-backdated.
    """
    # Before any passphrase: a device or FIFO (/dev/zero) would never end.
    require_regular_file(file, "FILE")
    v = c.open()
    with progress_bar(c, _("Importing")) as progress:
        report = v.import_file(
            file,
            type_name=type_name,
            skip_invalid=skip_invalid,
            fmt=fmt,
            progress=progress,
            encoding=encoding,
            allow_duplicates=allow_duplicates,
            confirm_backdated=confirm_backdated,
        )

    def human() -> None:
        name = safe(file.name)
        if report.already_done and not report.imported:
            click.echo(
                _("{file} was already imported ({rows} rows); nothing to do.").format(
                    file=name, rows=report.rows
                )
            )
        else:
            resumed = (
                _(" (resumed after row {row})").format(row=report.already_done)
                if report.already_done
                else ""
            )
            click.echo(
                _("Imported {n} records from {file}{resumed}.").format(
                    n=report.imported, file=name, resumed=resumed
                )
            )
        for row, reason in report.errors:
            click.echo(
                _("skipped row {row}: {reason}").format(row=row, reason=safe(localize(reason))),
                err=True,
            )

    c.emit({"ok": True, **report.to_json()}, human)


#: Records shown by `list` unless --limit or --all says otherwise.
PAGE = 100


@click.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=PAGE,
    show_default=True,
    help="Show at most this many records (a page).",
)
@click.option("--after", metavar="RECORD_ID", help="Start after this record id (the next page).")
@click.option(
    "--all", "show_all", is_flag=True, help="Show every record (slower on a large vault)."
)
@pass_ctx
def list_(c: Ctx, limit: int, after: str | None, show_all: bool) -> None:
    """List records: ids and bookkeeping only, never values."""
    # A page of records, each checked against its signed record statement; a
    # record whose rows were altered is shown marked and the exit code is 4.
    from childvault.cli._context import EXIT_INTEGRITY

    v = c.open()
    page = v.list_page(after=after, limit=None if show_all else limit)
    unverified = dict(page.unverified)
    if c.as_json:
        c.emit(
            {
                "ok": not unverified,
                "records": [r.to_json() for r in page.records],
                "total": page.total,
                "next_after": page.next_after,
                "verified": page.verifiable,
                "unverified": unverified,
            }
        )
    else:
        # Translated once, not once a line: a page can be long (`--all`).
        line = _("{id}  {type:8} v{version}  retain until {until}  purposes {purposes}  fields {n}")
        mark = _("  UNVERIFIED: {why}")
        # Codes in English; a Chinese reader gets the labels (个案管理 (case_management)),
        # each looked up once for the page.
        english = environment_locale() == "en"
        titles: dict[str, str] = {}

        def purposes(codes: tuple[str, ...]) -> str:
            if english:
                return ",".join(codes)
            return _(", ").join(
                titles[p] if p in titles else titles.setdefault(p, purpose_title(p)) for p in codes
            )

        out = []
        for r in page.records:
            text = line.format(
                id=safe(r.id),
                type=safe(r.type),
                version=r.version,
                until=safe(r.retain_until.isoformat()),
                purposes=safe(purposes(r.purposes)),
                n=len(r.fields),
            )
            if r.id in unverified:
                text += mark.format(why=safe(unverified[r.id]))
            out.append(text)
        out.append(_("{n} record(s)").format(n=len(page.records)))
        if page.next_after is not None:
            out.append(
                _("{total} in all; next page: `childvault list --after {after}`, or --all").format(
                    total=page.total, after=safe(page.next_after)
                )
            )
        if not page.verifiable:
            out.append(
                _(
                    "not verified: this identity file holds no trust anchor "
                    "(an admin runs `childvault upgrade`)"
                )
            )
        click.echo("\n".join(out))
    if unverified:
        if not c.as_json:
            click.echo(
                _(
                    "error: {n} record(s) differ from their signed version: the database was "
                    "altered. Run `childvault audit verify` and alert the officers"
                ).format(n=len(unverified)),
                err=True,
            )
        click.get_current_context().exit(EXIT_INTEGRITY)


@click.command()
@click.option(
    "--field",
    "assignment",
    required=True,
    metavar="NAME=VALUE",
    help="A searchable field (e.g. id_number) and the value to look for.",
)
@click.option("--type", "type_name", help="Record type (default: the schema's first).")
@pass_ctx
def find(c: Ctx, assignment: str, type_name: str | None) -> None:
    """Find candidate records by a searchable field (blind index; logged).

    The index is truncated on purpose, so some candidates may not match: request
    access to the candidates and read to tell them apart.
    """
    ((name, value),) = parse_assignments((assignment,)).items()
    v = c.open()
    (name,) = field_names(v, [name], type_name)
    ids = v.find(name, value, type_name=type_name)

    def human() -> None:
        for rid in ids:
            click.echo(safe(rid))
        click.echo(_("{n} candidate(s); confirm with an approved read.").format(n=len(ids)))

    c.emit({"ok": True, "field": name, "candidates": ids}, human)
