"""DSSE envelopes: what every signed statement is, how it is signed and parsed.

The lowest part of the signed statements (``_statements`` holds the rules and
re-exports these names): the envelope and its signing, the statement
vocabulary (kinds, roles, the patterns of names and keys) and the strict member
parsers that the trust state, record and batch statements share.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import nacl.exceptions
import nacl.signing

from childvault._i18n import _t
from childvault.keys._errors import IntegrityError, UsageError
from childvault.vault._audit import canonical, canonical_plain

PAYLOAD_TYPE = "application/vnd.childvault.statement.v1+json"
#: Largest envelope accepted, in bytes of JSON (a record statement of a big schema is ~4 KiB).
MAX_ENVELOPE_BYTES = 64 * 1024
MAX_SIGNATURES = 8
ROLES = ("staff", "officer", "admin")
KINDS = (
    "user.register",
    "user.renew",
    "user.disable",
    "custodian.create",
    "custodian.share",
    "custodian.rotate",
    "record.version",
    "setting.set",
)
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_HEX_KEY = re.compile(r"[0-9a-f]{64}")
_FIELD = re.compile(r"[a-z][a-z0-9_]{0,62}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
#: Members of a registration's optional ``entrusted`` object (P-16 accounts).
ENTRUSTED_KEYS = frozenset({"organisation", "agreement", "expires"})
#: Longest organisation name or agreement reference kept in a statement.
MAX_ENTRUSTED_TEXT = 200


class Signer(Protocol):
    """Anything that signs as a named user (an unlocked :class:`~childvault.keys.Identity`)."""

    @property
    def name(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


def _bad(message: str) -> IntegrityError:
    return IntegrityError(_t("signed statement refused: {problem}", problem=message))


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what each signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope holding one canonical-JSON statement and its signatures."""

    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]

    def statement(self) -> dict[str, Any]:
        """The statement object (the payload must be exactly its canonical JSON)."""
        try:
            obj = json.loads(self.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(_t("the payload is not JSON")) from exc
        if not isinstance(obj, dict):
            raise _bad(_t("the payload is not an object"))
        if canonical(obj) != self.payload:
            # One statement, one byte string: no re-encodings with other meanings.
            raise _bad(_t("the payload is not in canonical form"))
        return obj

    def signed_by(self, public_key: bytes) -> bool:
        """Whether some signature verifies under ``public_key``."""
        message = pae(PAYLOAD_TYPE, self.payload)
        return any(_verify(public_key, message, sig) for _, sig in self.signatures)

    def to_json(self) -> dict[str, Any]:
        """The DSSE JSON form."""
        return {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": keyid, "sig": base64.b64encode(sig).decode("ascii")}
                for keyid, sig in self.signatures
            ],
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes of the envelope (what is stored and hashed)."""
        return self._bytes

    @functools.cached_property
    def _bytes(self) -> bytes:
        # Only ASCII keys, base64 and user names (validated): the plain encoder's
        # bytes are RFC 8785's. Cached: an import hashes and stores each once.
        if all(type(k) is str and _NAME.fullmatch(k) for k, _ in self.signatures):
            # The same bytes by a template (members in RFC 8785's order; user
            # names, base64 and the payload type hold nothing JSON escapes):
            # one envelope a record on an import. tests/test_statements_template.py
            # checks the equality with rfc8785 itself.
            b2a = binascii.b2a_base64
            sigs = ",".join(
                f'{{"keyid":"{k}","sig":"{b2a(sig, newline=False).decode()}"}}'
                for k, sig in self.signatures
            )
            payload = b2a(self.payload, newline=False).decode()
            return (
                f'{{"payload":"{payload}","payloadType":"{PAYLOAD_TYPE}","signatures":[{sigs}]}}'
            ).encode()
        return canonical_plain(self.to_json())

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`to_bytes`: how log entries refer to a statement."""
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:
        return hashlib.sha256(self._bytes).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse stored envelope bytes strictly."""
        if not isinstance(data, bytes) or len(data) > MAX_ENVELOPE_BYTES:
            raise _bad(_t("the envelope is not bytes or is too large"))
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(_t("the envelope is not JSON")) from exc
        return cls.from_json(obj)

    @classmethod
    def from_json(cls, obj: object) -> Envelope:
        """Parse the DSSE JSON form strictly."""
        if not isinstance(obj, dict) or set(obj) != {"payloadType", "payload", "signatures"}:
            raise _bad(_t("the envelope does not have exactly payloadType, payload, signatures"))
        if obj["payloadType"] != PAYLOAD_TYPE:
            raise _bad(_t("the envelope's payload type is not a childvault statement"))
        payload = _b64(obj["payload"], "payload", MAX_ENVELOPE_BYTES)
        sigs = obj["signatures"]
        if not isinstance(sigs, list) or not 1 <= len(sigs) <= MAX_SIGNATURES:
            raise _bad(_t("an envelope carries 1 to {n} signatures", n=MAX_SIGNATURES))
        parsed: list[tuple[str, bytes]] = []
        for item in sigs:
            if not isinstance(item, dict) or set(item) != {"keyid", "sig"}:
                raise _bad(_t("a signature is not {keyid, sig}"))
            keyid = item["keyid"]
            if not isinstance(keyid, str) or not _NAME.fullmatch(keyid):
                raise _bad(_t("a signature's keyid is not a user name"))
            sig = _b64(item["sig"], "sig", 64)
            if len(sig) != 64:
                raise _bad(_t("a signature is not 64 bytes"))
            parsed.append((keyid, sig))
        return cls(payload, tuple(parsed))


def _b64(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * limit:
        raise _bad(_t("{what} is not base64 text", what=what))
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(_t("{what} is not base64", what=what)) from exc


def sign(
    statement: Mapping[str, Any], signers: Sequence[Signer], *, plain: bool = False
) -> Envelope:
    """Canonicalise ``statement`` and sign it by each of ``signers``, in order.

    ``plain``: the statement holds only strings, small integers, lists and dicts
    with ASCII keys (a :func:`record_statement`), so the type check of
    :func:`canonical` is skipped (one statement per imported record).
    """
    if not signers:
        raise UsageError(_t("a statement needs at least one signer"))
    payload = canonical_plain(dict(statement)) if plain else canonical(dict(statement))
    message = pae(PAYLOAD_TYPE, payload)
    return Envelope(payload, tuple((s.name, s.sign(message)) for s in signers))


def countersign(envelope: Envelope, signer: Signer) -> Envelope:
    """``envelope`` with one more signature (an officer's countersignature, say)."""
    if len(envelope.signatures) >= MAX_SIGNATURES:
        raise UsageError(_t("the statement already has the most signatures allowed"))
    sig = signer.sign(pae(PAYLOAD_TYPE, envelope.payload))
    return Envelope(envelope.payload, (*envelope.signatures, (signer.name, sig)))


# ------------------------------------------------------------------ parsing


def _keys(obj: Mapping[str, Any], expected: set[str]) -> None:
    if set(obj) != expected:
        raise _bad(_t("a {kind} statement has missing or unknown members", kind=obj.get("kind")))


def entrusted_member(value: object) -> dict[str, str]:
    """Parse a registration's ``entrusted`` member strictly: ``{organisation,
    agreement, expires}``, two short single-line texts and an ISO date."""
    if not isinstance(value, dict) or set(value) != ENTRUSTED_KEYS:
        raise _bad(_t("the entrusted member is not {organisation, agreement, expires}"))
    for key in ("organisation", "agreement"):
        text = value[key]
        if (
            not isinstance(text, str)
            or not text.strip()
            or len(text) > MAX_ENTRUSTED_TEXT
            or any(ord(ch) < 32 or ord(ch) == 127 for ch in text)
        ):
            raise _bad(_t("the entrusted {key} is not a short line of text", key=key))
    expires = value["expires"]
    if not isinstance(expires, str) or not _DATE.fullmatch(expires):
        raise _bad(_t("the entrusted expiry is not a date"))
    try:
        date.fromisoformat(expires)
    except ValueError as exc:
        raise _bad(_t("the entrusted expiry is not a date")) from exc
    return {k: str(value[k]) for k in sorted(ENTRUSTED_KEYS)}


def _name(value: object) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _bad(_t("a user name is malformed"))
    return value


def _roles(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(r not in ROLES for r in value):
        raise _bad(_t("roles are malformed"))
    if value != sorted(set(value)):
        raise _bad(_t("roles must be sorted and distinct"))
    return tuple(value)


def _key(value: object) -> bytes:
    if not isinstance(value, str) or not _HEX_KEY.fullmatch(value):
        raise _bad(_t("a public key is not 64 hex characters"))
    return bytes.fromhex(value)


def _generation(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 1 << 31:
        raise _bad(_t("a custodian generation is malformed"))
    return value


def field_name_ok(name: str) -> bool:
    """Whether ``name`` can appear as a field in a record statement."""
    return _FIELD.fullmatch(name) is not None
