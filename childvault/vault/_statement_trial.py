"""Trying a signed statement on a copy of the trust state before it is logged.

Shared by enrolment (:mod:`._svc_users`), key renewal (:mod:`._svc_renewal`)
and the upgrade (:mod:`._svc_upgrade`): a lower module, so none of them
imports another for it.
"""

from __future__ import annotations

from childvault.keys import ChildVaultError
from childvault.vault._statements import Envelope, TrustState


def applies(state: TrustState, envelope: Envelope, seq: int) -> bool:
    """Whether ``envelope`` would verify if logged at ``seq`` (checked on a copy:
    a statement that does not verify is never logged, as it would stop every
    later verification)."""
    trial = state.copy()
    try:
        trial.apply(envelope, seq=seq)
    except ChildVaultError:
        return False
    return True
