"""The standalone verifiers of subject reports and entry proofs (:mod:`._reports`).

Separate from the report makers: a child, a guardian or an auditor checks a
report with nothing but the report and the published checkpoint verifier keys,
so this module needs no database, service or facade.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785

from childvault._i18n import _t
from childvault.keys import (
    ChildVaultError,
    IntegrityError,
    UsageError,
)
from childvault.keys._encoding import is_hex_id
from childvault.vault._merkle import leaf_hash, verify_inclusion
from childvault.vault._note import Checkpoint, parse_vkey, verify_note
from childvault.vault._report_format import (
    _COMMITTED,
    ANOTHER_RECORD,
    ENTRY_PROOF_FORMAT,
    SUBJECT_REPORT_FORMAT,
    _about_digest,
    _commitment,
    _origin,
    redacted_digest,
)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_ENTRY_BYTES = 1 << 20
_MAX_ENTRIES = 1_000_000
_REPORT_KEYS = frozenset({*_COMMITTED, "commitment", "checkpoint", "entries", "pending"})
_REPORT_ENTRY_KEYS = frozenset({"seq", "entry", "leaf_hash", "checkpointed", "proof"})
#: A report entry whose other record ids were redacted (``"redacted": true``).
_REDACTED_ENTRY_KEYS = _REPORT_ENTRY_KEYS | {"redacted"}
_CHECKPOINT_KEYS = frozenset({"note", "size", "root"})
_PROOF_KEYS = frozenset({"format", "vault_id", "seq", "entry", "leaf_hash", "proof", "checkpoint"})


@dataclass(frozen=True)
class ProofVerification:
    """What a successful standalone verification established.

    ``proven`` lists the sequence numbers of the entries whose inclusion proofs
    verified against the checkpoint (of ``checkpoint_size`` entries, signed by
    ``signers``). ``pending`` lists entries newer than that checkpoint, which
    the report could not prove yet. ``data_authenticated`` is true when the
    report's data, consent and bookkeeping are bound, through its proven
    ``report.subject`` entry, to the signed log.
    """

    kind: str
    vault_id: str
    record_id: str | None
    checkpoint_size: int
    checkpoint_root: str
    signers: tuple[str, ...]
    proven: tuple[int, ...]
    pending: tuple[int, ...]
    data_authenticated: bool

    @property
    def complete(self) -> bool:
        """Every entry is proven (and, for a subject report, its data authenticated)."""
        if self.kind == "subject-report":
            return not self.pending and self.data_authenticated
        return not self.pending

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "ok": True,
            "kind": self.kind,
            "vault_id": self.vault_id,
            "record_id": self.record_id,
            "checkpoint_size": self.checkpoint_size,
            "checkpoint_root": self.checkpoint_root,
            "signers": list(self.signers),
            "proven": list(self.proven),
            "pending": list(self.pending),
            "data_authenticated": self.data_authenticated,
            "complete": self.complete,
        }


def _bad(message: str) -> IntegrityError:
    return IntegrityError(_t("proof verification failed: {message}", message=message))


def _known_signers(vkeys: Sequence[str] | str) -> dict[str, bytes]:
    if isinstance(vkeys, str):
        vkeys = [vkeys]
    known: dict[str, bytes] = {}
    for text in vkeys:
        try:
            name, key = parse_vkey(text)
        except IntegrityError:
            raise UsageError(
                _t(
                    "a verifier key is malformed: give the vkey strings exactly as printed by "
                    "`childvault audit checkpoint --json` or `childvault user list --json`"
                )
            ) from None
        known.setdefault(name, key)
    if not known:
        raise UsageError(
            _t("no verifier key given: pass the institution's published checkpoint vkeys")
        )
    return known


def _require_keys(obj: object, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _bad(_t("{what} is not a JSON object", what=what))
    if set(obj) != allowed:
        raise _bad(_t("{what} does not have exactly the expected keys", what=what))
    return obj


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise _bad(_t("{what} is not a valid number", what=what))
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _bad(_t("{what} is not text", what=what))
    return value


def _hash(value: object, what: str) -> bytes:
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise _bad(_t("{what} is not a SHA-256 hash in lowercase hex", what=what))
    return bytes.fromhex(value)


def _checkpoint(
    obj: object, vault_id: str, known: Mapping[str, bytes]
) -> tuple[Checkpoint, list[str]]:
    doc = _require_keys(obj, _CHECKPOINT_KEYS, _t("the checkpoint"))
    note = _str(doc["note"], _t("the checkpoint note"))
    try:
        cp, names = verify_note(note, known)
    except IntegrityError as exc:
        raise _bad(
            _t(
                "the checkpoint signature does not verify with the given keys ({exc})",
                # The inner message itself (a ChildVaultError's only argument): translated too.
                exc=exc.args[0],
            )
        ) from None
    if cp.origin != _origin(vault_id):
        raise _bad(_t("the checkpoint is for another log than the report's vault"))
    if _int(doc["size"], _t("the checkpoint size")) != cp.size:
        raise _bad(_t("the checkpoint size differs from the signed note"))
    if _hash(doc["root"], _t("the checkpoint root")) != cp.root:
        raise _bad(_t("the checkpoint root differs from the signed note"))
    return cp, names


def _entry(text: object, seq: int, stated_leaf: object) -> tuple[bytes, bytes, dict[str, Any]]:
    """Check one carried entry: its bytes, leaf hash, canonical form and sequence number."""
    entry = _str(text, _t("entry {seq}", seq=seq))
    try:
        raw = entry.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(_t("entry {seq} is not valid text", seq=seq)) from None
    if len(raw) > _MAX_ENTRY_BYTES:
        raise _bad(_t("entry {seq} is too large", seq=seq))
    leaf = leaf_hash(raw)
    if _hash(stated_leaf, _t("the leaf hash of entry {seq}", seq=seq)) != leaf:
        raise _bad(_t("entry {seq} does not match its leaf hash (the entry was altered)", seq=seq))
    try:
        obj = json.loads(raw)
        canonical = bytes(rfc8785.dumps(obj))
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise _bad(_t("entry {seq} is not a canonical log entry", seq=seq)) from None
    if canonical != raw or not isinstance(obj, dict):
        raise _bad(_t("entry {seq} is not a canonical log entry", seq=seq))
    if obj.get("seq") != seq or isinstance(obj.get("seq"), bool):
        raise _bad(_t("entry {seq} carries another sequence number", seq=seq))
    return raw, leaf, obj


def _redacted_entry(
    text: object, seq: int, stated_leaf: object, record_id: str
) -> tuple[bytes, dict[str, Any]]:
    """Check a redacted entry: canonical, its sequence number, only other ids replaced.

    The leaf hash cannot be recomputed (the exact bytes are withheld); the
    caller proves it against the signed root like any other.
    """
    entry = _str(text, _t("entry {seq}", seq=seq))
    raw = entry.encode("utf-8", "replace")
    if len(raw) > _MAX_ENTRY_BYTES:
        raise _bad(_t("entry {seq} is too large", seq=seq))
    leaf = _hash(stated_leaf, _t("the leaf hash of entry {seq}", seq=seq))
    try:
        obj = json.loads(raw)
        canonical = bytes(rfc8785.dumps(obj))
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise _bad(_t("entry {seq} is not a canonical log entry", seq=seq)) from None
    if canonical != raw or not isinstance(obj, dict):
        raise _bad(_t("entry {seq} is not a canonical log entry", seq=seq))
    if obj.get("seq") != seq or isinstance(obj.get("seq"), bool):
        raise _bad(_t("entry {seq} carries another sequence number", seq=seq))
    records = obj.get("records")
    if (
        not isinstance(records, list)
        or record_id not in records
        or ANOTHER_RECORD not in records
        or any(r not in (record_id, ANOTHER_RECORD) for r in records)
    ):
        raise _bad(
            _t(
                "entry {seq} is marked redacted but is not a redacted entry about the record",
                seq=seq,
            )
        )
    return leaf, obj


def _proof(value: object, seq: int) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 64:
        raise _bad(_t("the proof of entry {seq} is malformed", seq=seq))
    return [_hash(h, _t("a proof hash of entry {seq}", seq=seq)) for h in value]


def _guarded(fn: Callable[[], ProofVerification]) -> ProofVerification:
    """Run a verifier; any unexpected shape of hostile input is an IntegrityError.

    The checks above are explicit, but a verifier fed by third parties must
    fail closed even on a shape nobody thought of, never with a crash.
    """
    try:
        return fn()
    except ChildVaultError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        raise _bad(_t("the document is malformed ({kind})", kind=type(exc).__name__)) from None


def verify_subject_report(
    report: Mapping[str, Any],
    vkeys: Sequence[str] | str,
    *,
    previous: Mapping[str, Any] | None = None,
) -> ProofVerification:
    """Verify a subject-access report without the database.

    ``vkeys`` are the institution's checkpoint verifier keys (signed-note
    ``vkey`` strings, published by ``childvault user list --json``). Checks:
    the checkpoint note is signed by one of them and is for the report's
    vault; every entry's bytes hash to its leaf hash, are canonical JSON about
    the report's record with the stated sequence number, and (if covered by
    the checkpoint) its RFC 6962 inclusion proof leads to the signed root;
    entries marked not yet checkpointed really are newer than the checkpoint;
    the report's data, consent and bookkeeping match the commitment in its
    ``report.subject`` entry, and the entries before that one are exactly the
    entries about the record that it counted (none left out or added).

    ``previous``: an earlier report about the same record, kept by the
    child or guardian. It is verified too, and every entry it proved must
    reappear byte for byte in this report if this report's checkpoint covers
    it: an entry about the record that was rewritten or removed since fails.

    Returns a :class:`ProofVerification`; check ``complete`` (or ``pending``
    and ``data_authenticated``) before trusting the report fully. Raises
    :class:`IntegrityError` on any failure, :class:`UsageError` for a
    malformed vkey.
    """
    known = _known_signers(vkeys)
    result = _guarded(lambda: _verify_report(report, known))
    if previous is not None:
        earlier = _guarded(lambda: _verify_report(previous, known))
        _guarded(lambda: _compare(previous, earlier, report, result))
    return result


def _verify_report(report: Mapping[str, Any], known: Mapping[str, bytes]) -> ProofVerification:
    doc = _require_keys(
        dict(report) if isinstance(report, Mapping) else report, _REPORT_KEYS, _t("the report")
    )
    if doc["format"] != SUBJECT_REPORT_FORMAT:
        raise _bad(
            _t(
                "not a subject report (format must be {format})",
                format=SUBJECT_REPORT_FORMAT,
            )
        )
    vault_id = _str(doc["vault_id"], _t("the vault id"))
    record_id = _str(doc["record_id"], _t("the record id"))
    if not is_hex_id(vault_id) or not is_hex_id(record_id):
        raise _bad(_t("the vault or record id is malformed"))
    try:
        commitment = _commitment(doc)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise _bad(_t("the report's data cannot be canonicalised")) from None
    if _str(doc["commitment"], _t("the commitment")) != commitment:
        raise _bad(
            _t("the report's data, consent or bookkeeping were altered (commitment mismatch)")
        )
    cp, signers = _checkpoint(doc["checkpoint"], vault_id, known)
    entries = doc["entries"]
    if not isinstance(entries, list) or not entries or len(entries) > _MAX_ENTRIES:
        raise _bad(_t("the report lists no log entries"))
    proven: list[int] = []
    pending: list[int] = []
    authenticated: bool | None = None
    prior: list[bytes] = []
    redactions: list[tuple[int, bytes]] = []
    last = -1
    for item in entries:
        redacted = isinstance(item, dict) and item.get("redacted") is True
        e = _require_keys(
            item, _REDACTED_ENTRY_KEYS if redacted else _REPORT_ENTRY_KEYS, _t("a report entry")
        )
        seq = _int(e["seq"], _t("an entry's sequence number"))
        if seq <= last:
            raise _bad(_t("the entries are not in strictly increasing sequence order"))
        last = seq
        if redacted:
            leaf, obj = _redacted_entry(e["entry"], seq, e["leaf_hash"], record_id)
            if authenticated is not None:
                raise _bad(
                    _t("entry {seq} is redacted but comes after the report's own entry", seq=seq)
                )
            redactions.append((seq, e["entry"].encode("utf-8")))
        else:
            _, leaf, obj = _entry(e["entry"], seq, e["leaf_hash"])
        records = obj.get("records")
        if not isinstance(records, list) or record_id not in records:
            raise _bad(_t("entry {seq} is not about the report's record", seq=seq))
        proof = _proof(e["proof"], seq)
        checkpointed = e["checkpointed"]
        if checkpointed is True:
            if not verify_inclusion(leaf, seq, cp.size, proof, cp.root):
                raise _bad(
                    _t(
                        "the inclusion proof of entry {seq} does not lead to the signed root",
                        seq=seq,
                    )
                )
            proven.append(seq)
        elif checkpointed is False:
            if seq < cp.size or proof:
                raise _bad(
                    _t(
                        "entry {seq} is covered by the checkpoint but carries no valid proof",
                        seq=seq,
                    )
                )
            pending.append(seq)
        else:
            raise _bad(_t("entry {seq}: 'checkpointed' must be true or false", seq=seq))
        detail = obj.get("detail")
        if (
            authenticated is None
            and obj.get("action") == "report.subject"
            and isinstance(detail, dict)
            and detail.get("commitment") == commitment
            and records == [record_id]
        ):
            # The report's own entry: everything about the record before it
            # must be in the report, no more, no less.
            if detail.get("about") != len(prior) or detail.get("about_digest") != _about_digest(
                prior
            ):
                raise _bad(
                    _t(
                        "the report leaves out (or adds) log entries about the record made "
                        "before it"
                    )
                )
            # Redacted entries show what the vault logged for them at report time.
            logged = detail.get("redacted_digest")
            if (logged is None and redactions) or (
                logged is not None and logged != redacted_digest(redactions)
            ):
                raise _bad(
                    _t("the redacted entries differ from what the report's own entry logged")
                )
            authenticated = checkpointed is True
        prior.append(leaf)
    if authenticated is None:
        raise _bad(_t("the report's own report.subject entry is missing"))
    pend = _require_keys(doc["pending"], frozenset({"entries", "message"}), _t("the pending note"))
    if _int(pend["entries"], _t("the pending count")) != len(pending):
        raise _bad(_t("the pending count does not match the entries"))
    _str(pend["message"], _t("the pending message"))
    return ProofVerification(
        "subject-report",
        vault_id,
        record_id,
        cp.size,
        cp.root.hex(),
        tuple(signers),
        tuple(proven),
        tuple(pending),
        authenticated,
    )


def _compare(
    old: Mapping[str, Any],
    old_result: ProofVerification,
    new: Mapping[str, Any],
    new_result: ProofVerification,
) -> ProofVerification:
    if (old_result.vault_id, old_result.record_id) != (new_result.vault_id, new_result.record_id):
        raise _bad(_t("the earlier report is about another vault or record"))
    new_entries = {e["seq"]: (e["entry"], e["leaf_hash"]) for e in new["entries"]}
    for e in old["entries"]:
        seq = e["seq"]
        if seq not in old_result.proven or seq >= new_result.checkpoint_size:
            continue
        if new_entries.get(seq) != (e["entry"], e["leaf_hash"]):
            raise _bad(
                _t(
                    "entry {seq} of the earlier report is missing or different in this report: "
                    "a log entry about the record was rewritten or removed",
                    seq=seq,
                )
            )
    return new_result


def verify_entry_proof(bundle: Mapping[str, Any], vkeys: Sequence[str] | str) -> ProofVerification:
    """Verify one entry's inclusion proof (``childvault audit prove --entry N --json``).

    Checks the checkpoint note against ``vkeys`` and the vault's origin, the
    entry's bytes against its leaf hash and sequence number, and the RFC 6962
    proof against the signed root. Raises :class:`IntegrityError` on any
    failure, :class:`UsageError` for a malformed vkey.
    """
    known = _known_signers(vkeys)
    return _guarded(lambda: _verify_bundle(bundle, known))


def _verify_bundle(bundle: Mapping[str, Any], known: Mapping[str, bytes]) -> ProofVerification:
    doc = _require_keys(
        dict(bundle) if isinstance(bundle, Mapping) else bundle, _PROOF_KEYS, _t("the proof")
    )
    if doc["format"] != ENTRY_PROOF_FORMAT:
        raise _bad(
            _t(
                "not an entry proof (format must be {format})",
                format=ENTRY_PROOF_FORMAT,
            )
        )
    vault_id = _str(doc["vault_id"], _t("the vault id"))
    if not is_hex_id(vault_id):
        raise _bad(_t("the vault id is malformed"))
    cp, signers = _checkpoint(doc["checkpoint"], vault_id, known)
    seq = _int(doc["seq"], _t("the sequence number"))
    _, leaf, _ = _entry(doc["entry"], seq, doc["leaf_hash"])
    if not verify_inclusion(leaf, seq, cp.size, _proof(doc["proof"], seq), cp.root):
        raise _bad(
            _t("the inclusion proof of entry {seq} does not lead to the signed root", seq=seq)
        )
    return ProofVerification(
        "entry-proof", vault_id, None, cp.size, cp.root.hex(), tuple(signers), (seq,), (), False
    )
