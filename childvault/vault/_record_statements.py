"""Record statements: what a writer signs for one record version, and its check.

Separate from the trust state: a ``record.version`` statement is checked
against the state as it was when the record was written and never changes it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from childvault._i18n import N_, _t, join
from childvault.keys._errors import IntegrityError
from childvault.vault._audit import canonical, canonical_plain
from childvault.vault._statement_envelope import Envelope, _bad, _keys
from childvault.vault._trust_state import TrustState

# ------------------------------------------------------------ record statements


@dataclass(frozen=True)
class RecordVersion:
    """A verified ``record.version`` statement: what one version of a record holds."""

    record: str
    version: int
    type: str
    consent: str
    metadata: str
    fields: Mapping[str, tuple[int, str]]
    keyblob: str
    writer: str


def record_statement(
    *,
    vault_id: str,
    at: str,
    record: str,
    version: int,
    type_name: str,
    consent: Mapping[str, Any],
    metadata: Mapping[str, str],
    fields: Iterable[tuple[str, int, bytes]],
    keyblob: bytes,
) -> dict[str, Any]:
    """The statement a writer signs for one record version.

    It binds the bookkeeping (type, consent, clear metadata) and the SHA-256 of
    every field ciphertext and of the wrapped-key blob, so no row of the
    record can be replaced without the signature failing.
    """
    return {
        "v": 1,
        "kind": "record.version",
        "vault": vault_id,
        "at": at,
        "record": record,
        "version": version,
        "type": type_name,
        "consent": _digest(consent),
        "metadata": _digest(metadata),
        "fields": {name: [fv, hashlib.sha256(ct).hexdigest()] for name, fv, ct in sorted(fields)},
        "keyblob": hashlib.sha256(keyblob).hexdigest(),
    }


#: Text a record statement's template may hold without JSON escaping it:
#: printable ASCII except the quote and the backslash.
_TEMPLATE_SAFE = re.compile(r"[ !#-\[\]-~]*")
_RECORD_KEYS = frozenset(
    {"v", "kind", "vault", "at", "record", "version", "type", "consent", "metadata"}
    | {"fields", "keyblob"}
)


def record_statement_bytes(statement: Mapping[str, Any]) -> bytes:
    """:func:`~childvault.vault._audit.canonical_plain` of a :func:`record_statement`
    (what a batch statement's leaf hashes), the same bytes.

    Formatted from a template when every member has the exact shape
    :func:`record_statement` gives and every text needs no JSON escaping
    (hex digests, ids, ISO times, field and type names); anything else goes
    through the encoder. Why: one statement a record is encoded when an import
    signs its batch and again each time the record is checked before use, and
    the general encoder with sorted keys costs several times the template
    (docs/benchmarks.md, round 2 session 7; pinned equal by hypothesis in
    tests/test_record_statement_bytes.py).
    """
    if type(statement) is dict and statement.keys() == _RECORD_KEYS:
        fields = statement["fields"]
        version = statement["version"]
        if (
            statement["v"] == 1
            and type(statement["v"]) is int
            and type(version) is int
            and 0 <= version <= _SAFE_INT
            and type(fields) is dict
        ):
            parts: list[str] = []
            texts: list[Any] = [
                statement[k]
                for k in ("at", "consent", "keyblob", "kind", "metadata", "record", "type", "vault")
            ]
            ok = True
            for name in sorted(fields):
                entry = fields[name]
                if not (
                    type(entry) is list
                    and len(entry) == 2
                    and type(entry[0]) is int
                    and 0 <= entry[0] <= _SAFE_INT
                ):
                    ok = False
                    break
                texts.append(name)
                texts.append(entry[1])
                parts.append(f'"{name}":[{entry[0]},"{entry[1]}"]')
            # Exact str types (a subclass could format differently), then one
            # pattern over all of them.
            if ok and _ONLY_STR(map(type, texts)) and _TEMPLATE_SAFE.fullmatch("".join(texts)):
                g = statement.get
                return (
                    f'{{"at":"{g("at")}","consent":"{g("consent")}",'
                    f'"fields":{{{",".join(parts)}}},"keyblob":"{g("keyblob")}",'
                    f'"kind":"{g("kind")}","metadata":"{g("metadata")}",'
                    f'"record":"{g("record")}","type":"{g("type")}","v":1,'
                    f'"vault":"{g("vault")}","version":{version}}}'
                ).encode("ascii")
    return canonical_plain(dict(statement))


_SAFE_INT = 2**53 - 1
_ONLY_STR = frozenset({str}).issuperset


#: A first version's record statement, as :func:`record_statement_leaf` takes it:
#: record id, version, type, consent, metadata, sealed fields, key blob.
LeafItem = tuple[
    str, int, str, Mapping[str, Any], Mapping[str, str], Iterable[tuple[str, int, bytes]], bytes
]


def record_statement_leaf(
    *,
    vault_id: str,
    at: str,
    record: str,
    version: int,
    type_name: str,
    consent: Mapping[str, Any],
    metadata: Mapping[str, str],
    fields: Iterable[tuple[str, int, bytes]],
    keyblob: bytes,
) -> bytes:
    """``record_statement_bytes(record_statement(...))`` in one pass: the same bytes.

    Why: an import builds one leaf a record; the statement's dict, then its
    shape check and template were ~30 us a record (docs/benchmarks.md, round 2
    session 9). Here each field's digest is formatted as it is computed and
    only the caller's texts are checked (the digests are hex). Anything the
    template cannot take (a text JSON would escape, a repeated field name, a
    version out of range) goes the long way; tests/test_record_statement_bytes.py
    pins the two equal.
    """
    entries = sorted(fields)
    sha256 = hashlib.sha256
    texts: list[Any] = [vault_id, at, record, type_name]
    parts: list[str] = []
    ok = type(version) is int and 0 <= version <= _SAFE_INT
    for name, fv, ct in entries:
        if type(fv) is not int or not 0 <= fv <= _SAFE_INT:
            ok = False
            break
        texts.append(name)
        parts.append(f'"{name}":[{fv},"{sha256(ct).hexdigest()}"]')
    if (
        ok
        and _ONLY_STR(map(type, texts))
        # A repeated name: the statement keeps the last one, the template both.
        and len(set(texts[4:])) == len(entries)
        and _TEMPLATE_SAFE.fullmatch("".join(texts))
    ):
        return (
            f'{{"at":"{at}","consent":"{_digest(consent)}",'
            f'"fields":{{{",".join(parts)}}},"keyblob":"{sha256(keyblob).hexdigest()}",'
            f'"kind":"record.version","metadata":"{_digest(metadata)}",'
            f'"record":"{record}","type":"{type_name}","v":1,'
            f'"vault":"{vault_id}","version":{version}}}'
        ).encode("ascii")
    return record_statement_bytes(
        record_statement(
            vault_id=vault_id,
            at=at,
            record=record,
            version=version,
            type_name=type_name,
            consent=consent,
            metadata=metadata,
            fields=entries,
            keyblob=keyblob,
        )
    )


def _digest(obj: Mapping[str, Any]) -> str:
    # The log's canonicaliser: RFC 8785's exact bytes, with a fast path for plain
    # values (one statement per imported record: docs/benchmarks.md, trust cost).
    if type(obj) is dict and not obj:
        # A record type without clear metadata (the default schema's): the
        # digest of ``{}``, the same for every record, is not computed again.
        return _EMPTY_DIGEST
    return hashlib.sha256(canonical(dict(obj))).hexdigest()


_EMPTY_DIGEST = hashlib.sha256(b"{}").hexdigest()


#: A record statement that does not match its rows: ``problem`` says how, then the advice.
#: :func:`childvault.vault._record_trust.check_record` keeps only the ``problem``.
ALTERED = N_(
    "{problem}: the stored record was altered; run `childvault audit verify` and alert the officers"
)


def verify_record(
    envelope: Envelope,
    state: TrustState,
    *,
    written_at: int,
    record: str,
    version: int,
    type_name: str,
    consent: Mapping[str, Any],
    metadata: Mapping[str, str],
    fields: Iterable[tuple[str, int, bytes]],
    keyblob: bytes,
    first: bool | None = None,
) -> RecordVersion:
    """Check that the stored rows of a record version are what its writer signed.

    ``written_at`` is the log position of the entry that wrote this version:
    the signer must then have been an active staff member or officer (an
    officer for any version after the first: corrections and consent changes).
    ``first``: whether the log shows this statement as the record's first one.
    Only a first statement (version 1) may be signed by staff; every later one
    (a correction, a consent change, a re-signing after a key rotation) needs
    an officer, or an admin (the Vault provider's server-side rotation is run
    by an admin). Without ``first``, version 1 counts as the first. This is
    what stops a staff member from logging a fresh "version 1" of someone
    else's record. Raises :class:`IntegrityError` naming what disagrees.
    """
    obj = envelope.statement()
    _keys(
        obj,
        {"v", "kind", "vault", "at", "record", "version", "type", "consent", "metadata"}
        | {"fields", "keyblob"},
    )
    if obj["kind"] != "record.version" or obj["vault"] != state.anchor.vault_id:
        raise _bad(_t("not a record statement of this vault"))
    signers = {
        name
        for name, _ in envelope.signatures
        if name in state.users
        and state.users[name].key_from <= written_at
        and envelope.signed_by(state.users[name].sign_key)
    } | _signed_with_retired_key(envelope, state, written_at)
    is_first = version == 1 if first is None else first
    if is_first and version != 1:
        raise IntegrityError(
            _t("record {record}'s first signed statement is not version 1", record=record)
        )
    roles = ("staff", "officer") if is_first else ("officer", "admin")
    writers = sorted(s for s in signers if any(state.was_active(s, r, written_at) for r in roles))
    if not writers:
        raise _not_entitled(record, version)
    expected = record_statement(
        vault_id=state.anchor.vault_id,
        at=str(obj["at"]),
        record=record,
        version=version,
        type_name=type_name,
        consent=consent,
        metadata=metadata,
        fields=fields,
        keyblob=keyblob,
    )
    if expected != obj:
        differs = sorted(k for k in expected if expected[k] != obj.get(k))
        raise IntegrityError(
            _t(
                ALTERED,
                problem=_t(
                    "record {record} version {version} differs from what its writer signed "
                    "({fields})",
                    record=record,
                    version=version,
                    fields=join(", ", differs),
                ),
            )
        )
    return RecordVersion(
        record,
        version,
        type_name,
        str(obj["consent"]),
        str(obj["metadata"]),
        {n: (int(v[0]), str(v[1])) for n, v in obj["fields"].items()},
        str(obj["keyblob"]),
        writers[0],
    )


def _not_entitled(record: str, version: int) -> IntegrityError:
    """The refusal of a record statement (its own or its batch's) signed by no one
    entitled to write that version then."""
    return IntegrityError(
        _t(
            ALTERED,
            problem=_t(
                "record {record} version {version} is not signed by someone entitled to write "
                "it then",
                record=record,
                version=version,
            ),
        )
    )


def _signed_with_retired_key(envelope: Envelope, state: TrustState, seq: int) -> set[str]:
    """Signers whose key was renewed later but was theirs at position ``seq``."""
    found: set[str] = set()
    for name, _ in envelope.signatures:
        for key_hex, start, end in state.retired_keys.get(name, ()):
            if start <= seq < end and envelope.signed_by(bytes.fromhex(key_hex)):
                found.add(name)
    return found
