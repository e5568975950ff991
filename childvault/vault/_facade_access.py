"""Access: requests, approvals, denials, revocations, reads with a grant and transfers
(the :class:`AccessService`).

One facet of :class:`~._facade.Vault`, kept apart so each area of the API reads on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from childvault.vault import _check as check
from childvault.vault._check import REQUEST_STATUSES, RequestStatus
from childvault.vault._facade_base import VaultBase
from childvault.vault._types import Approval, RequestInfo

if TYPE_CHECKING:
    # The result types are imported where a method builds one (issue 18: lazy loading).
    from childvault.vault._results import Transfer
    from childvault.vault._svc_access import Basis


class AccessFacet(VaultBase):
    """The access methods of :class:`Vault`: request, approve, read (:class:`AccessService`)."""

    def request_access(
        self,
        records: Sequence[str],
        fields: Sequence[str],
        purpose: str,
        reason: str,
        *,
        now: datetime | None = None,
        basis: Basis | None = None,
    ) -> str:
        """File an access request for named records, fields and purpose; return its id.

        ``basis`` names a statutory basis instead of consent (:class:`Basis`).
        """
        w = self._live("Vault.request_access")
        records = check.str_seq(w, "records", records)
        fields = check.str_seq(w, "fields", fields)
        check.str_arg(w, "purpose", purpose)
        check.str_arg(w, "reason", reason)
        check.datetime_arg(w, "now", now)
        if basis is not None:
            from childvault.vault._svc_access import Basis

            check.instance(w, "basis", basis, Basis)
            for attr in ("kind", "link", "recipient", "provision", "assessment"):
                # Each lands in the request's log detail.
                check.str_arg(w, f"basis.{attr}", getattr(basis, attr), optional=attr != "kind")
        return self._access.request_access(records, fields, purpose, reason, now=now, basis=basis)

    def requests(self, status: RequestStatus | None = "pending") -> list[RequestInfo]:
        """Access requests with ``status`` (``None`` for all); logged.

        Officers and admins see every request; staff see their own, with the
        decision and the officer's reason, so they learn why one was denied.
        """
        w = self._live("Vault.requests")
        check.choice(w, "status", status, REQUEST_STATUSES, optional=True)
        return self._access.requests(status)

    def approve(
        self,
        request_id: str,
        *,
        ttl: timedelta | None = None,
        uses: int = 1,
        now: datetime | None = None,
    ) -> Approval:
        """Officer: approve a pending request and issue its approval token.

        Refuses (logged): the officer's own request, a purpose a record did not
        consent to, a record past retention or deleted, more records than the
        cap, a TTL above the maximum. The approval and a signed checkpoint are
        committed together; the checkpoint is then appended to the witness file.
        """
        w = self._live("Vault.approve")
        check.str_arg(w, "request_id", request_id)
        check.timedelta_arg(w, "ttl", ttl)
        check.int_arg(w, "uses", uses)
        check.datetime_arg(w, "now", now)
        return self._access.approve(request_id, ttl=ttl, uses=uses, now=now)

    def deny(self, request_id: str, reason: str, *, now: datetime | None = None) -> None:
        """Officer: deny a pending request with a reason."""
        w = self._live("Vault.deny")
        check.str_arg(w, "request_id", request_id)
        check.str_arg(w, "reason", reason)
        check.datetime_arg(w, "now", now)
        self._access.deny(request_id, reason, now=now)

    def revoke(self, grant_id: str, *, now: datetime | None = None) -> None:
        """Officer: revoke a grant; later reads with its token are denied."""
        w = self._live("Vault.revoke")
        check.str_arg(w, "grant_id", grant_id)
        check.datetime_arg(w, "now", now)
        self._access.revoke(grant_id, now=now)

    def read_with_grant(
        self,
        token: str,
        records: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
        *,
        now: datetime | None = None,
    ) -> dict[str, dict[str, str]]:
        """Read approved fields with an approval token.

        Verifies the token (signature by a registered officer, vault, requester,
        time window, uses, revocation, scope), appends and commits the log entry,
        then decrypts. Any failure raises the opaque :class:`ApprovalInvalid`
        after logging a denied attempt with the reason.
        """
        w = self._live("Vault.read_with_grant")
        check.str_arg(w, "token", token, data=True)
        records = check.opt_str_seq(w, "records", records)
        fields = check.opt_str_seq(w, "fields", fields)
        check.datetime_arg(w, "now", now)
        return self._access.read_with_grant(token, records, fields, now=now)

    def cosign(self, request_id: str, *, now: datetime | None = None) -> None:
        """Officer: co-sign a legal-obligation request (the first of the two officers)."""
        w = self._live("Vault.cosign")
        check.str_arg(w, "request_id", request_id)
        check.datetime_arg(w, "now", now)
        self._access.cosign(request_id, now=now)

    def transfers(self, *, now: datetime | None = None) -> list[Transfer]:
        """Officer or admin: reads that handed data to another organisation (P-17); logged."""
        check.datetime_arg(self._live("Vault.transfers"), "now", now)
        from childvault.vault._results import Transfer

        return [Transfer.from_json(row) for row in self._access.transfers(now=now)]
