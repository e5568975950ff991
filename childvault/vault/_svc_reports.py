"""Reports: subject access, breach impact and audit inclusion proofs."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError, NotFound, UsageError, check_user_name
from childvault.keys._encoding import check_hex_id
from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._merkle import leaf_hash
from childvault.vault._note import Checkpoint, verify_note, vkey
from childvault.vault._reports import (
    ENTRY_PROOF_FORMAT,
    INCIDENT_FORMAT,
    SUBJECT_REPORT_FORMAT,
    _about_digest,
    _check_prefixes,
    _commitment,
    _consent_json,
    _decoded,
    _entry_text,
    _inclusion_proofs,
    _Leaves,
    _origin,
    _pending_note,
    _Snapshot,
    redact_entry,
    redacted_digest,
    verify_subject_report,
)
from childvault.vault._session import Session
from childvault.vault._svc_access import AccessService
from childvault.vault._svc_audit import AuditService
from childvault.vault._time import iso


class ReportService:
    """Subject, incident and proof reports."""

    def __init__(self, session: Session, audit: AuditService, access: AccessService) -> None:
        self.s = session
        self._audit = audit
        self._access = access

    def _latest_checkpoint(self) -> tuple[str, Checkpoint] | None:
        """The largest stored checkpoint, its signature and origin checked."""
        rows = self.s.db.checkpoints.all()
        if not rows:
            return None
        row = rows[-1]
        try:
            cp, _ = verify_note(row.note, self.s.signers())
        except IntegrityError as exc:
            raise IntegrityError(
                _t(
                    "the latest stored checkpoint does not verify ({exc}): run `childvault "
                    "audit verify`",
                    exc=exc,
                )
            ) from None
        if cp.origin != _origin(self.s.vault_id) or (cp.size, cp.root) != (row.size, row.root):
            raise IntegrityError(
                _t(
                    "the latest stored checkpoint does not match this log: run `childvault "
                    "audit verify`"
                )
            )
        return row.note, cp

    def _scan(
        self, leaves: _Leaves, want: Callable[[bytes], bool], out: list[tuple[int, bytes]]
    ) -> None:
        """Append the leaves from ``len(leaves)`` on, re-hashing every entry."""
        start = len(leaves)
        for seq, entry, digest in self.s.db.audit.entries(start):
            if seq != len(leaves):
                raise IntegrityError(
                    _t(
                        "audit log entry {n} is missing: run `childvault audit verify`",
                        n=len(leaves),
                    )
                )
            leaf = leaf_hash(entry)
            if leaf != digest:
                raise IntegrityError(
                    _t("audit log entry {seq} was modified: run `childvault audit verify`", seq=seq)
                )
            leaves.append(leaf)
            if want(entry):
                out.append((seq, entry))

    def _snapshot(
        self,
        want: Callable[[bytes], bool],
        *,
        sign: bool,
        moment: datetime,
        leaves: _Leaves | None = None,
        wanted: list[tuple[int, bytes]] | None = None,
    ) -> _Snapshot:
        """Scan the log for proofs; with ``sign``, first cover it with a new checkpoint.

        Fails closed (:class:`IntegrityError`) if an entry's bytes no longer
        match its hash, or the log does not extend the latest checkpoint: a
        proof from a rewritten log would be worthless, and a new checkpoint
        over it would bless the rewrite. ``leaves`` and ``wanted`` continue an
        earlier scan of the same log.
        """
        leaves = leaves if leaves is not None else _Leaves()
        wanted = wanted if wanted is not None else []
        self._scan(leaves, want, wanted)
        latest = self._latest_checkpoint()
        held = [latest[1]] if latest is not None else []
        _check_prefixes(leaves, held + self._witnessed())
        if sign and (latest is None or latest[1].size < len(leaves)):
            self._audit.checkpoint(now=moment)
            self._scan(leaves, want, wanted)
            latest = self._latest_checkpoint()
            if latest is not None:
                _check_prefixes(leaves, [latest[1]])
        if latest is None:
            return _Snapshot(leaves, wanted, None, None)
        return _Snapshot(leaves, wanted, latest[0], latest[1])

    def _witnessed(self) -> list[Checkpoint]:
        """The checkpoints in the witness file, each signature and origin checked."""
        out: list[Checkpoint] = []
        signers = self.s.signers()
        for number, note in enumerate(_audit.read_witness(self.s.witness_path), start=1):
            try:
                cp, _ = verify_note(note, signers)
            except IntegrityError:
                raise IntegrityError(
                    _t(
                        "witness checkpoint {number} does not verify: run `childvault audit "
                        "verify`",
                        number=number,
                    )
                ) from None
            if cp.origin != _origin(self.s.vault_id):
                raise IntegrityError(
                    _t(
                        "witness checkpoint {number} is for another log: check the witness file",
                        number=number,
                    )
                )
            out.append(cp)
        return out

    @staticmethod
    def _checkpoint_json(snap: _Snapshot) -> dict[str, Any]:
        if snap.note is None or snap.checkpoint is None:
            raise IntegrityError(
                _t(
                    "the audit log has no signed checkpoint yet: ask an officer to run "
                    "`childvault audit checkpoint`"
                )
            )
        return {"note": snap.note, "size": snap.checkpoint.size, "root": snap.checkpoint.root.hex()}

    def _entries_json(self, snap: _Snapshot, subject: str) -> list[dict[str, Any]]:
        """The report's entries; other records' ids redacted (``_reports`` module docstring)."""
        size = snap.checkpoint.size if snap.checkpoint is not None else 0
        proofs = _inclusion_proofs(snap.leaves, size, [s for s, _ in snap.wanted if s < size])
        out = []
        for seq, entry in snap.wanted:
            redacted = redact_entry(entry, subject)
            item: dict[str, Any] = {
                "seq": seq,
                "entry": _entry_text(seq, entry if redacted is None else redacted),
                "leaf_hash": snap.leaves.get(seq).hex(),
                "checkpointed": seq < size,
                "proof": [h.hex() for h in proofs.get(seq, [])],
            }
            if redacted is not None:
                item["redacted"] = True
            out.append(item)
        return out

    def prove_entry(self, seq: int, *, now: datetime | None = None) -> dict[str, Any]:
        """Officer or admin: an inclusion proof of log entry ``seq`` (``audit prove``).

        If the latest checkpoint does not cover the entry yet, a new one is
        signed (and witnessed) first. The result is a self-contained document
        (format :data:`ENTRY_PROOF_FORMAT`) that :func:`verify_entry_proof`
        checks without the database: the entry as its exact canonical JSON
        text, its leaf hash, the RFC 6962 audit path and the signed checkpoint.
        """
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "audit.read", moment, _t("proving log entries"))
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise UsageError(_t("--entry must be a log sequence number (0 or more)"))
        if self.s.db.audit.entry_at(seq) is None:
            raise NotFound(_t("no audit log entry {seq}", seq=seq))
        latest = self._latest_checkpoint()
        sign = latest is None or latest[1].size <= seq
        snap = self._snapshot(lambda _e: False, sign=sign, moment=moment)
        if snap.checkpoint is None or snap.checkpoint.size <= seq:
            raise IntegrityError(_t("no signed checkpoint covers entry {seq} yet", seq=seq))
        proof = _inclusion_proofs(snap.leaves, snap.checkpoint.size, [seq])[seq]
        entry = self.s.db.audit.entry_at(seq)
        if entry is None or leaf_hash(entry[0]) != snap.leaves.get(seq):
            raise IntegrityError(
                _t("audit log entry {seq} changed while it was being proven", seq=seq)
            )
        return {
            "format": ENTRY_PROOF_FORMAT,
            "vault_id": self.s.vault_id,
            "seq": seq,
            "entry": _entry_text(seq, entry[0]),
            "leaf_hash": snap.leaves.get(seq).hex(),
            "proof": [h.hex() for h in proof],
            "checkpoint": self._checkpoint_json(snap),
        }

    def subject_report(
        self, record_id: str, token: str, *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Subject-access report (M-17, P-19) for the child or guardian.

        ``token`` is an approval token issued to the acting user for this
        record: the data is read through :meth:`read_with_grant`, so the token
        is verified and the read is logged like any other; the report discloses
        exactly the granted fields. The report also gives the record's consent
        and retention and every log entry about the record, each with an
        RFC 6962 inclusion proof against the latest signed checkpoint, and is
        logged as ``report.subject`` with a salted commitment to its content.

        An officer or admin signs a new checkpoint first, so every entry is
        proven. Staff cannot sign: entries newer than the latest checkpoint
        (at least the report's own read) are marked ``"checkpointed": false``;
        an officer completes the proofs with :meth:`complete_subject_report`.
        Check the result with :func:`verify_subject_report`.
        """
        moment = self.s.now(now)
        check_hex_id(record_id, "record")
        claims, values = self._access.read_with_claims(token, [record_id], None, moment)
        data = values.get(record_id, {})
        row = self.s.db.records.get(record_id)
        if row is None:
            raise NotFound(
                _t(
                    "record {record_id} was deleted while the report was being made",
                    record_id=record_id,
                )
            )
        rtype = self.s.schema.types.get(row.type)
        order = list(rtype.fields) if rtype is not None else sorted(data)
        held = self.s.db.records.field_names(record_id)
        disclosed = [f for f in order if f in data]
        report: dict[str, Any] = {
            "format": SUBJECT_REPORT_FORMAT,
            "vault_id": self.s.vault_id,
            "institution": self.s.config.institution,
            "record_id": record_id,
            "generated_at": iso(moment),
            "generated_by": self.s.user,
            "record": {
                "type": row.type,
                "version": row.version,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
                "fields_held": [f for f in order if f in held or f in row.metadata],
                "fields_disclosed": disclosed,
                "fields_withheld": [f for f in order if f in held and f not in data],
            },
            "data": {f: data[f] for f in disclosed},
            "metadata": dict(sorted(row.metadata.items())),
            "consent": _consent_json(row),
            "retention": {
                "retain_until": row.retain_until,
                "at_expiry": "destroyed by crypto-shredding in the retention sweep (P-12)",
            },
            "grant": {"id": claims.jti, "request": claims.req, "purpose": claims.pur},
            "salt": secrets.token_hex(32),
        }
        report["commitment"] = _commitment(report)
        needle = record_id.encode("ascii")

        def about(entry: bytes) -> bool:
            return needle in entry and record_id in _decoded(entry).get("records", ())

        leaves = _Leaves()
        wanted: list[tuple[int, bytes]] = []
        self._scan(leaves, about, wanted)  # the bulk of the log, without holding the lock
        with self.s.db.transaction():
            # Under the append lock no entry can slip in between the scan and the
            # report's own entry, which records how many entries about the record
            # precede it and a digest of their leaf hashes: a verifier can then
            # tell that the report leaves none out.
            self._scan(leaves, about, wanted)
            detail: dict[str, Any] = {
                "commitment": report["commitment"],
                "about": len(wanted),
                "about_digest": _about_digest(leaves.get(s) for s, _ in wanted),
            }
            # Entries naming other records are shown redacted (issue 15): the
            # digest of what they will show binds it to this entry.
            shown = [(s, redact_entry(e, record_id)) for s, e in wanted]
            redactions = [(s, r) for s, r in shown if r is not None]
            if redactions:
                detail["redacted_digest"] = redacted_digest(redactions)
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        self.s.user,
                        "report.subject",
                        records=[record_id],
                        fields=disclosed,
                        purpose=claims.pur,
                        request=claims.req,
                        grant=claims.jti,
                        detail=detail,
                    )
                ],
                moment,
            )
        snap = self._snapshot(
            about,
            sign=bool({"officer", "admin"} & self.s.roles),
            moment=moment,
            leaves=leaves,
            wanted=wanted,
        )
        if snap.checkpoint is None:
            raise IntegrityError(
                _t(
                    "the audit log has no signed checkpoint yet: ask an officer to run "
                    "`childvault audit checkpoint`, then make the report again"
                )
            )
        report["checkpoint"] = self._checkpoint_json(snap)
        report["entries"] = self._entries_json(snap, record_id)
        report["pending"] = _pending_note(report["entries"])
        self._self_check(report)
        return report

    def complete_subject_report(
        self, report: Mapping[str, Any], *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Officer or admin: prove the entries of a staff-made report that were pending.

        Every entry the report carries must still be in the log byte for byte
        (else :class:`IntegrityError`: the report or the log was altered). A new
        checkpoint is signed if needed, and every entry gets a proof against
        it. No field value is decrypted; the report's data is passed through
        unchanged, so its commitment still verifies.
        """
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "audit.read", moment, _t("completing report proofs"))
        try:
            vault_id = report["vault_id"]
            entries = report["entries"]
            seqs = [int(e["seq"]) for e in entries]
            texts = [str(e["entry"]).encode("utf-8") for e in entries]
        except (KeyError, TypeError, ValueError, UnicodeEncodeError):
            raise UsageError(_t("this file is not a childvault subject report")) from None
        if report.get("format") != SUBJECT_REPORT_FORMAT:
            raise UsageError(_t("this file is not a childvault subject report"))
        if vault_id != self.s.vault_id:
            raise UsageError(_t("this report is from another vault"))
        record_id = str(report.get("record_id"))
        raw: list[bytes] = []
        for seq, text in zip(seqs, texts, strict=True):
            stored = self.s.db.audit.entry_at(seq) if seq >= 0 else None
            # A redacted entry is compared in its redacted form.
            shown = None if stored is None else redact_entry(stored[0], record_id)
            if stored is None or (stored[0] if shown is None else shown) != text:
                raise IntegrityError(
                    _t(
                        "entry {seq} of the report differs from the audit log: the report or "
                        "the log was altered; run `childvault audit verify`",
                        seq=seq,
                    )
                )
            raw.append(stored[0])
        latest = self._latest_checkpoint()
        sign = latest is None or latest[1].size <= max(seqs, default=-1)
        snap = self._snapshot(lambda _e: False, sign=sign, moment=moment)
        snap.wanted = list(zip(seqs, raw, strict=True))
        out = dict(report)
        out["checkpoint"] = self._checkpoint_json(snap)
        out["entries"] = self._entries_json(snap, record_id)
        out["pending"] = _pending_note(out["entries"])
        # Never hand back a report that does not verify: in particular one whose
        # data was altered after it was made (its commitment no longer matches).
        self._self_check(out)
        return out

    def _self_check(self, report: Mapping[str, Any]) -> None:
        vkeys = [vkey(name, key) for name, key in sorted(self.s.signers().items())]
        try:
            verify_subject_report(report, vkeys)
        except IntegrityError as exc:
            raise IntegrityError(
                _t("the report does not verify, so it is not issued: {exc}", exc=exc)
            ) from None

    def incident_report(
        self,
        actor: str,
        since: datetime,
        until: datetime | None = None,
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Officer or admin: breach impact of one user (P-21), from the audit log.

        Lists the records and fields ``actor`` read (``grant.read`` entries
        with outcome ok) or decrypted for an anonymised export
        (``export.anonymized``) between ``since`` and ``until`` (inclusive;
        default now), with counts per record and per field, and counts their
        denied or failed attempts separately. It is the basis for notifying
        the affected children and guardians; it holds record ids and field
        names only, no name or contact detail: those are read, like any data,
        through an approval. Logged as ``report.incident``.
        """
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "report.incident", moment, _t("breach-impact reports"))
        check_user_name(actor)
        end = until if until is not None else moment
        if since.tzinfo is None or end.tzinfo is None:
            raise UsageError(_t("give --since and --until with a time zone (or as UTC)"))
        if since > end:
            raise UsageError(_t("--since must not be after --until"))
        lo, hi = iso(since), iso(end)
        self.s.log(
            [
                Event(
                    self.s.user,
                    "report.incident",
                    detail={"actor": actor, "since": lo, "until": hi},
                )
            ],
            moment,
        )
        per_record: dict[str, dict[str, Any]] = {}
        per_field: dict[str, dict[str, Any]] = {}
        denied_by_action: dict[str, int] = {}
        denied_records: dict[str, int] = {}
        denied = 0
        scanned = 0
        needle = json.dumps(actor).encode("utf-8")
        for seq, entry, digest in self.s.db.audit.entries():
            scanned += 1
            if leaf_hash(entry) != digest:
                raise IntegrityError(
                    _t("audit log entry {seq} was modified: run `childvault audit verify`", seq=seq)
                )
            if needle not in entry:
                continue
            obj = _decoded(entry)
            ts = obj.get("ts")
            if obj.get("actor") != actor or not isinstance(ts, str) or not lo <= ts <= hi:
                continue
            action, outcome = obj.get("action"), obj.get("outcome")
            records = [r for r in obj.get("records", ()) if isinstance(r, str)]
            fields = [f for f in obj.get("fields", ()) if isinstance(f, str)]
            if outcome in ("denied", "error"):
                denied += 1
                denied_by_action[str(action)] = denied_by_action.get(str(action), 0) + 1
                for rid in records:
                    denied_records[rid] = denied_records.get(rid, 0) + 1
                continue
            if outcome != "ok" or action not in ("grant.read", "export.anonymized") or not records:
                continue
            kind = "read" if action == "grant.read" else "exported"
            for rid in records:
                item = per_record.setdefault(
                    rid,
                    {
                        "record_id": rid,
                        "read": {"events": 0, "fields": {}},
                        "exported": {"events": 0, "fields": {}},
                        "first": ts,
                        "last": ts,
                    },
                )
                item[kind]["events"] += 1
                item["last"] = ts
                for f in fields:
                    item[kind]["fields"][f] = item[kind]["fields"].get(f, 0) + 1
                    stats = per_field.setdefault(f, {"read": 0, "exported": 0, "records": set()})
                    stats[kind] += 1
                    stats["records"].add(rid)
        records_out = []
        for rid in sorted(per_record):
            item = per_record[rid]
            item["status"] = self._record_status(rid)
            records_out.append(item)
        return {
            "format": INCIDENT_FORMAT,
            "vault_id": self.s.vault_id,
            "generated_at": iso(moment),
            "generated_by": self.s.user,
            "actor": actor,
            "since": lo,
            "until": hi,
            "records": records_out,
            "fields": {
                f: {"read": s["read"], "exported": s["exported"], "records": len(s["records"])}
                for f, s in sorted(per_field.items())
            },
            "denied": {
                "attempts": denied,
                "by_action": dict(sorted(denied_by_action.items())),
                "records": dict(sorted(denied_records.items())),
            },
            "totals": {
                "records": len(records_out),
                "read_events": sum(r["read"]["events"] for r in records_out),
                "export_events": sum(r["exported"]["events"] for r in records_out),
                "denied_attempts": denied,
                "log_entries_scanned": scanned,
            },
            "contact_details": (
                "This report holds record ids and field names only, never names or contact "
                "details. To notify the affected children and guardians (P-21), file an access "
                "request for the contact fields of these records (for example guardian_name "
                "and guardian_phone) and have another officer approve it."
            ),
        }

    def _record_status(self, record_id: str) -> str:
        if self.s.db.records.get(record_id) is not None:
            return "live"
        return "deleted" if self.s.db.records.tombstone(record_id) is not None else "unknown"
