"""Approval tokens: PASETO ``v4.public`` signed with the officer's Ed25519 key.

Footer: ``{"kid": <PASERK k4.pid of the officer's key>}``. Claims (see
docs/architecture.md, "A read with a grant"): ``jti`` grant id, ``req``
request id, ``iss`` officer, ``sub`` requester, ``vault``, ``rec`` records,
``fld`` fields, ``pur`` purpose,
``iat``/``nbf``/``exp`` (RFC 3339 UTC), ``uses`` and ``keys`` (the key
material for exactly those records and fields, sealed to the requester,
base64url).

Parsing is strict and bounded; every failure is the one opaque
:class:`ApprovalInvalid`, with the reason kept in ``detail`` for the log.
Time checks are not done here: the caller compares with its (injectable) clock.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from childvault._i18n import _t
from childvault.keys import ApprovalInvalid, Identity
from childvault.vault._time import iso, parse_iso

MAX_TOKEN_BYTES = 1 << 20
_PREFIX = "v4.public."
_SHAPE = re.compile(r"v4\.public\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_ID = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def paserk_pid(public_key: bytes) -> str:
    """PASERK ``k4.pid`` identifier of an Ed25519 public key."""
    from pyseto import Key  # imported on use: pyseto is slow to import and most commands need none

    return str(Key.from_asymmetric_key_params(4, x=public_key).to_paserk_id())


@dataclass(frozen=True)
class GrantClaims:
    """The verified content of an approval token."""

    jti: str
    req: str
    iss: str
    sub: str
    vault: str
    rec: tuple[str, ...]
    fld: tuple[str, ...]
    pur: str
    iat: datetime
    nbf: datetime
    exp: datetime
    uses: int
    keys: bytes

    def to_payload(self) -> dict[str, Any]:
        """The JSON claims object."""
        return {
            "jti": self.jti,
            "req": self.req,
            "iss": self.iss,
            "sub": self.sub,
            "vault": self.vault,
            "rec": list(self.rec),
            "fld": list(self.fld),
            "pur": self.pur,
            "iat": iso(self.iat),
            "nbf": iso(self.nbf),
            "exp": iso(self.exp),
            "uses": self.uses,
            "keys": base64.urlsafe_b64encode(self.keys).decode("ascii").rstrip("="),
        }


def _pae(*pieces: bytes) -> bytes:
    """PASETO pre-authentication encoding: counts and lengths as little-endian u64."""
    out = struct.pack("<Q", len(pieces))
    for piece in pieces:
        out += struct.pack("<Q", len(piece)) + piece
    return out


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def issue(officer: Identity, claims: GrantClaims) -> str:
    """Sign ``claims`` as ``officer``; return the token text.

    The v4.public signature is made with ``officer.sign`` over the PASETO
    pre-authentication encoding (header, payload, footer, empty implicit
    assertion) rather than by handing the Ed25519 seed to pyseto, so an
    identity held by the session agent (``childvault unlock``) can sign
    without its key leaving the agent. Ed25519 is deterministic: the token is
    byte for byte what ``pyseto.encode`` makes, and pyseto still verifies it.
    """
    footer = json.dumps({"kid": paserk_pid(officer.public.signing_key)}).encode()
    payload = json.dumps(claims.to_payload(), separators=(",", ":")).encode()
    header = _PREFIX.encode("ascii")
    signature = officer.sign(_pae(header, payload, footer, b""))
    return f"{_PREFIX}{_b64url_encode(payload + signature)}.{_b64url_encode(footer)}"


def _reject(detail: str) -> ApprovalInvalid:
    return ApprovalInvalid(detail)


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_shape(token: str) -> str:
    """``token`` stripped, if it is exactly ``v4.public.<payload>.<footer>`` in canonical
    unpadded base64url; else the opaque refusal.

    Why: pyseto skips characters outside the base64url alphabet and ignores the
    unused low bits of the last character, so one signed token had many
    spellings, each accepted as a valid read. One token, one spelling.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise _reject(_t("token is not text or too large"))
    token = token.strip()
    match = _SHAPE.fullmatch(token)
    if match is None:
        raise _reject(_t("not a v4.public token with a footer"))
    for segment in match.groups():
        try:
            raw = _b64url(segment)
        except ValueError as exc:
            raise _reject(_t("token segment is not base64url")) from exc
        if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != segment:
            raise _reject(_t("token segment is not canonical base64url"))
    return token


def key_id(token: str) -> str:
    """The ``kid`` of a token's footer, read before verification (untrusted)."""
    token = _check_shape(token)
    try:
        footer = json.loads(_b64url(token.rsplit(".", 1)[1]))
        kid = footer["kid"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _reject(_t("footer is not JSON with a kid")) from exc
    if not isinstance(kid, str) or not kid.startswith("k4.pid."):
        raise _reject(_t("footer kid is not a k4.pid"))
    return kid


def _ids(value: Any, pattern: re.Pattern[str], what: str, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > limit:
        raise _reject(_t("claim {what} is not a non-empty list", what=what))
    if len(set(value)) != len(value):
        raise _reject(_t("claim {what} has duplicates", what=what))
    for item in value:
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise _reject(_t("claim {what} has an invalid item", what=what))
    return tuple(value)


def _text(obj: Mapping[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise _reject(_t("claim {name} missing or not text", name=name))
    if pattern is not None and not pattern.fullmatch(value):
        raise _reject(_t("claim {name} malformed", name=name))
    return value


def _time(obj: Mapping[str, Any], name: str) -> datetime:
    value = _text(obj, name)
    try:
        return parse_iso(value)
    except ValueError as exc:
        raise _reject(_t("claim {name} is not an RFC 3339 time", name=name)) from exc


def verify(token: str, public_key: bytes) -> GrantClaims:
    """Verify the signature with ``public_key`` and parse the claims strictly."""
    import pyseto  # imported on use: slow to import, and most commands verify no token
    from pyseto import Key

    token = _check_shape(token)
    try:
        decoded = pyseto.decode(Key.from_asymmetric_key_params(4, x=public_key), token)
    except Exception as exc:  # pyseto raises several types on hostile input
        raise _reject(_t("signature does not verify")) from exc
    raw = decoded.payload
    if not isinstance(raw, bytes):
        raise _reject(_t("payload was not kept as bytes"))
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _reject(_t("payload is not JSON")) from exc
    if not isinstance(obj, dict):
        raise _reject(_t("payload is not an object"))
    known = {"jti", "req", "iss", "sub", "vault", "rec", "fld", "pur", "iat", "nbf", "exp"}
    known |= {"uses", "keys"}
    if set(obj) != known:
        raise _reject(_t("payload has missing or unknown claims"))
    uses = obj["uses"]
    if not isinstance(uses, int) or isinstance(uses, bool) or not 1 <= uses <= 1000:
        raise _reject(_t("claim uses out of range"))
    keys_text = obj["keys"]
    if not isinstance(keys_text, str) or not keys_text:
        raise _reject(_t("claim keys missing"))
    try:
        keys = _b64url(keys_text)
    except ValueError as exc:
        raise _reject(_t("claim keys is not base64url")) from exc
    return GrantClaims(
        jti=_text(obj, "jti", _ID),
        req=_text(obj, "req", _ID),
        iss=_text(obj, "iss", _NAME),
        sub=_text(obj, "sub", _NAME),
        vault=_text(obj, "vault", _ID),
        rec=_ids(obj["rec"], _ID, "rec", 10_000),
        fld=_ids(obj["fld"], _FIELD, "fld", 1_000),
        pur=_text(obj, "pur", _FIELD),
        iat=_time(obj, "iat"),
        nbf=_time(obj, "nbf"),
        exp=_time(obj, "exp"),
        uses=uses,
        keys=keys,
    )
