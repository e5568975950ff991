"""Access: requests, approvals, denials, revocations and reads with a grant.

Each operation checks the rules of :mod:`._policy`, does its client-side
cryptography (releasing keys, signing or verifying the token, opening fields),
and keeps its database effects in small steps that run in one transaction
each (docs/architecture.md, "A read with a grant").

The steps are in their own modules, on one base (:mod:`._svc_access_base`):
requests (:mod:`._svc_access_requests`), approvals, denials and revocations
(:mod:`._svc_access_approvals`) and reads (:mod:`._svc_access_reads`).
"""

from __future__ import annotations

from childvault.vault._svc_access_approvals import AccessApprovals
from childvault.vault._svc_access_base import Basis as Basis
from childvault.vault._svc_access_reads import AccessReads
from childvault.vault._svc_access_requests import AccessRequests


class AccessService(AccessRequests, AccessApprovals, AccessReads):
    """The request / approve / read flow."""
