"""Reports: subject access, breach impact and audit inclusion proofs."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
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
        actor: str | Sequence[str] | None,
        since: datetime,
        until: datetime | None = None,
        *,
        records: Sequence[str] = (),
        incident: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Officer or admin: breach impact of users or records (P-21), from the audit log.

        Lists the records and fields read (``grant.read`` entries with outcome
        ok) or decrypted for an anonymised export (``export.anonymized``)
        between ``since`` and ``until`` (inclusive; default now), with counts
        per record, per field and per user, and counts denied or failed
        attempts separately. ``actor`` is one user name or several (None or
        empty: anyone); ``records`` and the records of ``incident`` limit the
        report to those records (none given: any record). The two filters
        combine: several users and an incident's records give what those
        users read of those records. It is the basis for notifying the
        affected children and guardians; it holds record ids and field names
        only, no name or contact detail: ``incident contacts`` gets those
        through an approval. Logged as ``report.incident``.
        """
        from childvault.vault._svc_incidents import IncidentService

        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "report.incident", moment, _t("breach-impact reports"))
        actors = [actor] if isinstance(actor, str) else list(actor or ())
        for name in actors:
            check_user_name(name)
        actors = list(dict.fromkeys(actors))
        wanted = list(dict.fromkeys(check_hex_id(r, "record") for r in records))
        if incident is not None:
            for rid in IncidentService(self.s).get(incident)["records"]:
                if rid not in wanted:
                    wanted.append(rid)
        if not actors and not wanted:
            raise UsageError(
                _t("name the users (--actor), the records (--record) or an incident (--incident)")
            )
        end = until if until is not None else moment
        if since.tzinfo is None or end.tzinfo is None:
            raise UsageError(_t("give --since and --until with a time zone (or as UTC)"))
        if since > end:
            raise UsageError(_t("--since must not be after --until"))
        lo, hi = iso(since), iso(end)
        detail: dict[str, Any] = {"since": lo, "until": hi}
        if len(actors) == 1:
            detail["actor"] = actors[0]
        elif actors:
            detail["actors"] = actors
        if wanted:
            detail["records"] = wanted
        if incident is not None:
            detail["incident"] = incident
        self.s.log([Event(self.s.user, "report.incident", detail=detail)], moment)
        actor_set, record_set = set(actors), set(wanted)
        # Cheap byte tests before decoding: an entry of interest names one of them.
        needles = [json.dumps(a).encode("utf-8") for a in actors] or [
            json.dumps(r).encode("utf-8") for r in wanted
        ]
        per_record: dict[str, dict[str, Any]] = {}
        per_field: dict[str, dict[str, Any]] = {}
        per_actor: dict[str, dict[str, int]] = {}
        denied_by_action: dict[str, int] = {}
        denied_records: dict[str, int] = {}
        denied = 0
        scanned = 0
        for seq, entry, digest in self.s.db.audit.entries():
            scanned += 1
            if leaf_hash(entry) != digest:
                raise IntegrityError(
                    _t("audit log entry {seq} was modified: run `childvault audit verify`", seq=seq)
                )
            if not any(n in entry for n in needles):
                continue
            obj = _decoded(entry)
            ts, who = obj.get("ts"), obj.get("actor")
            if not isinstance(ts, str) or not lo <= ts <= hi or not isinstance(who, str):
                continue
            if actor_set and who not in actor_set:
                continue
            action, outcome = obj.get("action"), obj.get("outcome")
            records_of = [r for r in obj.get("records", ()) if isinstance(r, str)]
            if record_set:
                records_of = [r for r in records_of if r in record_set]
                if not records_of:
                    continue
            fields = [f for f in obj.get("fields", ()) if isinstance(f, str)]
            if outcome in ("denied", "error"):
                denied += 1
                denied_by_action[str(action)] = denied_by_action.get(str(action), 0) + 1
                for rid in records_of:
                    denied_records[rid] = denied_records.get(rid, 0) + 1
                continue
            if (
                outcome != "ok"
                or action not in ("grant.read", "export.anonymized")
                or not records_of
            ):
                continue
            kind = "read" if action == "grant.read" else "exported"
            counts = per_actor.setdefault(who, {"read": 0, "exported": 0})
            counts[kind] += 1
            for rid in records_of:
                item = per_record.setdefault(
                    rid,
                    {
                        "record_id": rid,
                        "read": {"events": 0, "fields": {}},
                        "exported": {"events": 0, "fields": {}},
                        "users": {},
                        "first": ts,
                        "last": ts,
                    },
                )
                item[kind]["events"] += 1
                item["users"][who] = item["users"].get(who, 0) + 1
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
            # "actor" stays for the one-user report of format /1; "actors" and
            # "records_asked" say what a wider report covered (empty: anyone / any record).
            "actor": actors[0] if len(actors) == 1 else None,
            "actors": actors,
            "records_asked": wanted,
            "incident": incident,
            "users": {a: per_actor[a] for a in sorted(per_actor)},
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
                "details. To notify the affected children and guardians (P-21), register the "
                "incident and its records (`childvault incident open`, `childvault incident "
                "add-records ID RECORD...`), then run `childvault incident contacts ID`: it "
                "files a breach_notification request for the contact fields, another officer "
                "must approve it, and `childvault incident contacts ID --grant TOKEN --out FILE` "
                "writes the guardian contact list sealed to you."
            ),
        }

    def _record_status(self, record_id: str) -> str:
        if self.s.db.records.get(record_id) is not None:
            return "live"
        return "deleted" if self.s.db.records.tombstone(record_id) is not None else "unknown"
