"""Compliance (issue 15): subject and incident reports, the anonymised export, and the
rights and incident registers.

One facet of :class:`~._facade.Vault`, kept apart so each area of the API reads on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childvault.vault import _check as check
from childvault.vault._facade_base import VaultBase
from childvault.vault._svc_incidents import IncidentService
from childvault.vault._svc_rights import RightsService

if TYPE_CHECKING:
    # The result types are imported where a method builds one (issue 18: lazy loading).
    from childvault.vault._results import (
        AnonymizedExport,
        Incident,
        RightsRequest,
    )


class ComplianceFacet(VaultBase):
    """The compliance methods of :class:`Vault`: reports, export, rights and incident registers."""

    def subject_report(
        self,
        record_id: str,
        token: str,
        *,
        rights_request: str | None = None,
        now: datetime | None = None,
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
        Check the result with :func:`verify_subject_report`. ``rights_request``:
        the open access request (查询/复制) this answers; it is annotated and
        closed as ``done``.
        """
        w = self._live("Vault.subject_report")
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "token", token, data=True)
        check.str_arg(w, "rights_request", rights_request, optional=True)
        check.datetime_arg(w, "now", now)
        rights = RightsService(self._session)
        if rights_request is not None:
            rights.check_link(rights_request, "report.subject", record_id)
        report = self._reports.subject_report(record_id, token, now=now)
        if rights_request is not None:
            rights.link(
                rights_request, "report.subject", record_id, grant=report["grant"]["id"], now=now
            )
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
        w = self._live("Vault.complete_subject_report")
        check.mapping_arg(w, "report", report)
        check.datetime_arg(w, "now", now)
        return self._reports.complete_subject_report(report, now=now)

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
        report to those records (none given: any record); the filters
        combine. It holds record ids and field names only, no name or contact
        detail: :meth:`incident_contacts` gets those through an approval.
        Logged as ``report.incident``.
        """
        w = self._live("Vault.incident_report")
        if actor is None or isinstance(actor, str):
            check.str_arg(w, "actor", actor, optional=True)
            actors: str | tuple[str, ...] | None = actor
        else:
            actors = check.str_seq(w, "actor", actor)
        check.datetime_arg(w, "since", since, optional=False)
        check.datetime_arg(w, "until", until)
        wanted = check.str_seq(w, "records", records)
        check.str_arg(w, "incident", incident, optional=True)
        check.datetime_arg(w, "now", now)
        return self._reports.incident_report(
            actors, since, until, records=wanted, incident=incident, now=now
        )

    def export_anonymized(
        self, out: Path | str, *, k: int = 5, now: datetime | None = None
    ) -> AnonymizedExport:
        """Officer: write anonymised statistics (M-3, M-14) as CSV to ``out``.

        Only records that consented to the ``statistics`` purpose under the
        current notice and are within retention are used. Direct identifiers
        are never decrypted; quasi identifiers are generalised (date of birth
        to an :data:`AGE_BANDS` band on the export date, address to its
        county-level district, enum values kept) and fields declared
        ``identifier = "none"`` are kept as is (binary fields never). The file
        holds one row per equivalence class (all exported columns) with its
        ``count``; classes smaller than ``k`` are suppressed. Cells are
        neutralised against spreadsheet formulas; the file is written
        atomically with mode 0600.

        Keys are released by the provider to the officer's own identity, at
        most 50 records at a time, each batch logged (``export.anonymized``,
        records and fields, no values) and committed before it is decrypted;
        a final entry records the counts. Memory holds only the class counts.
        """
        w = self._live("Vault.export_anonymized")
        out = check.path_arg(w, "out", out)
        check.int_arg(w, "k", k)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import AnonymizedExport

        return AnonymizedExport.from_json(self._export.export_anonymized(out, k=k, now=now))

    def rights_open(
        self,
        kind: str,
        record_id: str,
        *,
        requester: str,
        received: date,
        identity_checked: bool,
        now: datetime | None = None,
    ) -> RightsRequest:
        """Officer: register a child's or guardian's request (查询/更正/删除/异议)."""
        w = self._live("Vault.rights_open")
        check.str_arg(w, "kind", kind)
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "requester", requester)
        check.date_arg(w, "received", received)
        check.bool_arg(w, "identity_checked", identity_checked)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import RightsRequest

        return RightsRequest.from_json(
            RightsService(self._session).open(
                kind,
                record_id,
                requester=requester,
                received=received,
                identity_checked=identity_checked,
                now=now,
            )
        )

    def rights_close(
        self,
        rights_id: str,
        outcome: str,
        *,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> RightsRequest:
        """Officer: close a rights request with its outcome (``refused`` needs ``reason``;
        a correction request closes ``done`` only with a linked correction)."""
        w = self._live("Vault.rights_close")
        check.str_arg(w, "rights_id", rights_id)
        check.str_arg(w, "outcome", outcome)
        check.str_arg(w, "reason", reason, optional=True)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import RightsRequest

        return RightsRequest.from_json(
            RightsService(self._session).close(rights_id, outcome, reason=reason, now=now)
        )

    def rights_list(self, *, now: datetime | None = None) -> list[RightsRequest]:
        """Officer or admin: the rights register, overdue requests marked; logged."""
        check.datetime_arg(self._live("Vault.rights_list"), "now", now)
        from childvault.vault._results import RightsRequest

        return [RightsRequest.from_json(r) for r in RightsService(self._session).list(now=now)]

    def incident_open(
        self, kind: str, discovered: datetime, *, now: datetime | None = None
    ) -> Incident:
        """Officer: register an incident (leak, damage or loss)."""
        w = self._live("Vault.incident_open")
        check.str_arg(w, "kind", kind)
        check.datetime_arg(w, "discovered", discovered, optional=False)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import Incident

        return Incident.from_json(IncidentService(self._session).open(kind, discovered, now=now))

    def incident_add_records(
        self, incident_id: str, records: Sequence[str], *, now: datetime | None = None
    ) -> Incident:
        """Officer: add affected records to an open incident."""
        w = self._live("Vault.incident_add_records")
        check.str_arg(w, "incident_id", incident_id)
        records = check.str_seq(w, "records", records)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import Incident

        return Incident.from_json(
            IncidentService(self._session).add_records(incident_id, records, now=now)
        )

    def incident_notify(
        self, incident_id: str, audience: str, *, now: datetime | None = None
    ) -> Incident:
        """Officer: record that the guardians or the authority were notified."""
        w = self._live("Vault.incident_notify")
        check.str_arg(w, "incident_id", incident_id)
        check.str_arg(w, "audience", audience)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import Incident

        return Incident.from_json(
            IncidentService(self._session).notify(incident_id, audience, now=now)
        )

    def incident_close(self, incident_id: str, *, now: datetime | None = None) -> Incident:
        """Officer: close an incident reported to the authority."""
        w = self._live("Vault.incident_close")
        check.str_arg(w, "incident_id", incident_id)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import Incident

        return Incident.from_json(IncidentService(self._session).close(incident_id, now=now))

    def incidents(self, *, now: datetime | None = None) -> list[Incident]:
        """Officer or admin: the incident register; logged."""
        check.datetime_arg(self._live("Vault.incidents"), "now", now)
        from childvault.vault._results import Incident

        return [Incident.from_json(r) for r in IncidentService(self._session).list(now=now)]

    def incident_contacts(
        self,
        incident_id: str,
        *,
        tokens: Sequence[str] = (),
        out: Path | str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Officer: the guardian contact list of an incident (P-21), in two steps.

        Without ``tokens``: files ``breach_notification`` requests for the
        contact fields of its live records; returns ``{"requests": [...]}``
        for another officer to approve. With their approval ``tokens`` and
        ``out``: reads through them (logged) and writes the list sealed to
        this officer's key (mode 0600); :meth:`open_incident_contacts` opens it.
        """
        from childvault.vault._svc_incident_contacts import contacts

        w = self._live("Vault.incident_contacts")
        check.str_arg(w, "incident_id", incident_id)
        tokens = check.str_seq(w, "tokens", tokens)
        path = check.opt_path(w, "out", out)
        check.datetime_arg(w, "now", now)
        return contacts(
            IncidentService(self._session),
            self._access,
            incident_id,
            tokens=tokens,
            out=path,
            now=now,
        )

    def open_incident_contacts(self, path: Path | str) -> dict[str, Any]:
        """Officer: open a contact list :meth:`incident_contacts` sealed to you."""
        from childvault.vault._svc_incident_contacts import open_contacts

        w = self._live("Vault.open_incident_contacts")
        return open_contacts(IncidentService(self._session), check.path_arg(w, "path", path))
