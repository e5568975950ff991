"""Who the log says was registered: users (``user.add``) and custodian keys.

Shared by the audit service (``audit verify`` checks the tables against the
log) and the key ring (nothing is sealed to a custodian key the log does not
know), so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from childvault.keys import IntegrityError, PublicIdentity
from childvault.vault import _audit
from childvault.vault._backend import AuditRepo


def user_detail(
    name: str, roles: Sequence[str], public: PublicIdentity
) -> dict[str, str | list[str]]:
    """The ``user.add`` log detail: who, which roles, which public keys."""
    return {
        "user": name,
        "roles": sorted(roles),
        "enc_key": public.encryption_key.hex(),
        "sign_key": public.signing_key.hex(),
    }


def logged_registrations(
    log: AuditRepo,
) -> tuple[dict[str, dict[str, Any]], dict[int, set[str]]]:
    """From the log: each user's ``user.add`` detail, and every custodian public key
    (hex) a logged creation or rotation introduced, by generation."""
    added: dict[str, dict[str, Any]] = {}
    custodians: dict[int, set[str]] = {}
    for entry in log.entries_by_action(("user.add", "custodian.create", "keys.rotate")):
        obj = _audit.decode_entry(entry)
        detail = obj.get("detail", {})
        if obj.get("outcome") != "ok":
            continue
        if obj["action"] == "user.add":
            added[str(detail.get("user"))] = detail
        elif obj["action"] in ("custodian.create", "keys.rotate") and "public_key" in detail:
            generation = int(detail.get("generation", 0))
            custodians.setdefault(generation, set()).add(str(detail["public_key"]))
    return added, custodians


def check_custodian_logged(log: AuditRepo, generation: int, public: bytes) -> None:
    """Refuse a custodian key that no logged operation created (an insider's key)."""
    if public.hex() not in logged_registrations(log)[1].get(generation, set()):
        raise IntegrityError(
            f"the custodian key (generation {generation}) in the database was not created "
            "by a logged operation: nothing will be sealed to it; run `childvault audit "
            "verify` and alert the officers"
        )
