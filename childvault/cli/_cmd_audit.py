"""``childvault audit``: verify, log and checkpoint (``audit prove`` is in
:mod:`childvault.cli._cmd_reports` with the other proof and report files)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from childvault.cli._context import Ctx, _, pass_ctx, safe


@click.group()
def audit() -> None:
    """Verify and inspect the audit log."""


@audit.command("verify")
@click.option(
    "--full",
    is_flag=True,
    help="Check every entry's signature again, not only those after your last verification.",
)
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    envvar="CHILDVAULT_WITNESS_KEYS",
    help="Verifier key of an HTTP witness: check its cosignatures too (repeatable; default: "
    "the keys recorded with `childvault witness-keys add`).",
)
@pass_ctx
def audit_verify(c: Ctx, full: bool, witness_keys: tuple[str, ...]) -> None:
    """Verify the whole log, its checkpoints and the witness. Exit 4 on failure."""
    v = c.open()
    report = v.verify_audit(full=full)
    doc = report.to_json()
    human = _(
        "ok: {entries} entries, root {root}, {stored} stored and {witnessed} "
        "witnessed checkpoint(s) verified."
    ).format(
        entries=report.entries,
        root=report.root.hex(),
        stored=report.checkpoints,
        witnessed=report.witnessed,
    )
    from childvault._i18n import localize
    from childvault.vault._doctor import (
        recorded_witness_keys,
        witness_key_changes,
        witness_keys_changed_message,
    )

    recorded = recorded_witness_keys(v)
    if not witness_keys and recorded:
        # The recorded keys are one admin's setting: say when they changed (RV-3).
        changes = witness_key_changes(v)
        if changes:
            doc["witness_keys_changed"] = changes
            human += "\n" + _("warning: {message}").format(
                message=safe(localize(witness_keys_changed_message(changes)))
            )
    if witness_keys and recorded and set(witness_keys) != set(recorded):
        # An explicit key still counts; the disagreement is reported, not hidden.
        doc["witness_keys_recorded"] = recorded
        human += "\n" + _(
            "warning: the given witness keys differ from those recorded in the vault: {keys}"
        ).format(keys=safe(_(", ").join(recorded)))
    witness_keys = tuple(witness_keys) or tuple(recorded)
    if witness_keys:
        # Only with witness keys (given or recorded): the --json shape without them
        # stays as it was.
        cosigned = v.verify_cosignatures(list(witness_keys))
        doc["witness_cosigned"] = cosigned["cosigned"]
        doc["witness_cosigned_size"] = cosigned["cosigned_size"]
        human += "\n" + _(
            "{cosigned} checkpoint(s) cosigned by the witness, up to {size} entries."
        ).format(cosigned=cosigned["cosigned"], size=cosigned["cosigned_size"])
    c.emit(doc, human)


@audit.command("log")
@click.option("--record", "record_id", help="Only entries about this record.")
@click.option("--user", "actor", help="Only entries by this user.")
@click.option("--action", help="Only this action (grant.read) or family (request.).")
@click.option("--since", help="From this time: 2026-11-01, 2026-11-01T08:00Z or -7d.")
@click.option("--until", help="Before this time (same forms as --since).")
@click.option("--tail", type=click.IntRange(min=1), help="Only the last N matching entries.")
@pass_ctx
def audit_log(
    c: Ctx,
    record_id: str | None,
    actor: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
    tail: int | None,
) -> None:
    """Print log entries (with --json: the exact canonicalised objects and hashes).

    Times are UTC, as in the log itself; --since/--until without an offset
    are UTC too.
    """
    from childvault._labels import ACTION_LABELS
    from childvault.vault._svc_audit import select_entries
    from childvault.vault._time import parse_when

    if action is not None and not (
        action in ACTION_LABELS
        or (action.endswith(".") and any(a.startswith(action) for a in ACTION_LABELS))
    ):
        # A misspelt action matches nothing: an empty answer would read as "no
        # such reads happened". Refused as a usage error, before anything is logged.
        raise click.BadParameter(
            _(
                "unknown action {action}: use one such as grant.read, or a family such as request."
            ).format(action=safe(action)),
            param_hint="--action",
        )
    v = c.open()
    now = v.now()
    start = parse_when(since, now=now) if since else None
    end = parse_when(until, now=now) if until else None
    entries = select_entries(
        v.audit_entries(record=record_id),
        user=actor,
        action=action,
        since=start,
        until=end,
        tail=tail,
    )
    if c.as_json:
        click.echo(json.dumps({"ok": True, "entries": list(entries)}, ensure_ascii=False, indent=2))
        return
    from childvault._i18n import environment_locale
    from childvault._labels import action_label, outcome_label

    # English output is the log's own vocabulary (action codes), unchanged.
    translated = environment_locale() != "en"
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
        # Actors, reasons and details were typed by people: escaped for the terminal.
        action, outcome = safe(e["action"]), safe(e["outcome"])
        if translated:
            # The reader's language first; the code stays, for --action filters.
            label = action_label(str(e["action"]))
            action = action if label == e["action"] else f"{label}（{action}）"
            outcome = safe(outcome_label(str(e["outcome"])))
        click.echo(
            f"{e['seq']:>7} {safe(e['ts'])} {safe(e['actor']):12} "
            f"{action:18} {outcome:7} {safe(what)}"
        )


@audit.command("checkpoint")
@pass_ctx
def audit_checkpoint(c: Ctx) -> None:
    """Sign a checkpoint of the log and append it to the witness (officer/admin)."""
    v = c.open()
    note = v.checkpoint()
    c.emit(
        {"ok": True, "checkpoint": note, "vkeys": v.signer_vkeys(), "witness": str(v.witness_path)},
        _("{note}\nAppended to {witness}.").format(note=note, witness=safe(v.witness_path)),
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

    Unmatched decrypts (e.g. an officer decrypting directly through Vault) and
    unwraps of their wrapping tokens that childvault's log does not account for
    (e.g. an officer unwrapping an approved grant's token) are listed with who,
    when and which path; exit 4 if there is any.
    """
    result = c.open().reconcile_vault_audit(vault_audit, device=device)
    report = result.to_json()
    lines = [
        _(
            "{decrypts} Transit decrypt(s) in {file}: {matched} matched to childvault "
            "approvals, {unmatched} unmatched."
        ).format(
            decrypts=report["decrypts"],
            file=safe(vault_audit),
            matched=report["matched"],
            unmatched=len(report["unmatched"]),
        )
    ]
    reasons = {
        "unwrap-not-approved": _("no childvault approval recorded this wrapping token"),
        "unwrap-not-requester": _("unwrapped by someone other than the grant's requester"),
        "unwrap-no-read": _("no childvault read by the grant's requester accounts for it"),
    }
    if report["unwraps"] or report["unmatched_unwraps"]:
        lines.append(
            _(
                "{unwraps} unwrap(s) of their wrapping tokens: {unmatched} not accounted for "
                "by childvault's log."
            ).format(unwraps=report["unwraps"], unmatched=len(report["unmatched_unwraps"]))
        )
    for item in [*report["unmatched"], *report["unmatched_unwraps"]]:
        who = item["who"]
        # Names and addresses come from the server's log: escaped for the terminal.
        lines.append(
            _(
                "UNMATCHED {time} {path} by {name} (role {role}, entity {entity}, "
                "policies {policies}, from {address})"
            ).format(
                time=safe(item["time"]),
                path=safe(item["path"]),
                name=safe(who["display_name"] or "?"),
                role=safe(who["role_name"] or "-"),
                entity=safe(who["entity_id"] or "-"),
                policies=safe(",".join(who["policies"]) or "-"),
                address=safe(who["remote_address"] or "?"),
            )
            + ("" if item["wrapped"] else _(" NOT response-wrapped"))
            + (": " + reasons[item["reason"]] if item["reason"] in reasons else "")
        )
    c.emit(report, "\n".join(lines))
    if report["unmatched"] or report["unmatched_unwraps"]:
        raise click.exceptions.Exit(4)


@audit.command("rebaseline")
@click.option(
    "--from-backup",
    "from_backup",
    is_flag=True,
    required=True,
    help="Confirm the database was restored from a backup (required).",
)
@pass_ctx
def audit_rebaseline(c: Ctx, from_backup: bool) -> None:
    """After restoring a backup: record the lost entries in the witness (officers).

    Verifies the restored log against every witnessed checkpoint up to its own
    size, then appends a signed "restored at entry N; entries N..M-1 lost"
    note to the witness, so approvals resume and the loss stays visible.
    """
    if not from_backup:
        raise click.UsageError(_("pass --from-backup to confirm the database was restored"))
    v = c.open()
    done = v.rebaseline()
    c.emit(
        {**done.to_json(), "witness": str(v.witness_path)},
        _(
            "Restored at entry {n}; entries {first} to {last} are lost. "
            "A signed note saying so was appended to {witness}."
        ).format(
            n=done.restored_at,
            first=done.lost_from,
            last=done.lost_to,
            witness=safe(v.witness_path),
        ),
    )
