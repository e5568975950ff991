"""Signed statements and the trust state they build (docs/trust.md).

Every fact that decides who may hold or receive key material, or who wrote a
record, is a *signed statement*; the database is storage, never authority.
A statement is a DSSE envelope (the "Dead Simple Signing Envelope" of
in-toto and sigstore), so a third party can check one with an off-the-shelf
verifier::

    {"payloadType": "application/vnd.childvault.statement.v1+json",
     "payload": base64(RFC 8785 canonical JSON of the statement),
     "signatures": [{"keyid": <signer's user name>, "sig": base64(Ed25519)}]}

Each signature covers ``PAE(payloadType, payload)`` (DSSE's pre-authentication
encoding), never the JSON object itself, so no parser ambiguity reaches what is
signed. ``keyid`` is only a hint: the verifier takes the key from the trust
state, never from the envelope.

:class:`TrustState` replays statements in log order from the vault's
:class:`Anchor` (the vault id and the founding admin's key, which every
identity file holds inside its passphrase-encrypted part) and refuses any
statement its signers were not entitled to make. The rules:

- ``user.register`` (a new user's name, roles and public keys): signed by the
  new user's own key (proof of possession), by an active admin, and, when the
  roles include ``officer``, by an active officer other than the new user; the
  very first officer of a vault is countersigned by the founding admin instead.
  The founding admin's own registration is self-signed with the anchor key.
  An optional ``entrusted`` member (``{organisation, agreement, expires}``)
  makes the account an entrusted organisation's (受委托方, P-16): staff only,
  refused from the day after ``expires`` (a legal date in the vault's zone).
- ``user.renew`` (new key pairs): signed by the old key, the new key and an
  active admin. ``user.disable``: signed by an active admin other than the
  user; a disabled user signs nothing and holds nothing from then on.
- ``custodian.create`` (the first custodian public key and its holder): signed
  by that holder, an active officer. ``custodian.share``: signed by an active
  holder of the current generation, to an active officer.
  ``custodian.rotate`` (a new generation, its public key, its holders): signed
  by an active holder of the previous generation, holders all active officers.
- ``setting.set`` (one vault setting, ``key`` and ``value``): signed by an
  active admin (approval limits) or an active officer (compliance settings),
  as ``_settings.SPECS`` says; the value must be valid and canonical.
- ``record.version`` statements are not trust state; :func:`verify_record`
  checks one against the state as it was when the record was written. A
  batch of new records signs one ``record.batch`` statement over the Merkle
  root of their ``record.version`` payloads instead, each record keeping a
  :class:`BatchMember` (:func:`verify_member`).

Parsers here take input an insider may have written, so they are strict and
bounded and raise only :class:`IntegrityError`, naming the defect without
echoing the input.

The code lives in four modules, each importing only those before it:
``_statement_envelope`` (the DSSE envelope, signing, the member parsers),
``_trust_state`` (the anchor and the trust state), ``_record_statements``
(``record.version``) and ``_batch_statements`` (``record.batch``). This module
re-exports their names, the import path the rest of childvault uses.
"""

from __future__ import annotations

from childvault.vault._batch_statements import (
    BATCH_KIND,
    MAX_BATCH,
    MEMBER_KIND,
    BatchMember,
    batch_proofs,
    batch_statement,
    pack_members,
    sign_batch,
    sign_first_versions,
    stored_statement,
    unpack_members,
    verify_member,
)
from childvault.vault._record_statements import (
    ALTERED,
    LeafItem,
    RecordVersion,
    record_statement,
    record_statement_bytes,
    record_statement_leaf,
    verify_record,
)
from childvault.vault._statement_envelope import (
    ENTRUSTED_KEYS,
    KINDS,
    MAX_ENTRUSTED_TEXT,
    MAX_ENVELOPE_BYTES,
    MAX_SIGNATURES,
    PAYLOAD_TYPE,
    ROLES,
    Envelope,
    Signer,
    countersign,
    entrusted_member,
    field_name_ok,
    pae,
    sign,
)
from childvault.vault._trust_state import Anchor, TrustState, UserState

# Re-exported: the names other modules import from here.
__all__ = [
    "ALTERED",
    "BATCH_KIND",
    "ENTRUSTED_KEYS",
    "KINDS",
    "MAX_BATCH",
    "MAX_ENTRUSTED_TEXT",
    "MAX_ENVELOPE_BYTES",
    "MAX_SIGNATURES",
    "MEMBER_KIND",
    "PAYLOAD_TYPE",
    "ROLES",
    "Anchor",
    "BatchMember",
    "Envelope",
    "LeafItem",
    "RecordVersion",
    "Signer",
    "TrustState",
    "UserState",
    "batch_proofs",
    "batch_statement",
    "countersign",
    "entrusted_member",
    "field_name_ok",
    "pack_members",
    "pae",
    "record_statement",
    "record_statement_bytes",
    "record_statement_leaf",
    "sign",
    "sign_batch",
    "sign_first_versions",
    "stored_statement",
    "unpack_members",
    "verify_member",
    "verify_record",
]
