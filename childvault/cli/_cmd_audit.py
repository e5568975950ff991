"""``childvault audit``: verify, log and checkpoint (``audit prove`` is in
:mod:`childvault.cli._cmd_reports` with the other proof and report files)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from childvault.cli._context import Ctx, pass_ctx


@click.group()
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


@audit.command("reconcile")
@click.option(
    "--vault-audit",
    "vault_audit",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="OpenBao/Vault file audit log to check.",
)
@click.option(
    "--device",
    default="childvault",
    show_default=True,
    help="Path of that audit device in Vault (its HMAC key is used to compare).",
)
@pass_ctx
def audit_reconcile(c: Ctx, vault_audit: Path, device: str) -> None:
    """Vault mode: every Transit decrypt in Vault's audit log must match an approval.

    Unmatched decrypts (e.g. an officer decrypting directly through Vault) are
    listed with who, when and which path; exit 4 if there is any.
    """
    report = c.open().reconcile_vault_audit(vault_audit, device=device)
    lines = [
        f"{report['decrypts']} Transit decrypt(s) in {vault_audit}: "
        f"{report['matched']} matched to childvault approvals, "
        f"{len(report['unmatched'])} unmatched."
    ]
    for item in report["unmatched"]:
        who = item["who"]
        lines.append(
            f"UNMATCHED {item['time']} {item['path']} by {who['display_name'] or '?'} "
            f"(role {who['role_name'] or '-'}, entity {who['entity_id'] or '-'}, "
            f"policies {','.join(who['policies']) or '-'}, from {who['remote_address'] or '?'})"
            + ("" if item["wrapped"] else " NOT response-wrapped")
        )
    c.emit(report, "\n".join(lines))
    if report["unmatched"]:
        raise click.exceptions.Exit(4)
