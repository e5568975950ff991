"""The vault's anchor and the trust state that verified statements build.

Separate from the envelope (``_statement_envelope``) and from record
statements, which are checked against this state but never change it; the
rules it enforces are listed in ``_statements``' docstring and docs/trust.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import rfc8785

from childvault._i18n import _t
from childvault.keys._errors import IntegrityError, UsageError
from childvault.vault import _settings
from childvault.vault._statement_envelope import (
    _HEX_ID,
    _HEX_KEY,
    _NAME,
    _TIME,
    KINDS,
    PAYLOAD_TYPE,
    Envelope,
    _bad,
    _generation,
    _key,
    _keys,
    _name,
    _roles,
    _verify,
    entrusted_member,
    pae,
)

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
