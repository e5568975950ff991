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
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import nacl.exceptions
import nacl.signing
import rfc8785

from childvault._i18n import N_, _t, join
from childvault.keys._errors import IntegrityError, UsageError
from childvault.vault import _settings
from childvault.vault._audit import canonical, canonical_plain
from childvault.vault._merkle import leaf_hash, node_hash, verify_inclusion

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


# ---------------------------------------------------------------- the anchor


@dataclass(frozen=True)
class Anchor:
    """The root of a vault's trust: its id and the founding admin's signing key.

    Kept inside every identity file's passphrase-encrypted part, so only the
    file's owner can change the anchor their own process trusts.
    """

    vault_id: str
    admin: str
    sign_key: bytes

    def __post_init__(self) -> None:
        if not _HEX_ID.fullmatch(self.vault_id) or not _NAME.fullmatch(self.admin):
            raise UsageError(_t("an anchor needs a vault id and a user name"))
        if len(self.sign_key) != 32:
            raise UsageError(_t("an anchor's signing key is 32 bytes"))

    def to_json(self) -> dict[str, str]:
        """JSON form (stored in identity files)."""
        return {"vault": self.vault_id, "admin": self.admin, "sign_key": self.sign_key.hex()}

    @classmethod
    def from_json(cls, obj: object) -> Anchor:
        """Parse the JSON form strictly."""
        if not isinstance(obj, dict) or set(obj) != {"vault", "admin", "sign_key"}:
            raise _bad(_t("the anchor is not {vault, admin, sign_key}"))
        key = obj["sign_key"]
        if not isinstance(key, str) or not _HEX_KEY.fullmatch(key):
            raise _bad(_t("the anchor's key is not 64 hex characters"))
        try:
            return cls(str(obj["vault"]), str(obj["admin"]), bytes.fromhex(key))
        except UsageError as exc:
            raise _bad(_t("the anchor is malformed")) from exc

    def fingerprint(self) -> str:
        """What a new user compares with the admin, read aloud: 8 groups of 4 hex digits."""
        digest = hashlib.sha256(b"childvault/anchor/1\x00" + rfc8785.dumps(self.to_json()))
        text = digest.hexdigest()[:32]
        return " ".join(text[i : i + 4] for i in range(0, 32, 4))


# ------------------------------------------------------------ the trust state


@dataclass
class UserState:
    """What verified statements say about one user."""

    name: str
    roles: tuple[str, ...]
    enc_key: bytes
    sign_key: bytes
    #: Log positions (seq) from which the user was active, and until which (None: still).
    active_from: int
    active_until: int | None = None
    #: Log position from which ``sign_key`` is the user's key (registration or renewal).
    key_from: int = 0
    #: For an entrusted organisation's account: its signed ``{organisation,
    #: agreement, expires}``; None for the institution's own staff.
    entrusted: dict[str, str] | None = None

    def expired_on(self, day: date) -> bool:
        """Whether an entrusted account's agreement has ended by legal date ``day``."""
        return self.entrusted is not None and day.isoformat() > self.entrusted["expires"]

    @property
    def active(self) -> bool:
        """Not disabled."""
        return self.active_until is None

    def to_json(self) -> dict[str, Any]:
        """JSON form (part of a saved trust state)."""
        return {
            "name": self.name,
            "roles": list(self.roles),
            "enc_key": self.enc_key.hex(),
            "sign_key": self.sign_key.hex(),
            "from": self.active_from,
            "until": self.active_until,
            "key_from": self.key_from,
            # Only when set: states saved before entrusted accounts stay byte-identical.
            **({"entrusted": dict(self.entrusted)} if self.entrusted is not None else {}),
        }


@dataclass
class TrustState:
    """Users, roles, keys and custodian holders, as verified statements made them.

    Build it with :meth:`start` and feed it every statement in log order with
    :meth:`apply`; :meth:`to_bytes` / :meth:`from_bytes` save it so the next
    verification resumes from there (the saved state must itself be protected,
    e.g. covered by the verifier's own signed checkpoint).
    """

    anchor: Anchor
    users: dict[str, UserState] = field(default_factory=dict)
    #: Earlier keys of renewed users: (name, sign_key hex) -> (from, until) seq.
    retired_keys: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    custodians: dict[int, bytes] = field(default_factory=dict)
    holders: dict[int, set[str]] = field(default_factory=dict)
    had_officer: bool = False
    applied: int = 0
    #: Vault settings as the latest verified ``setting.set`` of each key made them
    #: (a key absent here has its default: _settings.SPECS).
    settings: dict[str, str] = field(default_factory=dict)
    #: Names the log registered without a verified statement yet: a user added
    #: before the founding registration (a vault made before anchors), or a
    #: pending registration (``user.add`` with ``pending_statement``). Entries in
    #: their names are not signature-checked; any other unregistered name's are
    #: refused (review RV11-3, :func:`~._registrations.replay`).
    unverified: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, anchor: Anchor) -> TrustState:
        """The state before any statement: only the anchor is trusted."""
        return cls(anchor)

    def copy(self) -> TrustState:
        """An independent copy: applying statements to it leaves this one as it is.

        Equal to ``from_bytes(to_bytes())`` without the canonical JSON and its
        parse (the server copies its verified state at every commit). Every
        container is new and each :class:`UserState` too (``apply`` changes
        them in place); the anchor and the tuples, bytes and strings inside
        are immutable. tests/test_trust_state_copy.py pins the fields, so a new
        one is added here too.
        """
        return TrustState(
            self.anchor,
            {
                name: UserState(
                    u.name,
                    u.roles,
                    u.enc_key,
                    u.sign_key,
                    u.active_from,
                    u.active_until,
                    u.key_from,
                    None if u.entrusted is None else dict(u.entrusted),
                )
                for name, u in self.users.items()
            },
            {name: list(keys) for name, keys in self.retired_keys.items()},
            dict(self.custodians),
            {gen: set(names) for gen, names in self.holders.items()},
            self.had_officer,
            self.applied,
            dict(self.settings),
            set(self.unverified),
        )

    # -- queries ------------------------------------------------------------

    def user(self, name: str) -> UserState:
        """A registered user (active or not); :class:`IntegrityError` if unknown."""
        found = self.users.get(name)
        if found is None:
            raise IntegrityError(
                _t("user {name!r} has no verified registration in this vault's log", name=name)
            )
        return found

    def is_active(self, name: str, role: str | None = None) -> bool:
        """Whether ``name`` is registered, not disabled, and holds ``role`` (if given)."""
        found = self.users.get(name)
        return bool(found and found.active and (role is None or role in found.roles))

    def was_active(self, name: str, role: str, seq: int) -> bool:
        """Whether ``name`` held ``role`` and was active at log position ``seq``."""
        found = self.users.get(name)
        if found is None or role not in found.roles:
            return False
        until = found.active_until
        return found.active_from <= seq and (until is None or seq < until)

    def current_custodian(self) -> tuple[int, bytes] | None:
        """The latest verified custodian generation and its public key."""
        if not self.custodians:
            return None
        generation = max(self.custodians)
        return generation, self.custodians[generation]

    def active_holders(self, generation: int) -> set[str]:
        """Active officers a verified statement gave custodian ``generation``."""
        return {n for n in self.holders.get(generation, set()) if self.is_active(n, "officer")}

    # -- replay -------------------------------------------------------------

    def _signers(self, envelope: Envelope, extra: Mapping[str, bytes] | None = None) -> set[str]:
        """Names whose signature verifies with the key the state (or ``extra``) gives them."""
        message = pae(PAYLOAD_TYPE, envelope.payload)
        found: set[str] = set()
        for keyid, sig in envelope.signatures:
            key = (extra or {}).get(keyid)
            if key is None:
                known = self.users.get(keyid)
                if known is None or not known.active:
                    continue
                key = known.sign_key
            if _verify(key, message, sig):
                found.add(keyid)
        return found

    def apply(self, envelope: Envelope, *, seq: int) -> dict[str, Any]:
        """Verify ``envelope`` (logged at position ``seq``) and apply it; return the statement.

        Raises :class:`IntegrityError` naming what is wrong when the signers
        were not entitled to make it; the state is then unchanged.
        """
        obj = envelope.statement()
        kind = obj.get("kind")
        if obj.get("v") != 1 or kind not in KINDS:
            raise _bad(_t("unknown statement version or kind"))
        if obj.get("vault") != self.anchor.vault_id:
            raise _bad(_t("the statement belongs to another vault"))
        at = obj.get("at")
        if not isinstance(at, str) or not _TIME.fullmatch(at):
            raise _bad(_t("the statement has no valid time"))
        handler = {
            "user.register": self._register,
            "user.renew": self._renew,
            "user.disable": self._disable,
            "custodian.create": self._custodian_create,
            "custodian.share": self._custodian_share,
            "custodian.rotate": self._custodian_rotate,
            "setting.set": self._setting,
        }.get(str(kind))
        if handler is None:
            raise _bad(_t("a record statement is not trust state"))
        handler(envelope, obj, seq)
        self.applied += 1
        return obj

    def _register(self, env: Envelope, obj: Mapping[str, Any], seq: int) -> None:
        base = {"v", "kind", "vault", "at", "user", "roles", "enc_key", "sign_key"}
        # `entrusted` is optional, so statements made before it stay valid.
        _keys(obj, (base | {"entrusted"}) if "entrusted" in obj else base)
        name = _name(obj["user"])
        roles = _roles(obj["roles"])
        entrusted = entrusted_member(obj["entrusted"]) if "entrusted" in obj else None
        if entrusted is not None and roles != ("staff",):
            raise _bad(_t("an entrusted organisation's account can only have the staff role"))
        enc, sig = _key(obj["enc_key"]), _key(obj["sign_key"])
        if name in self.users:
            raise _bad(_t("user {name!r} is already registered", name=name))
        if not self.users:
            # The founding admin: exactly the anchor's name and key, self-signed.
            if (name, sig) != (self.anchor.admin, self.anchor.sign_key) or roles != ("admin",):
                raise _bad(_t("the first registration must be the anchor's founding admin"))
            if name not in self._signers(env, {name: sig}):
                raise _bad(_t("the founding admin's registration is not signed by the anchor key"))
        else:
            signed = self._signers(env, {name: sig})
            if name not in signed:
                raise _bad(
                    _t(
                        "the registration of {name!r} is not signed by {name!r}'s own key",
                        name=name,
                    )
                )
            if not any(self.is_active(s, "admin") for s in signed - {name}):
                raise _bad(
                    _t("the registration of {name!r} lacks an active admin's signature", name=name)
                )
            if "officer" in roles:
                officers = {s for s in signed - {name} if self.is_active(s, "officer")}
                first = not self.had_officer and self.anchor.admin in signed
                if not officers and not first:
                    raise _bad(
                        _t(
                            "the officer role of {name!r} lacks an existing officer's "
                            "countersignature",
                            name=name,
                        )
                    )
        self.users[name] = UserState(
            name, roles, enc, sig, active_from=seq, key_from=seq, entrusted=entrusted
        )
        if "officer" in roles:
            self.had_officer = True

    def _renew(self, env: Envelope, obj: Mapping[str, Any], seq: int) -> None:
        _keys(obj, {"v", "kind", "vault", "at", "user", "enc_key", "sign_key"})
        name = _name(obj["user"])
        enc, sig = _key(obj["enc_key"]), _key(obj["sign_key"])
        user = self.user(name)
        if not user.active:
            raise _bad(_t("user {name!r} is disabled", name=name))
        if not env.signed_by(user.sign_key) or not env.signed_by(sig):
            raise _bad(
                _t("the key renewal of {name!r} is not signed by both old and new keys", name=name)
            )
        if not any(self.is_active(s, "admin") for s in self._signers(env)):
            raise _bad(
                _t("the key renewal of {name!r} lacks an active admin's signature", name=name)
            )
        self.retired_keys.setdefault(name, []).append((user.sign_key.hex(), user.key_from, seq))
        user.enc_key, user.sign_key, user.key_from = enc, sig, seq

    def _disable(self, env: Envelope, obj: Mapping[str, Any], seq: int) -> None:
        _keys(obj, {"v", "kind", "vault", "at", "user"})
        name = _name(obj["user"])
        user = self.user(name)
        if not user.active:
            raise _bad(_t("user {name!r} is already disabled", name=name))
        if not any(self.is_active(s, "admin") for s in self._signers(env) - {name}):
            raise _bad(_t("disabling {name!r} lacks another active admin's signature", name=name))
        user.active_until = seq

    def _custodian_create(self, env: Envelope, obj: Mapping[str, Any], seq: int) -> None:
        _keys(obj, {"v", "kind", "vault", "at", "generation", "public_key", "holder"})
        generation = _generation(obj["generation"])
        holder = _name(obj["holder"])
        if self.custodians or generation != 1:
            raise _bad(_t("a custodian key already exists; only rotation makes another"))
        if not self.is_active(holder, "officer") or holder not in self._signers(env):
            raise _bad(_t("the custodian key must be created and signed by an active officer"))
        self.custodians[1] = _key(obj["public_key"])
        self.holders[1] = {holder}

    def _custodian_share(self, env: Envelope, obj: Mapping[str, Any], seq: int) -> None:
        _keys(obj, {"v", "kind", "vault", "at", "generation", "to"})
        generation = _generation(obj["generation"])
        to = _name(obj["to"])
        current = self.current_custodian()
        if current is None or current[0] != generation:
            raise _bad(_t("only the current custodian generation can be shared"))
        if not self.is_active(to, "officer"):
            raise _bad(_t("{to!r} is not an active officer", to=to))
        sharers = self._signers(env) & self.active_holders(generation)
        if not sharers - {to}:
            raise _bad(_t("sharing the custodian key needs the signature of another active holder"))
        self.holders[generation].add(to)

    def _custodian_rotate(self, env: Envelope, obj: Mapping[str, Any], seq: int) -> None:
        _keys(obj, {"v", "kind", "vault", "at", "generation", "previous", "public_key", "holders"})
        generation = _generation(obj["generation"])
        previous = _generation(obj["previous"])
        holders = obj["holders"]
        if not isinstance(holders, list) or not holders or len(holders) > 1000:
            raise _bad(_t("a rotation names its holders"))
        names = {_name(h) for h in holders}
        current = self.current_custodian()
        if current is None or current[0] != previous or generation != previous + 1:
            raise _bad(_t("a rotation must replace the current custodian generation"))
        rotators = self._signers(env) & self.active_holders(previous)
        if not rotators & names:
            raise _bad(_t("a rotation must be signed by an active holder who keeps the new key"))
        if not all(self.is_active(n, "officer") for n in names):
            raise _bad(_t("every new custodian holder must be an active officer"))
        self.custodians[generation] = _key(obj["public_key"])
        self.holders[generation] = names

    def _setting(self, env: Envelope, obj: Mapping[str, Any], seq: int) -> None:
        _keys(obj, {"v", "kind", "vault", "at", "key", "value"})
        key, value = obj["key"], obj["value"]
        if not isinstance(key, str) or key not in _settings.SPECS:
            raise _bad(_t("unknown setting"))
        if not _settings.is_canonical(key, value):
            raise _bad(_t("the value of setting {key!r} is not valid", key=key))
        role = _settings.SPECS[key].signer
        if not any(self.is_active(s, role) for s in self._signers(env)):
            raise _bad(_t("setting {key!r} is not signed by an active {role}", key=key, role=role))
        self.settings[key] = str(value)

    def setting(self, key: str) -> str:
        """The verified value of setting ``key``, else its default."""
        value = self.settings.get(key)
        return value if value is not None else _settings.spec(key).default

    # -- persistence ----------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Canonical JSON of the state, to resume verification from it later."""
        return bytes(
            rfc8785.dumps(
                {
                    "anchor": self.anchor.to_json(),
                    "users": [u.to_json() for u in self.users.values()],
                    "retired": {
                        n: [list(k) for k in keys] for n, keys in sorted(self.retired_keys.items())
                    },
                    "custodians": {str(g): k.hex() for g, k in self.custodians.items()},
                    "holders": {str(g): sorted(h) for g, h in self.holders.items()},
                    "had_officer": self.had_officer,
                    "applied": self.applied,
                    # Only when set: states saved before settings stay byte-identical.
                    **({"settings": dict(self.settings)} if self.settings else {}),
                    # Likewise: a state saved before it (or without such names) is
                    # unchanged; one that lacks a name is replayed from the anchor.
                    **({"unverified": sorted(self.unverified)} if self.unverified else {}),
                }
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes, anchor: Anchor) -> TrustState:
        """A saved state; refused unless it was saved for ``anchor``."""
        try:
            doc = json.loads(data)
            if Anchor.from_json(doc["anchor"]) != anchor:
                raise _bad(_t("the saved trust state belongs to another anchor"))
            state = cls(anchor)
            for u in doc["users"]:
                state.users[u["name"]] = UserState(
                    _name(u["name"]),
                    _roles(u["roles"]),
                    _key(u["enc_key"]),
                    _key(u["sign_key"]),
                    int(u["from"]),
                    None if u["until"] is None else int(u["until"]),
                    int(u["key_from"]),
                    entrusted_member(u["entrusted"]) if "entrusted" in u else None,
                )
            state.retired_keys = {
                str(n): [(str(k), int(a), int(b)) for k, a, b in keys]
                for n, keys in doc["retired"].items()
            }
            state.custodians = {int(g): _key(k) for g, k in doc["custodians"].items()}
            state.holders = {int(g): {_name(h) for h in hs} for g, hs in doc["holders"].items()}
            state.had_officer = bool(doc["had_officer"])
            state.applied = int(doc["applied"])
            settings = doc.get("settings", {})
            if not isinstance(settings, dict) or not all(
                _settings.is_canonical(str(k), v) for k, v in settings.items()
            ):
                raise _bad(_t("the saved settings are malformed"))
            state.settings = {str(k): str(v) for k, v in settings.items()}
            unverified = doc.get("unverified", [])
            if not isinstance(unverified, list):
                raise _bad(_t("the saved trust state is malformed"))
            state.unverified = {_name(n) for n in unverified}
            return state
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _bad(_t("the saved trust state is malformed")) from exc


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


# ------------------------------------------------------ batch record statements


#: The kind of the one statement an import batch signs (docs/trust.md, "Record statements").
BATCH_KIND = "record.batch"
#: The kind of the document kept beside each record of a batch.
MEMBER_KIND = "record.member"
#: Most records one batch statement covers (an import batch is 500).
MAX_BATCH = 1 << 16
#: Longest inclusion proof of a batch of at most MAX_BATCH records.
_MAX_PROOF = 16


def batch_statement(*, vault_id: str, at: str, size: int, root: bytes) -> dict[str, Any]:
    """The statement a writer signs once for a batch of new records: the RFC 6962
    Merkle root over the leaf hashes of the batch's ``record.version`` payloads."""
    return {
        "v": 1,
        "kind": BATCH_KIND,
        "vault": vault_id,
        "at": at,
        "size": size,
        "root": root.hex(),
    }


def batch_proofs(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The RFC 6962 root over the leaf hashes ``leaves`` and every leaf's inclusion
    proof (RFC 9162 2.1.3 PATH, leaf upwards), in O(n log n) instead of one tree a proof."""
    if not leaves:
        raise UsageError(_t("a batch statement needs at least one record"))
    proofs: list[list[bytes]] = [[] for _ in leaves]

    def subtree(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaves[lo]
        k = 1 << ((hi - lo - 1).bit_length() - 1)  # largest power of two below hi - lo
        left, right = subtree(lo, lo + k), subtree(lo + k, hi)
        # Each leaf's sibling at this level, appended after the deeper ones.
        for i in range(lo, lo + k):
            proofs[i].append(right)
        for i in range(lo + k, hi):
            proofs[i].append(left)
        return node_hash(left, right)

    return subtree(0, len(leaves)), proofs


@dataclass(frozen=True)
class BatchMember:
    """What is kept beside one record of a batch (in ``statements``, under the seq
    of its ``record.create`` entry, which names :meth:`digest`): the batch's signed
    envelope, the record's position and its inclusion proof. With the record's
    rows it proves the record's ``record.version`` payload is a leaf of the
    signed root, so one record is checked alone, with one signature check per
    batch (cached) and at most 16 hashes."""

    batch: Envelope
    index: int
    proof: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (what is stored and hashed)."""
        return self._bytes

    @functools.cached_property
    def _bytes(self) -> bytes:
        # RFC 8785's bytes by a template: members in sorted order, the envelope's
        # own canonical bytes, hex and an integer (nothing JSON escapes).
        proof = ",".join(f'"{p.hex()}"' for p in self.proof)
        return (
            b'{"batch":'
            + self.batch.to_bytes()
            + f',"index":{self.index},"kind":"{MEMBER_KIND}","proof":[{proof}],"v":1}}'.encode()
        )

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`to_bytes`: what the record's log entry names."""
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:
        return hashlib.sha256(self._bytes).hexdigest()

    @classmethod
    def from_json(cls, obj: object) -> BatchMember:
        """Parse the JSON form strictly."""
        if not isinstance(obj, dict) or set(obj) != {"v", "kind", "batch", "index", "proof"}:
            raise _bad(_t("a batch member does not have exactly v, kind, batch, index, proof"))
        if obj["v"] != 1 or obj["kind"] != MEMBER_KIND:
            raise _bad(_t("not a batch member"))
        index, proof = obj["index"], obj["proof"]
        if type(index) is not int or not 0 <= index < MAX_BATCH:
            raise _bad(_t("a batch member's index is out of range"))
        if not isinstance(proof, list) or len(proof) > _MAX_PROOF:
            raise _bad(_t("a batch member's proof is too long"))
        if not all(isinstance(p, str) and _HEX_KEY.fullmatch(p) for p in proof):
            raise _bad(_t("a batch member's proof is not a list of SHA-256 hashes"))
        return cls(Envelope.from_json(obj["batch"]), index, tuple(bytes.fromhex(p) for p in proof))


#: Bytes of one hash of a member's inclusion proof on the wire (:func:`pack_members`).
_PROOF_HASH = 32


def pack_members(members: Sequence[BatchMember]) -> tuple[bytes, list[int], list[int], bytes]:
    """Members of one batch statement in their wire form (``statements.add_members``):
    the batch's envelope once, each member's index and proof length, and the
    proofs' hashes concatenated. :func:`unpack_members` rebuilds exactly the
    members (and so the stored bytes); 500 records' statements are then one
    envelope and 500 proofs, not 500 copies of the envelope (docs/server.md)."""
    if not members or any(m.batch != members[0].batch for m in members):
        raise UsageError(_t("the members packed together belong to one batch statement"))
    return (
        members[0].batch.to_bytes(),
        [m.index for m in members],
        [len(m.proof) for m in members],
        b"".join(h for m in members for h in m.proof),
    )


def unpack_members(
    envelope: object, indexes: object, lengths: object, proofs: object
) -> list[BatchMember]:
    """The members :func:`pack_members` packed, parsed strictly: an
    :class:`IntegrityError` for anything it cannot have made."""
    if not (
        isinstance(envelope, bytes)
        and isinstance(proofs, bytes)
        and isinstance(indexes, list)
        and isinstance(lengths, list)
        and 0 < len(indexes) == len(lengths) <= MAX_BATCH
        and all(type(i) is int and 0 <= i < MAX_BATCH for i in indexes)
        and all(type(n) is int and 0 <= n <= _MAX_PROOF for n in lengths)
        and sum(lengths) * _PROOF_HASH == len(proofs)
    ):
        raise _bad(_t("packed batch members are malformed"))
    batch = Envelope.from_bytes(envelope)
    out: list[BatchMember] = []
    at = 0
    for index, n in zip(indexes, lengths, strict=True):
        end = at + n * _PROOF_HASH
        proof = tuple(proofs[i : i + _PROOF_HASH] for i in range(at, end, _PROOF_HASH))
        out.append(BatchMember(batch, index, proof))
        at = end
    return out


def stored_statement(data: bytes) -> Envelope | BatchMember:
    """Parse what is kept beside a record's entry: its own envelope (one record, and
    every vault written before batch statements) or a :class:`BatchMember`."""
    if not isinstance(data, bytes) or len(data) > MAX_ENVELOPE_BYTES:
        raise _bad(_t("the envelope is not bytes or is too large"))
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(_t("the envelope is not JSON")) from exc
    if isinstance(obj, dict) and obj.get("kind") == MEMBER_KIND:
        return BatchMember.from_json(obj)
    return Envelope.from_json(obj)


def sign_batch(
    statements: Sequence[Mapping[str, Any]], signers: Sequence[Signer]
) -> list[BatchMember]:
    """Sign one ``record.batch`` statement over ``statements`` (each a
    :func:`record_statement` of a new record, all of one vault and one ``at``);
    return each record's :class:`BatchMember`, in order."""
    if not statements or len(statements) > MAX_BATCH:
        raise UsageError(_t("a batch statement covers 1 to {n} records", n=MAX_BATCH))
    vault_id, at = statements[0]["vault"], statements[0]["at"]
    if any(s["vault"] != vault_id or s["at"] != at or s["version"] != 1 for s in statements):
        raise UsageError(_t("a batch statement covers first versions of one vault and time"))
    return _sign_leaves(
        str(vault_id), str(at), [record_statement_bytes(s) for s in statements], signers
    )


def sign_first_versions(
    vault_id: str, at: str, items: Sequence[LeafItem], signers: Sequence[Signer]
) -> list[BatchMember]:
    """:func:`sign_batch` of the first versions ``items`` of ``vault_id`` written
    at ``at``, each statement built as its bytes (:func:`record_statement_leaf`)."""
    if not items or len(items) > MAX_BATCH:
        raise UsageError(_t("a batch statement covers 1 to {n} records", n=MAX_BATCH))
    if any(item[1] != 1 for item in items):
        raise UsageError(_t("a batch statement covers first versions of one vault and time"))
    leaves = [
        record_statement_leaf(
            vault_id=vault_id,
            at=at,
            record=record,
            version=version,
            type_name=type_name,
            consent=consent,
            metadata=metadata,
            fields=fields,
            keyblob=keyblob,
        )
        for record, version, type_name, consent, metadata, fields, keyblob in items
    ]
    return _sign_leaves(vault_id, at, leaves, signers)


def _sign_leaves(
    vault_id: str, at: str, statements: Sequence[bytes], signers: Sequence[Signer]
) -> list[BatchMember]:
    leaves = [leaf_hash(s) for s in statements]
    root, proofs = batch_proofs(leaves)
    envelope = sign(batch_statement(vault_id=vault_id, at=at, size=len(leaves), root=root), signers)
    return [BatchMember(envelope, i, tuple(p)) for i, p in enumerate(proofs)]


@functools.lru_cache(maxsize=4096)
def _verify_cached(public_key: bytes, message: bytes, signature: bytes) -> bool:
    # A batch statement is checked once per key, not once per record of the batch
    # (a pure function of its arguments: caching a result changes nothing else).
    return _verify(public_key, message, signature)


def _batch_signers(envelope: Envelope, state: TrustState, seq: int) -> set[str]:
    """Names whose key at position ``seq`` signed ``envelope`` (current or retired)."""
    message = pae(PAYLOAD_TYPE, envelope.payload)
    found: set[str] = set()
    for name, sig in envelope.signatures:
        user = state.users.get(name)
        if (
            user is not None
            and user.key_from <= seq
            and _verify_cached(user.sign_key, message, sig)
        ):
            found.add(name)
            continue
        for key_hex, start, end in state.retired_keys.get(name, ()):
            if start <= seq < end and _verify_cached(bytes.fromhex(key_hex), message, sig):
                found.add(name)
    return found


def verify_member(
    member: BatchMember,
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
    """:func:`verify_record` for a record written in a batch: the ``record.version``
    payload rebuilt from the stored rows must be leaf ``member.index`` of the root
    the batch statement signs, and the batch statement signed by someone active as
    staff or officer at ``written_at``. A batch carries first versions only: a
    member that is not the record's first statement is refused (a later version
    needs an officer's own statement). Raises :class:`IntegrityError`."""
    obj = member.batch.statement()
    _keys(obj, {"v", "kind", "vault", "at", "size", "root"})
    if obj["v"] != 1 or obj["kind"] != BATCH_KIND or obj["vault"] != state.anchor.vault_id:
        raise _bad(_t("not a batch statement of this vault"))
    size, root, at = obj["size"], obj["root"], obj["at"]
    if type(size) is not int or not 1 <= size <= MAX_BATCH or not member.index < size:
        raise _bad(_t("a batch statement's size is out of range"))
    if not isinstance(root, str) or not _HEX_KEY.fullmatch(root):
        raise _bad(_t("a batch statement's root is not a SHA-256 hash"))
    if not isinstance(at, str) or not _TIME.fullmatch(at):
        raise _bad(_t("a batch statement's time is malformed"))
    if not (version == 1 if first is None else first) or version != 1:
        raise IntegrityError(
            _t(
                ALTERED,
                problem=_t(
                    "record {record} version {version} is logged with a batch statement, which "
                    "only carries first versions",
                    record=record,
                    version=version,
                ),
            )
        )
    signers = _batch_signers(member.batch, state, written_at)
    writers = sorted(
        s for s in signers if any(state.was_active(s, r, written_at) for r in ("staff", "officer"))
    )
    if not writers:
        raise _not_entitled(record, version)
    expected = record_statement(
        vault_id=state.anchor.vault_id,
        at=at,
        record=record,
        version=version,
        type_name=type_name,
        consent=consent,
        metadata=metadata,
        fields=fields,
        keyblob=keyblob,
    )
    leaf = leaf_hash(record_statement_bytes(expected))
    if not verify_inclusion(leaf, member.index, size, member.proof, bytes.fromhex(root)):
        raise IntegrityError(
            _t(
                ALTERED,
                problem=_t(
                    "record {record} version {version} differs from what its writer signed "
                    "(it is not in its batch statement)",
                    record=record,
                    version=version,
                ),
            )
        )
    return RecordVersion(
        record,
        version,
        type_name,
        str(expected["consent"]),
        str(expected["metadata"]),
        {n: (int(v[0]), str(v[1])) for n, v in expected["fields"].items()},
        str(expected["keyblob"]),
        writers[0],
    )
