"""The formats the Vault/OpenBao provider defines: pure functions, no I/O.

One Transit key (``aes256-gcm96``, ``derived=true``, not exportable) wraps every
field DEK. The derivation context names the DEK's place and a random salt that
exists only in Vault, in KV v2 at ``<kv>/records/<record_id>`` (the *salt
document*)::

    {"salt": b64(32 bytes), "fields": {field: b64(32 bytes)}}

A field uses its own salt when it has one, else the record salt. Destroying
the salts (``shred``) or an old salt version (``replace``) makes the wrapped
DEKs that depend on them unwrappable everywhere, including in copies of the
database taken before: the salt, not the database, holds the last piece.

The context is ``base64`` of length-prefixed parts (so no choice of record id
or field name can make two different places share a context)::

    u16 len || "childvault/vault-ctx/1" || u16 len || record_id || u16 len || field
    || u16 len || str(field_version) || u16 len || salt

Blob (what the database stores), compact JSON::

    {"v":1,"rec":record_id,"ver":version,"f":{field:[field_version,"vault:v1:..."]}}

The record id and version are checked against the store's row on every use.
The record id, field and field version are also authenticated by Transit
through the context; the record version is not (Transit cannot bind it without
rewrapping every field on each update), so a blob from another version of the
same record is refused by the clear check, and a rolled-back blob still fails
for every corrected field because ``replace`` destroys the old field salts.

Grant material (sealed to the requester's X25519 key)::

    {"v":1,"vault":vault_id,"grant":grant_id,
     "wraps":[{"token":wrapping_token,"items":[[record_id,field,field_version],...]}]}

Each wrapping token is a response-wrapped Transit batch decrypt of exactly the
items listed; the requester checks its ``creation_path`` and unwraps it once.

Blind-index input (Transit ``hmac`` on the index key)::

    base64(u16 len || "childvault/index/1" || u16 len || vault_id || u16 len || field
           || u16 len || value)

docs/vault.md (sections 4 and 5) describes the same from the operator's side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from childvault._i18n import _t
from childvault.keys._encoding import b64, unb64
from childvault.keys._errors import ApprovalInvalid, DecryptionFailed, UsageError
from childvault.keys._provider import WrappedRecord

__all__ = [
    "CTX_LABEL",
    "DEK_LEN",
    "INDEX_LABEL",
    "SALT_LEN",
    "GrantWraps",
    "Salts",
    "blob_key_version",
    "check_record_id",
    "ciphertext_version",
    "context",
    "encode_blob",
    "encode_material",
    "index_input",
    "length_prefixed",
    "parse_blob",
    "parse_material",
    "parse_salts",
]

#: Bytes of a record or field salt.
SALT_LEN = 32
#: Bytes of a field data key.
DEK_LEN = 32
#: First part of every derivation context (a format version in itself).
CTX_LABEL = b"childvault/vault-ctx/1"
#: First part of every blind-index HMAC input.
INDEX_LABEL = b"childvault/index/1"

_RECORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: Grant material once parsed: ``(wrapping token, [(record_id, field, field_version)])``.
GrantWraps = list[tuple[str, list[tuple[str, str, int]]]]


def check_record_id(record_id: str) -> str:
    """Return ``record_id`` if it is usable as a path segment of its salt document."""
    # Record ids become URL path segments of the salt document: refuse
    # anything that could escape ``records/`` or change the route.
    if not isinstance(record_id, str) or not _RECORD_RE.fullmatch(record_id):
        raise UsageError(
            _t("record id {record_id!r} is not usable as a Vault path segment", record_id=record_id)
        )
    return record_id


def length_prefixed(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: unambiguous whatever the parts contain."""
    out = bytearray()
    for part in parts:
        if len(part) > 0xFFFF:
            raise UsageError(_t("a record id or field name is too long"))
        out += len(part).to_bytes(2, "big") + part
    return bytes(out)


def context(record_id: str, field_name: str, field_version: int, salt: bytes) -> str:
    """The Transit derivation context of one field DEK (base64 text)."""
    return b64(
        length_prefixed(
            CTX_LABEL,
            record_id.encode("utf-8"),
            field_name.encode("utf-8"),
            str(field_version).encode("ascii"),
            salt,
        )
    )


def index_input(vault_id: str, field: str, value: bytes) -> str:
    """The Transit ``hmac`` input of one blind-index value (base64 text)."""
    return b64(length_prefixed(INDEX_LABEL, vault_id.encode("utf-8"), field.encode("utf-8"), value))


# -- salt documents ------------------------------------------------------------------


@dataclass(frozen=True)
class Salts:
    """One record's salt document: the record salt, per-field salts, its KV version."""

    record: bytes
    fields: dict[str, bytes]
    kv_version: int

    def for_field(self, field_name: str) -> bytes:
        """The salt of ``field_name``: its own if it has one, else the record salt."""
        return self.fields.get(field_name, self.record)

    def to_doc(self) -> dict[str, Any]:
        """The document written to KV v2 (``data`` of the write)."""
        return {
            "salt": b64(self.record),
            "fields": {name: b64(salt) for name, salt in self.fields.items()},
        }


def parse_salts(reply: Mapping[str, Any], record_id: str) -> Salts:
    """Parse a KV v2 read of a salt document; :class:`DecryptionFailed` if malformed."""
    try:
        data = reply["data"]["data"]
        version = int(reply["data"]["metadata"]["version"])
        record = unb64(data["salt"])
        per_field = {str(k): unb64(v) for k, v in dict(data.get("fields") or {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise DecryptionFailed(f"salt document of record {record_id} is malformed") from exc
    if len(record) != SALT_LEN or any(len(s) != SALT_LEN for s in per_field.values()):
        raise DecryptionFailed(f"salt document of record {record_id} has a wrong salt length")
    return Salts(record, per_field, version)


# -- key blobs -----------------------------------------------------------------------


def parse_blob(record: WrappedRecord) -> dict[str, tuple[int, str]]:
    """Parse a blob and check it belongs to ``record`` (id and version).

    Returns ``{field: (field_version, Transit ciphertext)}``; raises
    :class:`DecryptionFailed` for anything malformed or bound elsewhere.
    """
    try:
        doc = json.loads(record.blob)
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ValueError(_t("unknown blob format"))
        bound = doc["rec"] == record.record_id and doc["ver"] == record.version
        out: dict[str, tuple[int, str]] = {}
        for name, pair in dict(doc["f"]).items():
            version, ciphertext = pair
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError(_t("bad field version"))
            if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:v"):
                raise ValueError(_t("bad ciphertext"))
            out[str(name)] = (version, ciphertext)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DecryptionFailed("wrapped record keys are malformed") from exc
    if not bound:
        # A blob moved from another record or version.
        raise DecryptionFailed("wrapped record keys bound to another record or version")
    return out


def encode_blob(record_id: str, version: int, entries: Mapping[str, tuple[int, str]]) -> bytes:
    """The blob of one record version: ``entries`` is ``{field: (field_version, ciphertext)}``."""
    doc = {
        "v": 1,
        "rec": record_id,
        "ver": version,
        "f": {name: [fv, ct] for name, (fv, ct) in entries.items()},
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def ciphertext_version(ct: str) -> int:
    """The Transit key version of a ``vault:vN:...`` ciphertext."""
    try:
        prefix, version, _rest = ct.split(":", 2)
        if prefix != "vault" or not version.startswith("v"):
            raise ValueError(_t("not a Transit ciphertext"))
        return int(version[1:])
    except ValueError as exc:
        raise DecryptionFailed("wrapped key has an unknown format") from exc


def blob_key_version(blob: bytes) -> int:
    """The oldest Transit key version any DEK in ``blob`` is wrapped with (0 if none)."""
    try:
        doc = json.loads(blob)
        versions = [ciphertext_version(pair[1]) for pair in dict(doc["f"]).values()]
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise DecryptionFailed("wrapped record keys are malformed") from exc
    return min(versions, default=0)


# -- grant material ------------------------------------------------------------------


def encode_material(
    vault_id: str, grant_id: str, wraps: Sequence[tuple[str, Sequence[tuple[str, str, int]]]]
) -> bytes:
    """The grant material (before sealing): one entry per wrapping token."""
    return json.dumps(
        {
            "v": 1,
            "vault": vault_id,
            "grant": grant_id,
            "wraps": [
                {"token": token, "items": [[rid, name, fv] for rid, name, fv in items]}
                for token, items in wraps
            ],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def parse_material(inner: bytes, vault_id: str, grant_id: str) -> GrantWraps:
    """Parse unsealed grant material and check it is bound to this vault and grant.

    Raises :class:`ApprovalInvalid` for material bound elsewhere or malformed.
    """
    try:
        doc = json.loads(inner)
        if doc["v"] != 1 or doc["vault"] != vault_id or doc["grant"] != grant_id:
            raise ApprovalInvalid("grant material bound to another grant or vault")
        wraps: GrantWraps = []
        for w in doc["wraps"]:
            token = w["token"]
            if not isinstance(token, str) or not token:
                raise ValueError(_t("bad wrapping token"))
            items = []
            for rid, name, fv in w["items"]:
                if not (isinstance(rid, str) and isinstance(name, str)):
                    raise ValueError(_t("bad item"))
                if not isinstance(fv, int) or isinstance(fv, bool) or fv < 1:
                    raise ValueError(_t("bad field version"))
                items.append((rid, name, fv))
            wraps.append((token, items))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ApprovalInvalid("grant material is malformed") from exc
    return wraps
