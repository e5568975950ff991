"""Who the log says was registered: users (``user.add``) and custodian keys.

Shared by the audit service (``audit verify`` checks the tables against the
log) and the key ring (nothing is sealed to a custodian key the log does not
know), so neither imports the other.

The rest of the registrations' code lives in modules beside this one, none
of which imports it: ``_trust_saved`` (a verifier's signed saved points),
``_trust_replay`` (statements in the log and their replay) and ``_enrolment``
(invites, requests, ``user.register``). This module keeps the log's
registrations and the upgrade of old vaults, and re-exports the other parts'
names, the import path the rest of childvault uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError, PublicIdentity
from childvault.vault import _audit
from childvault.vault._audit import DetailValue
from childvault.vault._backend import AuditRepo, Backend
from childvault.vault._enrolment import (
    INVITE_FORMAT,
    MAX_ENROLMENT_FILE,
    REQUEST_FORMAT,
    EnrolmentRequest,
    Invite,
    enrol,
    enrol_with_invite,
    invite_ref,
    invite_summary,
    make_invite,
    read_invite,
    read_request,
    register_statement,
)
from childvault.vault._enrolment import _binding_message as _binding_message
from childvault.vault._statements import Anchor, Envelope, TrustState
from childvault.vault._trust_replay import _SAVE_AFTER as _SAVE_AFTER
from childvault.vault._trust_replay import (
    PENDING,
    STATEMENT,
    anchor_of,
    append_with_statements,
    replay,
    verify_log,
    with_statement,
)
from childvault.vault._trust_saved import (
    TREE_SUFFIX,
    Verified,
    load_saved,
    load_tree,
    save_state,
    save_tree,
)

# Its own public names and those of the parts it re-exports (the import path
# the rest of childvault uses).
__all__ = [
    "ENTRUSTED_DETAIL",
    "INVITE_FORMAT",
    "MAX_ENROLMENT_FILE",
    "PENDING",
    "REQUEST_FORMAT",
    "STATEMENT",
    "TREE_SUFFIX",
    "UPGRADED",
    "EnrolmentRequest",
    "Invite",
    "Verified",
    "anchor_of",
    "append_with_statements",
    "check_custodian_logged",
    "check_legacy_log",
    "custodian_statement",
    "enrol",
    "enrol_with_invite",
    "invite_ref",
    "invite_summary",
    "is_upgraded",
    "load_saved",
    "load_tree",
    "logged_anchor",
    "logged_registrations",
    "make_invite",
    "read_invite",
    "read_request",
    "register_statement",
    "replay",
    "save_state",
    "save_tree",
    "user_detail",
    "verify_log",
    "with_statement",
]


#: The entrusted members a ``user.add`` detail repeats, as ``entrusted_<member>``.
ENTRUSTED_DETAIL = ("organisation", "agreement", "expires")


def user_detail(
    name: str,
    roles: Sequence[str],
    public: PublicIdentity,
    entrusted: Mapping[str, str] | None = None,
) -> dict[str, DetailValue]:
    """The ``user.add`` log detail: who, which roles, which public keys (and, for an
    entrusted organisation's account, its organisation, agreement and expiry)."""
    detail: dict[str, DetailValue] = {
        "user": name,
        "roles": sorted(roles),
        "enc_key": public.encryption_key.hex(),
        "sign_key": public.signing_key.hex(),
    }
    if entrusted is not None:
        # Flat members (a log detail holds no objects); the signed statement is the authority.
        for key in ENTRUSTED_DETAIL:
            detail[f"entrusted_{key}"] = entrusted[key]
    return detail


def logged_registrations(
    log: AuditRepo,
) -> tuple[dict[str, dict[str, Any]], dict[int, set[str]]]:
    """From the log: each user's ``user.add`` detail, and every custodian public key
    (hex) a logged creation or rotation introduced, by generation."""
    added: dict[str, dict[str, Any]] = {}
    custodians: dict[int, set[str]] = {}
    for entry in log.entries_by_action(
        ("user.add", "user.renew", "custodian.create", "keys.rotate")
    ):
        obj = _audit.decode_entry(entry)
        detail = obj.get("detail", {})
        if obj.get("outcome") != "ok":
            continue
        if obj["action"] == "user.renew":
            # An approved renewal gives the user new keys (`keys renew`).
            known = added.get(str(detail.get("user")))
            if detail.get("phase") == "approve" and known is not None:
                known["enc_key"], known["sign_key"] = detail.get("enc_key"), detail.get("sign_key")
            continue
        if obj["action"] == "user.add":
            # The statement's digest and the invite used are not part of what
            # `audit verify` compares with the users table.
            added[str(detail.get("user"))] = {
                k: v
                for k, v in detail.items()
                if k not in ("statement", "pending_statement", "invite")
                and not k.startswith("entrusted_")
            }
        elif obj["action"] in ("custodian.create", "keys.rotate") and "public_key" in detail:
            generation = int(detail.get("generation", 0))
            custodians.setdefault(generation, set()).add(str(detail["public_key"]))
    return added, custodians


def check_custodian_logged(log: AuditRepo, generation: int, public: bytes) -> None:
    """Refuse a custodian key that no logged operation created (an insider's key)."""
    if public.hex() not in logged_registrations(log)[1].get(generation, set()):
        raise IntegrityError(
            _t(
                "the custodian key (generation {generation}) in the database was not created by a "
                "logged operation: nothing will be sealed to it; run `childvault audit verify` "
                "and alert the officers",
                generation=generation,
            )
        )


def custodian_statement(vault_id: str, at: str, kind: str, **members: Any) -> dict[str, Any]:
    """A ``custodian.*`` statement."""
    return {"v": 1, "kind": kind, "vault": vault_id, "at": at, **members}


# -------------------------------------------------------------------- upgrade

#: ``meta`` key set by ``childvault upgrade`` on a vault made before signed statements.
UPGRADED = "trust_upgraded"


def is_upgraded(db: Backend) -> bool:
    """Whether the vault's log holds its founding registration (made by ``init`` since
    issue 12, at entry 1, or by ``childvault upgrade``).

    The ``meta`` flag and the statement at seq 1 answer quickly; the log decides when
    both are missing, since any user can delete those rows (and so make an upgraded
    vault look earlier, reopening the trust in rows for an identity without an anchor).
    """
    return db.meta.get(UPGRADED) == "1" or db.statements.get(1) is not None or log_shows_upgrade(db)


def log_shows_upgrade(db: Backend) -> bool:
    """Whether the log itself holds a founding registration: entry 1 made by ``init``
    since issue 12, or a ``vault.upgrade`` entry carrying one.

    Reads the hash-chained entries, which an insider cannot remove without breaking
    the chain every anchored user verifies. Cheap (one row and one index lookup): it
    runs on every open of a vault made before signed statements.
    """
    first = db.audit.entry_at(1)
    candidates = [first[0]] if first is not None else []
    candidates += db.audit.entries_by_action(("vault.upgrade",))
    for raw in candidates:
        try:
            obj = _audit.decode_entry(raw)
        except (ValueError, IntegrityError):
            return True  # a damaged entry is tampering: refuse, as an upgraded vault would
        detail = obj.get("detail")
        if (
            obj.get("action") in ("user.add", "vault.upgrade")
            and obj.get("outcome") == "ok"
            and isinstance(detail, dict)
            and STATEMENT in detail
        ):
            return True
    return False


def logged_anchor(db: Backend) -> Anchor | None:
    """The anchor the log's founding registration names (the first statement logged).

    Only a candidate: whoever adopts it confirms its fingerprint with the admin
    out of band, since an insider can write the database.
    """
    for raw in db.audit.entries_by_action(("user.add", "vault.upgrade")):
        obj = _audit.decode_entry(raw)
        detail = obj.get("detail", {})
        if obj.get("outcome") != "ok" or STATEMENT not in detail:
            continue
        stored = db.statements.get(int(obj["seq"]))
        if stored is None:
            return None
        statement = Envelope.from_bytes(stored).statement()
        if statement.get("kind") != "user.register":
            return None
        return Anchor(
            str(statement["vault"]),
            str(statement["user"]),
            bytes.fromhex(str(statement["sign_key"])),
        )
    return None


def check_legacy_log(db: Backend) -> None:
    """Before ``childvault upgrade`` signs anything for what exists: the log's hash
    chain holds from its first entry, and every ``users`` row is what a logged
    ``user add`` gave (an edited row is refused, not signed)."""
    probe = Anchor(str(db.meta.get("vault_id")), "probe", bytes(32))
    replay(db, Verified(TrustState.start(probe), 0, None))
    added, _ = logged_registrations(db.audit)
    for row in db.users.all():
        public = PublicIdentity(row.name, row.enc_key, row.sign_key)
        if added.get(row.name) != user_detail(row.name, row.roles, public):
            raise IntegrityError(
                _t(
                    "user {name!r} is registered with keys or roles that no logged `user add` "
                    "gave them: the users table was edited; nothing was upgraded",
                    name=row.name,
                )
            )
