"""VaultProvider: field DEKs wrapped by HashiCorp Vault or OpenBao (DESIGN section 3).

One Transit key (``aes256-gcm96``, ``derived=true``, not exportable) wraps every
field DEK. The derivation context names the DEK's place and a random salt that
exists only in Vault, in KV v2 at ``<kv>/records/<record_id>``::

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

hvac is imported here and nowhere else. Every HTTP call goes through
:meth:`_Connection.call`, which maps failures to the childvault errors and
never puts a token, DEK, salt or plaintext into a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any

import hvac
import requests
from hvac.adapters import RawAdapter
from requests.adapters import DEFAULT_POOLSIZE, HTTPAdapter

from childvault.keys._errors import (
    AccessDenied,
    ApprovalInvalid,
    ConfigError,
    DecryptionFailed,
    ProviderUnavailable,
    UsageError,
)
from childvault.keys._identity import Identity, PublicIdentity
from childvault.keys._provider import FieldKey, RecordKeys, ReleasedKeys, Selection, WrappedRecord

__all__ = ["POLICY_NAMES", "VaultProvider", "VaultSettings", "render_policies", "setup"]

#: Items per Transit batch call. OpenBao refuses request bodies with more than
#: 1000 JSON strings by default (``max_request_json_strings``); an encrypt or
#: decrypt item costs 4 strings, so 200 items stay well inside the limit.
_CHUNK = 200
_SALT_LEN = 32
_DEK_LEN = 32
_CTX_LABEL = b"childvault/vault-ctx/1"
_INDEX_LABEL = b"childvault/index/1"
_MAX_SALT_WORKERS = 32

#: Role -> Vault policy name written by :func:`setup`.
POLICY_NAMES: Mapping[str, str] = {
    "staff": "childvault-staff",
    "officer": "childvault-officer",
    "admin": "childvault-admin",
}
_STAFF = "the childvault-staff policy"
_OFFICER = "the childvault-officer policy"
_ADMIN = "the childvault-admin policy"
_STAFF_OR_OFFICER = "the childvault-staff or childvault-officer policy"
_OFFICER_OR_ADMIN = "the childvault-officer or childvault-admin policy"
_ANY_ROLE = "one of the childvault-staff, childvault-officer or childvault-admin policies"
_ROOT = "a root or bootstrap token (setup is beyond the childvault-admin policy on purpose)"

_MOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RECORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TTL_RE = re.compile(r"^[1-9][0-9]*[smh]?$")
# Things that look like Vault tokens or long base64 runs (ciphertexts, salts,
# keys): removed from any server text we keep for the audit-log detail.
_SCRUB_RE = re.compile(r"\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9._-]{8,}|[A-Za-z0-9+/=_-]{24,}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _lp(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: unambiguous whatever the parts contain."""
    out = bytearray()
    for part in parts:
        if len(part) > 0xFFFF:
            raise UsageError("a record id or field name is too long")
        out += len(part).to_bytes(2, "big") + part
    return bytes(out)


def _context(record_id: str, field_name: str, field_version: int, salt: bytes) -> str:
    return _b64(
        _lp(
            _CTX_LABEL,
            record_id.encode("utf-8"),
            field_name.encode("utf-8"),
            str(field_version).encode("ascii"),
            salt,
        )
    )


def _ttl(value: int | str) -> str:
    """Normalise a TTL (seconds, or Vault duration ``30s``/``15m``/``1h``)."""
    text = str(value)
    if isinstance(value, bool) or not _TTL_RE.fullmatch(text):
        raise ConfigError(
            f"invalid TTL {value!r}: use seconds or a duration like '90s', '15m', '1h'"
        )
    return text


def _scrub(errors: Any) -> str | None:
    if not isinstance(errors, list) or not errors:
        return None
    text = "; ".join(str(e).strip() for e in errors)[:500]
    return _SCRUB_RE.sub("[redacted]", text)


def _check_record_id(record_id: str) -> str:
    # Record ids become URL path segments of the salt document: refuse
    # anything that could escape ``records/`` or change the route.
    if not isinstance(record_id, str) or not _RECORD_RE.fullmatch(record_id):
        raise UsageError(f"record id {record_id!r} is not usable as a Vault path segment")
    return record_id


# -- settings ---------------------------------------------------------------


@dataclass(frozen=True)
class VaultSettings:
    """Where the Vault/OpenBao server is and which mounts and keys childvault uses.

    Holds no secret, ever: it is stored in the vault configuration. The token
    comes from ``VAULT_TOKEN`` (or the caller), the AppRole secret id from a
    file or the environment.
    """

    #: Server address, e.g. ``https://vault.example.org:8200``.
    addr: str
    #: Path of the Transit secrets engine.
    transit_mount: str = "childvault-transit"
    #: Path of the KV version 2 secrets engine holding the record salts.
    kv_mount: str = "childvault-kv"
    #: Name of the derived Transit key that wraps field DEKs.
    key_name: str = "childvault-dek"
    #: Vault Enterprise / OpenBao namespace, or None for the root namespace.
    namespace: str | None = None
    #: PEM file of the CA that signed the server certificate (``VAULT_CACERT``).
    cacert: str | None = None
    #: Seconds to wait for the server on each request.
    timeout: float = 30.0
    #: Path of the AppRole auth method, for ``approle=`` logins.
    approle_mount: str = "approle"
    #: Version of the blind-index HMAC key that is used, pinned at setup so a
    #: rotation of that key never changes existing index values.
    index_key_version: int = 1
    #: Default lifetime of a response-wrapped grant (the officer's decrypt).
    wrap_ttl: str = "1h"
    #: Upper bound written into the officer policy (``max_wrapping_ttl``).
    max_wrapping_ttl: str = "24h"
    #: Salt documents written (or read) at the same time when wrapping a batch
    #: of records. KV v2 has no batch API, so each record costs one round trip;
    #: this many are kept in flight (1 = one after the other).
    salt_workers: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.addr, str) or not re.fullmatch(r"https?://[^\s/]+/?", self.addr):
            raise ConfigError(
                f"invalid Vault address {self.addr!r}: use http(s)://host:port (VAULT_ADDR)"
            )
        object.__setattr__(self, "addr", self.addr.rstrip("/"))
        for label, mount in (("transit_mount", self.transit_mount), ("kv_mount", self.kv_mount)):
            if not isinstance(mount, str) or not _MOUNT_RE.fullmatch(mount):
                raise ConfigError(f"invalid Vault mount path {label}={mount!r}")
        for label, name in (("key_name", self.key_name), ("approle_mount", self.approle_mount)):
            if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                raise ConfigError(f"invalid Vault name {label}={name!r}")
        if self.namespace is not None and not (
            isinstance(self.namespace, str) and _MOUNT_RE.fullmatch(self.namespace.strip("/"))
        ):
            raise ConfigError(f"invalid Vault namespace {self.namespace!r}")
        if self.cacert is not None and not isinstance(self.cacert, str):
            raise ConfigError("cacert must be a file path")
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not self.timeout > 0
        ):
            raise ConfigError(f"invalid Vault timeout {self.timeout!r}: use a positive number")
        if (
            isinstance(self.index_key_version, bool)
            or not isinstance(self.index_key_version, int)
            or self.index_key_version < 1
        ):
            raise ConfigError(f"invalid index_key_version {self.index_key_version!r}")
        if (
            isinstance(self.salt_workers, bool)
            or not isinstance(self.salt_workers, int)
            or not 1 <= self.salt_workers <= _MAX_SALT_WORKERS
        ):
            raise ConfigError(
                f"invalid salt_workers {self.salt_workers!r}: use 1 to {_MAX_SALT_WORKERS}"
            )
        object.__setattr__(self, "wrap_ttl", _ttl(self.wrap_ttl))
        object.__setattr__(self, "max_wrapping_ttl", _ttl(self.max_wrapping_ttl))

    @property
    def index_key_name(self) -> str:
        """Name of the (non-derived) Transit key used for blind-index HMACs."""
        return f"{self.key_name}-index"

    @classmethod
    def from_env(cls, **overrides: Any) -> VaultSettings:
        """Settings from ``VAULT_ADDR``, ``VAULT_NAMESPACE`` and ``VAULT_CACERT``.

        Keyword arguments override the environment (and set the other fields).
        """
        values: dict[str, Any] = {}
        for env, name in (
            ("VAULT_ADDR", "addr"),
            ("VAULT_NAMESPACE", "namespace"),
            ("VAULT_CACERT", "cacert"),
        ):
            if os.environ.get(env):
                values[name] = os.environ[env]
        values.update(overrides)
        if not values.get("addr"):
            raise ConfigError(
                "no Vault server address: set VAULT_ADDR (e.g. https://vault.example.org:8200)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown Vault settings: {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        """The settings as a JSON object (for the vault configuration; no secrets)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> VaultSettings:
        """Inverse of :meth:`to_json`; also accepts an already parsed mapping."""
        try:
            doc = json.loads(text) if isinstance(text, str | bytes) else dict(text)
        except ValueError as exc:
            raise ConfigError("the stored Vault settings are not valid JSON") from exc
        if not isinstance(doc, dict):
            raise ConfigError("the stored Vault settings must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"unknown Vault settings in the configuration: {', '.join(unknown)}")
        if "addr" not in doc:
            raise ConfigError("the stored Vault settings have no server address")
        return cls(**doc)


# -- HTTP ------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    data: dict[str, Any]


class _Connection:
    """One hvac client on one reused ``requests.Session``, with error mapping."""

    def __init__(
        self,
        settings: VaultSettings,
        *,
        token: str | None,
        approle: tuple[str, str] | None,
    ) -> None:
        self.settings = settings
        self.session = requests.Session()
        # Shared by the salt workers (VaultProvider._salts_for) rather than one
        # session each, so every request still goes through this one session.
        # Concurrent use is safe here: each request carries its own headers
        # (the token too; session.headers is never changed after this), Vault
        # sets no cookies (and the cookie jar is locked anyway), and connections
        # come from urllib3's thread-safe pool, sized for every worker so that
        # connections are reused rather than discarded ("connection pool is full").
        pool = max(DEFAULT_POOLSIZE, settings.salt_workers)
        for scheme in ("https://", "http://"):
            self.session.mount(scheme, HTTPAdapter(pool_maxsize=pool))
        # The token is sent per request (not stored on the adapter) so that
        # unauthenticated calls (health, login) never carry it.
        self.client: Any = hvac.Client(
            url=settings.addr,
            token="",
            verify=settings.cacert or True,
            timeout=settings.timeout,
            namespace=settings.namespace,
            session=self.session,
            adapter=RawAdapter,
        )
        self._token = token or None
        self._approle = approle
        # Serialises AppRole logins: workers whose token expired together log
        # in once, not once each.
        self._token_lock = threading.Lock()

    @property
    def addr(self) -> str:
        return self.settings.addr

    def close(self) -> None:
        self.session.close()

    # -- login -------------------------------------------------------------

    def _login(self) -> str:
        assert self._approle is not None
        role_id, secret_id = self._approle
        path = f"auth/{self.settings.approle_mount}/login"
        resp = self._send("POST", path, {"role_id": role_id, "secret_id": secret_id}, None, None)
        if resp.status_code in (400, 401, 403):
            raise ProviderUnavailable(
                f"AppRole login at {self.addr} ({path}) failed: the role id or secret id is "
                "wrong, expired or used up; get a new secret id and log in again",
                detail=_scrub(self._errors(resp)),
            )
        data = self._check(resp, "POST", path, ok=(200,), need=None)
        auth = data.get("auth")
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderUnavailable(f"AppRole login at {self.addr} ({path}) returned no token")
        self._token = token
        return token

    def _ensure_token(self) -> str:
        with self._token_lock:
            if self._token:
                return self._token
            if self._approle is not None:
                return self._login()
        raise ProviderUnavailable(
            f"no Vault token for {self.addr}: set VAULT_TOKEN (log in with `bao login`) "
            "or configure an AppRole login"
        )

    def _forget_token(self, token: str | None) -> None:
        # Only the token that was refused: another worker may have logged in anew.
        with self._token_lock:
            if self._token == token:
                self._token = None

    def token_valid(self) -> bool:
        """Whether the current token is accepted by the server (lookup-self)."""
        token = self._ensure_token()
        resp = self._send("GET", "auth/token/lookup-self", None, None, token)
        if resp.status_code == 200:
            return True
        if resp.status_code in (401, 403):
            return False
        self._check(resp, "GET", "auth/token/lookup-self", ok=(200,), need=None)
        return True

    # -- requests ------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        wrap_ttl: str | None,
        token: str | None,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        headers = {"X-Vault-Token": token} if token else {}
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        if params:
            kwargs["params"] = dict(params)
        if wrap_ttl:
            kwargs["wrap_ttl"] = wrap_ttl
        where = f"{method} {path}"
        try:
            resp: requests.Response = self.client.adapter.request(
                method, f"/v1/{path}", headers=headers, raise_exception=False, **kwargs
            )
        except requests.exceptions.SSLError as exc:
            raise ProviderUnavailable(
                f"TLS connection to the Vault server at {self.addr} failed ({where}): "
                "check that VAULT_CACERT names the CA that signed the server certificate "
                "and that VAULT_ADDR uses the right host name"
            ) from exc
        except requests.exceptions.Timeout as exc:
            raise ProviderUnavailable(
                f"the Vault server at {self.addr} did not answer within "
                f"{self.settings.timeout:g} s ({where}): is it running and reachable? "
                "check VAULT_ADDR and the network"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise ProviderUnavailable(
                f"cannot reach the Vault server at {self.addr} ({where}): "
                "is the server running? check VAULT_ADDR"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise ProviderUnavailable(
                f"request to the Vault server at {self.addr} failed ({where}): "
                "check VAULT_ADDR and VAULT_CACERT"
            ) from exc
        return resp

    @staticmethod
    def _errors(resp: requests.Response) -> Any:
        try:
            doc = resp.json()
        except ValueError:
            return None
        return doc.get("errors") if isinstance(doc, dict) else None

    def _check(
        self,
        resp: requests.Response,
        method: str,
        path: str,
        *,
        ok: Collection[int],
        need: tuple[str, str] | None,
    ) -> dict[str, Any]:
        status = resp.status_code
        where = f"{method} {path}"
        if status in ok:
            if status == 204 or not resp.content:
                return {}
            try:
                doc = resp.json()
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                raise ProviderUnavailable(
                    f"unexpected answer from the Vault server at {self.addr} ({where}): "
                    "is VAULT_ADDR really a Vault/OpenBao server?"
                )
            return doc
        errors = self._errors(resp)
        detail = _scrub(errors)
        if status == 503:
            if "sealed" in str(errors).lower():
                raise ProviderUnavailable(
                    f"the Vault server at {self.addr} is sealed ({where}): unseal it "
                    "(`bao operator unseal`) and try again",
                    detail=detail,
                )
            raise ProviderUnavailable(
                f"the Vault server at {self.addr} is unavailable ({where}): it may be a "
                "standby without an active node, or in maintenance; try again later",
                detail=detail,
            )
        if status == 403:
            capability, who = need or ("access", "a childvault policy")
            raise AccessDenied(
                f"this token lacks {capability} on {path}: it needs {who} "
                "(run `childvault doctor` to see what the token may do)",
                detail=detail,
            )
        if status == 401:
            raise ProviderUnavailable(
                f"the Vault server at {self.addr} refused the token ({where}): "
                "log in again / renew VAULT_TOKEN",
                detail=detail,
            )
        if status == 429:
            raise ProviderUnavailable(
                f"the Vault server at {self.addr} is rate-limiting requests ({where}): "
                "try again later",
                detail=detail,
            )
        if (
            status == 404
            and isinstance(errors, list)
            and any("no handler for route" in str(e) for e in errors)
        ):
            raise ConfigError(
                f"the Vault server at {self.addr} has nothing mounted at {path}: "
                "run `childvault vault setup` (or check the mount names in the settings)",
                detail=detail,
            )
        raise ProviderUnavailable(
            f"the Vault server at {self.addr} refused {where} (HTTP {status}); "
            "run `childvault doctor` for details",
            detail=detail,
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        wrap_ttl: str | None = None,
        params: Mapping[str, str] | None = None,
        ok: Collection[int] = (200, 204),
        need: tuple[str, str] | None = None,
        auth: bool = True,
    ) -> _Reply:
        """Send one request; return the JSON reply for a status in ``ok``, else raise.

        ``need`` is ``(capability, policy)`` for the permission-denied message.
        A 403 is first checked against the token itself: an expired or revoked
        token is a login problem (ProviderUnavailable), not a policy one.
        """
        for attempt in (0, 1):
            token = self._ensure_token() if auth else None
            resp = self._send(method, path, body, wrap_ttl, token, params)
            if (
                resp.status_code == 403
                and auth
                and resp.status_code not in ok
                and not self.token_valid()
            ):
                if self._approle is not None and attempt == 0:
                    # The AppRole token expired: log in once more and retry.
                    # A 403 means the request was not executed, so a retry
                    # cannot apply it twice.
                    self._forget_token(token)
                    continue
                raise ProviderUnavailable(
                    f"the Vault server at {self.addr} refused the token ({method} {path}): "
                    "it is invalid, revoked or expired; log in again / renew VAULT_TOKEN"
                )
            return _Reply(resp.status_code, self._check(resp, method, path, ok=ok, need=need))
        raise AssertionError("unreachable")  # pragma: no cover


# -- helpers on server documents ------------------------------------------------


@dataclass(frozen=True)
class _Salts:
    record: bytes
    fields: dict[str, bytes]
    kv_version: int

    def for_field(self, field_name: str) -> bytes:
        return self.fields.get(field_name, self.record)

    def to_doc(self) -> dict[str, Any]:
        return {
            "salt": _b64(self.record),
            "fields": {name: _b64(salt) for name, salt in self.fields.items()},
        }


def _parse_salts(reply: dict[str, Any], record_id: str) -> _Salts:
    try:
        data = reply["data"]["data"]
        version = int(reply["data"]["metadata"]["version"])
        record = _unb64(data["salt"])
        per_field = {str(k): _unb64(v) for k, v in dict(data.get("fields") or {}).items()}
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise DecryptionFailed(f"salt document of record {record_id} is malformed") from exc
    if len(record) != _SALT_LEN or any(len(s) != _SALT_LEN for s in per_field.values()):
        raise DecryptionFailed(f"salt document of record {record_id} has a wrong salt length")
    return _Salts(record, per_field, version)


def _parse_blob(record: WrappedRecord) -> dict[str, tuple[int, str]]:
    """Parse a blob and check it belongs to ``record`` (id and version)."""
    try:
        doc = json.loads(record.blob)
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ValueError("unknown blob format")
        bound = doc["rec"] == record.record_id and doc["ver"] == record.version
        out: dict[str, tuple[int, str]] = {}
        for name, pair in dict(doc["f"]).items():
            version, ciphertext = pair
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError("bad field version")
            if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:v"):
                raise ValueError("bad ciphertext")
            out[str(name)] = (version, ciphertext)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DecryptionFailed("wrapped record keys are malformed") from exc
    if not bound:
        # A blob moved from another record or version.
        raise DecryptionFailed("wrapped record keys bound to another record or version")
    return out


def _encode_blob(record_id: str, version: int, entries: Mapping[str, tuple[int, str]]) -> bytes:
    doc = {
        "v": 1,
        "rec": record_id,
        "ver": version,
        "f": {name: [fv, ct] for name, (fv, ct) in entries.items()},
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _ciphertext_version(ciphertext: str) -> int:
    try:
        prefix, version, _rest = ciphertext.split(":", 2)
        if prefix != "vault" or not version.startswith("v"):
            raise ValueError("not a Transit ciphertext")
        return int(version[1:])
    except ValueError as exc:
        raise DecryptionFailed("wrapped key has an unknown format") from exc


def _batch_results(reply: _Reply, expected: int, what: str) -> list[dict[str, Any]]:
    data = reply.data.get("data")
    results = data.get("batch_results") if isinstance(data, dict) else None
    if not isinstance(results, list) or len(results) != expected:
        raise ProviderUnavailable(f"the Vault server gave an incomplete answer to {what}")
    if not all(isinstance(r, dict) for r in results):
        raise ProviderUnavailable(f"the Vault server gave a malformed answer to {what}")
    return results


# -- the provider ---------------------------------------------------------------


class VaultProvider:
    """Key provider backed by a Vault/OpenBao server (Transit + KV v2).

    What an instance may do is decided by the token's policies, not by this
    class: with ``childvault-staff`` it wraps and redeems, with
    ``childvault-officer`` it also releases, replaces and shreds, with
    ``childvault-admin`` it rotates, rekeys and shreds.
    """

    kind = "vault"

    def __init__(
        self,
        settings: VaultSettings,
        vault_id: str,
        *,
        token: str | None = None,
        approle: tuple[str, str] | None = None,
        wrap_ttl: int | str | None = None,
    ) -> None:
        """Connect lazily: no request is made until the first operation.

        ``token`` defaults to ``VAULT_TOKEN``; ``approle=(role_id, secret_id)``
        logs in with AppRole instead (read the secret id from a file or the
        environment, never from the command line). ``wrap_ttl`` is the
        lifetime of released grants (default ``settings.wrap_ttl``).
        """
        if approle is not None and (
            len(approle) != 2 or not all(isinstance(p, str) and p for p in approle)
        ):
            raise ConfigError("AppRole login needs a role id and a secret id")
        if token is None and approle is None:
            token = os.environ.get("VAULT_TOKEN") or None
        self._settings = settings
        self._vault_id = vault_id
        self._wrap_ttl = _ttl(wrap_ttl) if wrap_ttl is not None else settings.wrap_ttl
        self._conn = _Connection(settings, token=token, approle=approle)
        s = settings
        self._decrypt_path = f"{s.transit_mount}/decrypt/{s.key_name}"

    def __repr__(self) -> str:
        return f"VaultProvider(addr={self._settings.addr!r}, vault_id={self._vault_id!r})"

    @property
    def settings(self) -> VaultSettings:
        """The settings this provider was built with."""
        return self._settings

    @property
    def session(self) -> requests.Session:
        """The one HTTP session every request goes through (for instrumentation)."""
        return self._conn.session

    def close(self) -> None:
        """Close the HTTP session."""
        self._conn.close()

    def __enter__(self) -> VaultProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths --------------------------------------------------------------

    def _transit(self, op: str, key: str | None = None) -> str:
        return f"{self._settings.transit_mount}/{op}/{key or self._settings.key_name}"

    def _kv(self, kind: str, record_id: str) -> str:
        return f"{self._settings.kv_mount}/{kind}/records/{_check_record_id(record_id)}"

    # -- salts ----------------------------------------------------------------

    def _read_salts(self, record_id: str, need_policy: str) -> _Salts | None:
        path = self._kv("data", record_id)
        reply = self._conn.call("GET", path, ok=(200, 404), need=("read", need_policy))
        if reply.status == 404:
            # Never created, or shredded (metadata deleted), or its current
            # version destroyed: in every case the key material is gone.
            return None
        return _parse_salts(reply.data, record_id)

    def _require_salts(self, record_id: str, need_policy: str) -> _Salts:
        salts = self._read_salts(record_id, need_policy)
        if salts is None:
            raise DecryptionFailed(
                f"the key material of record {record_id} does not exist in Vault "
                "(shredded, or never written)"
            )
        return salts

    def _create_salts(self, record_id: str, field_names: Sequence[str]) -> _Salts:
        # Every field of a new record gets its own salt, so a later correction
        # of any of them can destroy the old salt (and with it the old DEK in
        # every backup) without touching the others.
        salts = _Salts(
            secrets.token_bytes(_SALT_LEN),
            {name: secrets.token_bytes(_SALT_LEN) for name in field_names},
            1,
        )
        path = self._kv("data", record_id)
        try:
            reply = self._conn.call(
                "POST",
                path,
                body={"options": {"cas": 0}, "data": salts.to_doc()},
                ok=(200, 400),
                need=("create", _STAFF_OR_OFFICER),
            )
        except AccessDenied:
            # For a token with create but not update, writing an existing path
            # is a 403 rather than a check-and-set conflict. Either way the
            # salt may already exist from an earlier, interrupted call.
            existing = self._read_salts(record_id, _STAFF)
            if existing is None:
                raise
            return existing
        if reply.status == 200:
            return salts
        # 400: check-and-set conflict, i.e. written by an earlier attempt.
        existing = self._read_salts(record_id, _STAFF)
        if existing is None:
            raise ProviderUnavailable(
                f"the Vault server at {self._settings.addr} refused to create the salt "
                f"at {path}; run `childvault doctor`",
                detail=_scrub(reply.data.get("errors")),
            )
        return existing

    def _salt_for(self, record_id: str, new: bool, field_names: Sequence[str]) -> _Salts:
        if new:
            return self._create_salts(record_id, field_names)
        return self._require_salts(record_id, _STAFF)

    def _salts_for(self, wanted: Mapping[str, tuple[bool, Sequence[str]]]) -> dict[str, _Salts]:
        """Create (new records) or read each record's salts, ``salt_workers`` at a time.

        KV v2 has no batch write, so this is one round trip per record; keeping
        several in flight hides most of their latency. After the first failure
        no further request is started, the ones in flight are waited for, and
        the first error in record order is raised. A salt already written is
        reused when the call is repeated (``_create_salts``).
        """
        workers = min(self._settings.salt_workers, len(wanted))
        if workers <= 1:
            return {rid: self._salt_for(rid, new, names) for rid, (new, names) in wanted.items()}
        # The workers get record ids and field names only, never a DEK.
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="childvault-salts")
        try:
            futures = {
                rid: pool.submit(self._salt_for, rid, new, names)
                for rid, (new, names) in wanted.items()
            }
            wait(futures.values(), return_when=FIRST_EXCEPTION)
        finally:
            # Also on an interrupt: drop what has not started, wait for what
            # has, so no request outlives this call.
            pool.shutdown(wait=True, cancel_futures=True)
        for future in futures.values():
            error = None if future.cancelled() else future.exception()
            if error is not None:
                raise error
        # Nothing failed, so nothing was cancelled.
        return {rid: future.result() for rid, future in futures.items()}

    # -- Transit batches -------------------------------------------------------

    def _encrypt(self, items: Sequence[tuple[bytes, str]], need_policy: str) -> list[str]:
        """Wrap ``(dek, context)`` pairs in as few Transit calls as the limit allows."""
        out: list[str] = []
        path = self._transit("encrypt")
        for chunk in _chunks(items):
            batch = [{"plaintext": _b64(dek), "context": ctx} for dek, ctx in chunk]
            reply = self._conn.call(
                "POST", path, body={"batch_input": batch}, ok=(200,), need=("update", need_policy)
            )
            for result in _batch_results(reply, len(chunk), f"POST {path}"):
                ciphertext = result.get("ciphertext")
                if result.get("error") or not isinstance(ciphertext, str):
                    raise ProviderUnavailable(
                        f"the Vault server refused to wrap a key (POST {path})",
                        detail=_scrub([result.get("error")]),
                    )
                out.append(ciphertext)
        return out

    # -- KeyProvider -------------------------------------------------------------

    def wrap(self, records: Sequence[RecordKeys]) -> list[bytes]:
        """Wrap each record's field keys with Transit; return one blob per record.

        New records get their salt document created once (``cas=0``); an
        existing document (from an interrupted earlier call) is read and used,
        so a failed call can simply be repeated. The salt documents are written
        ``settings.salt_workers`` at a time; the blobs are in the order of ``records``.
        """
        # Everything is checked before the first request: a bad input writes nothing.
        wanted: dict[str, tuple[bool, list[str]]] = {}
        for rec in records:
            _check_record_id(rec.record_id)
            for fk in rec.fields.values():
                if len(fk.key) != _DEK_LEN or fk.version < 1:
                    raise UsageError("a field key must be 32 bytes with a version >= 1")
            # The first occurrence of a record id decides, as it always did.
            wanted.setdefault(rec.record_id, (rec.new, list(rec.fields)))
        salts = self._salts_for(wanted)
        items: list[tuple[bytes, str]] = []
        for rec in records:
            s = salts[rec.record_id]
            for name, fk in rec.fields.items():
                items.append((fk.key, _context(rec.record_id, name, fk.version, s.for_field(name))))
        ciphertexts = iter(self._encrypt(items, _STAFF))
        blobs = []
        for rec in records:
            entries = {name: (fk.version, next(ciphertexts)) for name, fk in rec.fields.items()}
            blobs.append(_encode_blob(rec.record_id, rec.version, entries))
        return blobs

    def release(
        self,
        selections: Sequence[Selection],
        requester: PublicIdentity,
        grant_id: str,
        *,
        wrap_ttl: int | str | None = None,
    ) -> bytes:
        """Officer: a response-wrapped batch decrypt of exactly the selected fields.

        The officer's client receives only wrapping tokens (the policy demands
        it with ``min_wrapping_ttl``), never a DEK. ``wrap_ttl`` is how long
        the requester has to redeem (default: the provider's ``wrap_ttl``).
        """
        ttl = _ttl(wrap_ttl) if wrap_ttl is not None else self._wrap_ttl
        wanted: list[tuple[str, str, int, str]] = []
        seen: set[tuple[str, str]] = set()
        for sel in selections:
            entries = _parse_blob(sel.record)
            for name in sel.fields:
                if name not in entries:
                    continue  # an optional field this record does not have
                if (sel.record.record_id, name) in seen:
                    raise UsageError(f"field {name!r} of a record is selected twice")
                seen.add((sel.record.record_id, name))
                fv, ct = entries[name]
                wanted.append((sel.record.record_id, name, fv, ct))
        salts: dict[str, _Salts] = {}
        for record_id, _name, _fv, _ct in wanted:
            if record_id not in salts:
                salts[record_id] = self._require_salts(record_id, _OFFICER)
        wraps: list[dict[str, Any]] = []
        for chunk in _chunks(wanted):
            batch = [
                {"ciphertext": ct, "context": _context(rid, name, fv, salts[rid].for_field(name))}
                for rid, name, fv, ct in chunk
            ]
            try:
                reply = self._conn.call(
                    "POST",
                    self._decrypt_path,
                    body={"batch_input": batch},
                    wrap_ttl=ttl,
                    ok=(200,),
                    need=("update", _OFFICER),
                )
            except AccessDenied as exc:
                # The policy also refuses a wrap TTL above its max_wrapping_ttl,
                # with the same bare "permission denied": name both causes.
                raise AccessDenied(
                    f"this token may not decrypt on {self._decrypt_path} with a grant "
                    f"lifetime of {ttl}: it needs the childvault-officer policy, and the "
                    "lifetime must not exceed the policy's max_wrapping_ttl "
                    f"({self._settings.max_wrapping_ttl} in these settings)",
                    detail=exc.detail,
                ) from None
            info = reply.data.get("wrap_info")
            if reply.data.get("data") or not isinstance(info, dict):
                # The server answered in clear: the wrapping header was dropped
                # on the way (a proxy?). Refuse rather than hold DEKs here.
                raise ConfigError(
                    f"the Vault server at {self._settings.addr} did not response-wrap the "
                    f"decrypt on {self._decrypt_path}; check proxies between here and Vault"
                )
            token = info.get("token")
            if not isinstance(token, str) or not token:
                raise ProviderUnavailable("the Vault server returned no wrapping token")
            wraps.append(
                {"token": token, "items": [[rid, name, fv] for rid, name, fv, _ct in chunk]}
            )
        inner = json.dumps(
            {"v": 1, "vault": self._vault_id, "grant": grant_id, "wraps": wraps},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
        return requester.seal(inner)

    def _creation_path_ok(self, path: Any) -> bool:
        if path == self._decrypt_path:
            return True
        ns = (self._settings.namespace or "").strip("/")
        # Some servers report the path with the namespace in front.
        return bool(ns) and path == f"{ns}/{self._decrypt_path}"

    def redeem(self, material: bytes, requester: Identity, grant_id: str) -> ReleasedKeys:
        """Requester: check and unwrap the grant's wrapping tokens (each works once)."""
        try:
            doc = json.loads(requester.unseal(material))
            if doc["v"] != 1 or doc["vault"] != self._vault_id or doc["grant"] != grant_id:
                raise ApprovalInvalid("grant material bound to another grant or vault")
            wraps: list[tuple[str, list[tuple[str, str, int]]]] = []
            for w in doc["wraps"]:
                token = w["token"]
                if not isinstance(token, str) or not token:
                    raise ValueError("bad wrapping token")
                items = []
                for rid, name, fv in w["items"]:
                    if not (isinstance(rid, str) and isinstance(name, str)):
                        raise ValueError("bad item")
                    if not isinstance(fv, int) or isinstance(fv, bool) or fv < 1:
                        raise ValueError("bad field version")
                    items.append((rid, name, fv))
                wraps.append((token, items))
        except DecryptionFailed as exc:
            raise ApprovalInvalid("grant material is not sealed to this requester") from exc
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ApprovalInvalid("grant material is malformed") from exc
        # Look every token up before unwrapping any: unwrapping consumes a
        # token, so a bad one found late would waste the good ones.
        for token, _items in wraps:
            reply = self._conn.call(
                "POST",
                "sys/wrapping/lookup",
                body={"token": token},
                ok=(200, 400),
                need=("update", _STAFF),
            )
            if reply.status == 400:
                raise ApprovalInvalid("wrapping token is used, expired or unknown")
            data = reply.data.get("data")
            path = data.get("creation_path") if isinstance(data, dict) else None
            if not self._creation_path_ok(path):
                raise ApprovalInvalid(
                    f"wrapping token was created on {path!r}, not {self._decrypt_path!r}"
                )
        released: ReleasedKeys = {}
        for token, items in wraps:
            reply = self._conn.call(
                "POST",
                "sys/wrapping/unwrap",
                body={"token": token},
                ok=(200, 400),
                need=("update", _STAFF),
            )
            data = reply.data.get("data")
            results = data.get("batch_results") if isinstance(data, dict) else None
            if reply.status == 400 and not isinstance(results, list):
                raise ApprovalInvalid("wrapping token is used, expired or unknown")
            if not isinstance(results, list) or len(results) != len(items):
                raise ApprovalInvalid("wrapped answer does not match the grant's items")
            for (rid, name, fv), result in zip(items, results, strict=True):
                error = result.get("error") if isinstance(result, dict) else "malformed"
                if error:
                    # Transit could not unwrap this DEK: a wrong context (blob
                    # moved or edited), a destroyed salt or a retired key version.
                    raise DecryptionFailed(f"Transit could not unwrap a key: {_scrub([error])}")
                try:
                    key = _unb64(result.get("plaintext"))
                except (ValueError, binascii.Error):
                    raise DecryptionFailed("unwrapped key is malformed") from None
                if len(key) != _DEK_LEN:
                    raise DecryptionFailed("unwrapped key has a wrong length")
                per_record = released.setdefault(rid, {})
                if name in per_record:
                    raise ApprovalInvalid("grant material names a field twice")
                per_record[name] = FieldKey(fv, key)
        return released

    def replace(
        self, record: WrappedRecord, new_version: int, changes: Mapping[str, FieldKey]
    ) -> bytes:
        """Officer: new blob for ``new_version``; the changed fields' old salts are destroyed.

        Order: wrap the new DEKs under fresh salts (nothing stored yet), then
        switch the salt document with check-and-set, then destroy every older
        KV version. Old blobs, also in backups, then fail for the changed fields.
        If the destroy step fails the call raises; repeating it is safe.
        """
        entries = _parse_blob(record)
        if new_version <= record.version:
            raise UsageError("the new record version must be greater than the current one")
        for fk in changes.values():
            if len(fk.key) != _DEK_LEN or fk.version < 1:
                raise UsageError("a field key must be 32 bytes with a version >= 1")
        if not changes:
            return _encode_blob(record.record_id, new_version, entries)
        current = self._require_salts(record.record_id, _OFFICER)
        fresh = dict(current.fields)
        for name in changes:
            fresh[name] = secrets.token_bytes(_SALT_LEN)
        new_salts = _Salts(current.record, fresh, current.kv_version + 1)
        items = [
            (fk.key, _context(record.record_id, name, fk.version, fresh[name]))
            for name, fk in changes.items()
        ]
        ciphertexts = self._encrypt(items, _OFFICER)
        path = self._kv("data", record.record_id)
        reply = self._conn.call(
            "POST",
            path,
            body={"options": {"cas": current.kv_version}, "data": new_salts.to_doc()},
            ok=(200, 400),
            need=("update", _OFFICER),
        )
        if reply.status == 400:
            raise ProviderUnavailable(
                f"the salt document at {path} changed while correcting the record "
                "(another correction at the same time?); nothing was changed, try again",
                detail=_scrub(reply.data.get("errors")),
            )
        try:
            written = int(reply.data["data"]["version"])
        except (KeyError, TypeError, ValueError):
            written = current.kv_version + 1
        self._conn.call(
            "POST",
            self._kv("destroy", record.record_id),
            body={"versions": list(range(1, written))},
            need=("update", _OFFICER_OR_ADMIN),
        )
        merged = dict(entries)
        for (name, fk), ciphertext in zip(changes.items(), ciphertexts, strict=True):
            merged[name] = (fk.version, ciphertext)
        return _encode_blob(record.record_id, new_version, merged)

    def shred(self, record_ids: Sequence[str]) -> None:
        """Destroy the salt documents (all versions and metadata). Idempotent."""
        for record_id in record_ids:
            self._conn.call(
                "DELETE",
                self._kv("metadata", record_id),
                need=("delete", _OFFICER_OR_ADMIN),
            )

    # -- rotation (admin) ----------------------------------------------------------

    def key_info(self) -> dict[str, Any]:
        """The Transit key's public description (versions, flags); no key material."""
        path = f"{self._settings.transit_mount}/keys/{self._settings.key_name}"
        reply = self._conn.call("GET", path, need=("read", _ANY_ROLE))
        data = reply.data.get("data")
        if not isinstance(data, dict):
            raise ProviderUnavailable("the Vault server returned no key description")
        return data

    def latest_key_version(self) -> int:
        """The newest version of the Transit key (what new wraps use)."""
        return int(self.key_info()["latest_version"])

    def rotate_key(self) -> int:
        """Admin: add a new Transit key version; return it. Old blobs still open."""
        self._conn.call(
            "POST",
            f"{self._settings.transit_mount}/keys/{self._settings.key_name}/rotate",
            need=("update", _ADMIN),
        )
        return self.latest_key_version()

    @staticmethod
    def blob_key_version(blob: bytes) -> int:
        """The oldest Transit key version any DEK in ``blob`` is wrapped with.

        ``keys rotate`` rekeys the records whose value is below
        :meth:`latest_key_version`, which makes it resumable.
        """
        try:
            doc = json.loads(blob)
            versions = [_ciphertext_version(pair[1]) for pair in dict(doc["f"]).values()]
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise DecryptionFailed("wrapped record keys are malformed") from exc
        return min(versions, default=0)

    def rekey(self, records: Sequence[WrappedRecord]) -> list[bytes]:
        """Admin: rewrap every DEK under the latest key version (no plaintext leaves Vault).

        Rewrapping an already current blob is harmless, so an interrupted
        rotation can be run again from the start.
        """
        parsed = [(rec, _parse_blob(rec)) for rec in records]
        salts: dict[str, _Salts] = {}
        for rec, _entries in parsed:
            if rec.record_id not in salts:
                salts[rec.record_id] = self._require_salts(rec.record_id, _ADMIN)
        items = [
            (ct, _context(rec.record_id, name, fv, salts[rec.record_id].for_field(name)))
            for rec, entries in parsed
            for name, (fv, ct) in entries.items()
        ]
        path = self._transit("rewrap")
        rewrapped: list[str] = []
        for chunk in _chunks(items):
            reply = self._conn.call(
                "POST",
                path,
                body={"batch_input": [{"ciphertext": ct, "context": ctx} for ct, ctx in chunk]},
                ok=(200, 400),
                need=("update", _ADMIN),
            )
            data = reply.data.get("data")
            if reply.status == 400 and not isinstance(data, dict):
                raise ProviderUnavailable(
                    f"the Vault server refused POST {path}; run `childvault doctor`",
                    detail=_scrub(reply.data.get("errors")),
                )
            for result in _batch_results(reply, len(chunk), f"POST {path}"):
                ciphertext = result.get("ciphertext")
                if result.get("error") or not isinstance(ciphertext, str):
                    raise DecryptionFailed(
                        f"Transit could not rewrap a key: {_scrub([result.get('error')])}"
                    )
                rewrapped.append(ciphertext)
        out: list[bytes] = []
        it = iter(rewrapped)
        for rec, entries in parsed:
            new_entries = {name: (fv, next(it)) for name, (fv, _ct) in entries.items()}
            out.append(_encode_blob(rec.record_id, rec.version, new_entries))
        return out

    def finish_rotation(self, *, trim: bool = False) -> int:
        """Admin: retire every older key version; return the version still in use.

        Sets ``min_decryption_version`` (and ``min_encryption_version``) to the
        latest version, so ciphertexts under older versions (un-rekeyed blobs,
        backups) no longer open. With
        ``trim=True`` the older versions are also deleted from Vault for good
        (``keys/<key>/trim``); without it an admin could lower the minimum again.
        Call only after every live record was rekeyed.
        """
        latest = self.latest_key_version()
        base = f"{self._settings.transit_mount}/keys/{self._settings.key_name}"
        # The encryption floor too: nobody can then wrap under a retired
        # version by naming it, and Transit requires it before a trim.
        self._conn.call(
            "POST",
            f"{base}/config",
            body={"min_decryption_version": latest, "min_encryption_version": latest},
            need=("update", _ADMIN),
        )
        if trim:
            self._conn.call(
                "POST",
                f"{base}/trim",
                body={"min_available_version": latest},
                need=("update", _ADMIN),
            )
        return latest

    # -- blind index -------------------------------------------------------------------

    def hmac(self, field: str, values: Sequence[bytes]) -> list[bytes]:
        """Raw HMAC-SHA256 of each value under the pinned version of the index key.

        The input binds the vault id and field name, so equal values in other
        fields or vaults give unrelated MACs. The caller truncates.
        """
        path = f"{self._settings.transit_mount}/hmac/{self._settings.index_key_name}"
        prefix = (_INDEX_LABEL, self._vault_id.encode("utf-8"), field.encode("utf-8"))
        out: list[bytes] = []
        for chunk in _chunks(values):
            batch = [{"input": _b64(_lp(*prefix, bytes(v)))} for v in chunk]
            reply = self._conn.call(
                "POST",
                path,
                body={
                    "batch_input": batch,
                    "algorithm": "sha2-256",
                    "key_version": self._settings.index_key_version,
                },
                ok=(200,),
                need=("update", _ANY_ROLE),
            )
            for result in _batch_results(reply, len(chunk), f"POST {path}"):
                mac = result.get("hmac")
                if result.get("error") or not isinstance(mac, str):
                    raise ProviderUnavailable(
                        f"the Vault server refused to compute an index value (POST {path})",
                        detail=_scrub([result.get("error")]),
                    )
                try:
                    out.append(_unb64(mac.split(":", 2)[2]))
                except (ValueError, IndexError, binascii.Error):
                    raise ProviderUnavailable(
                        "the Vault server returned a malformed HMAC"
                    ) from None
        return out

    # -- doctor ---------------------------------------------------------------------------

    def _probe_paths(self) -> dict[str, str]:
        s = self._settings
        probe = "doctor-probe"
        return {
            "encrypt": f"{s.transit_mount}/encrypt/{s.key_name}",
            "decrypt": f"{s.transit_mount}/decrypt/{s.key_name}",
            "rewrap": f"{s.transit_mount}/rewrap/{s.key_name}",
            "rotate": f"{s.transit_mount}/keys/{s.key_name}/rotate",
            "config": f"{s.transit_mount}/keys/{s.key_name}/config",
            "hmac": f"{s.transit_mount}/hmac/{s.index_key_name}",
            "kv_data": f"{s.kv_mount}/data/records/{probe}",
            "kv_destroy": f"{s.kv_mount}/destroy/records/{probe}",
            "kv_metadata": f"{s.kv_mount}/metadata/records/{probe}",
            "wrapping_lookup": "sys/wrapping/lookup",
            "wrapping_unwrap": "sys/wrapping/unwrap",
        }

    def diagnose(self) -> dict[str, Any]:
        """Health report for ``childvault doctor``. Never raises for a down server.

        Keys: ``addr``, ``namespace``, ``reachable``, ``initialized``,
        ``sealed``, ``version``, ``token`` (valid, policies, ttl), ``mounts``,
        ``keys``, ``capabilities`` (per product path), ``roles`` (which
        childvault roles the token can act as), ``problems`` (human-readable)
        and ``ok``.
        """
        s = self._settings
        report: dict[str, Any] = {
            "provider": "vault",
            "addr": s.addr,
            "namespace": s.namespace,
            "reachable": False,
            "initialized": None,
            "sealed": None,
            "version": None,
            "token": None,
            "mounts": {},
            "keys": {},
            "capabilities": {},
            "roles": [],
            "problems": [],
            "ok": False,
        }
        problems: list[str] = report["problems"]
        try:
            health = self._conn.call(
                "GET", "sys/health", ok=(200, 429, 472, 473, 501, 503), auth=False
            ).data
        except (ProviderUnavailable, ConfigError, AccessDenied) as exc:
            problems.append(str(exc))
            return report
        report["reachable"] = True
        report["initialized"] = health.get("initialized")
        report["sealed"] = health.get("sealed")
        report["version"] = health.get("version")
        if health.get("initialized") is False:
            problems.append(f"the Vault server at {s.addr} is not initialised")
            return report
        if health.get("sealed"):
            problems.append(f"the Vault server at {s.addr} is sealed: unseal it")
            return report
        try:
            look = self._conn.call(
                "GET", "auth/token/lookup-self", need=("read", "the default policy")
            ).data
            tdata = look.get("data") or {}
            report["token"] = {
                "valid": True,
                "policies": sorted(tdata.get("policies") or []),
                "ttl": tdata.get("ttl"),
                "expire_time": tdata.get("expire_time"),
            }
        except (ProviderUnavailable, AccessDenied, ConfigError) as exc:
            report["token"] = {"valid": False}
            problems.append(str(exc))
            return report
        for label, mount in (("transit", s.transit_mount), ("kv", s.kv_mount)):
            entry: dict[str, Any] = {"path": mount, "present": None, "type": None}
            try:
                reply = self._conn.call(
                    "GET", f"sys/internal/ui/mounts/{mount}", ok=(200, 403, 404)
                )
                if reply.status == 200:
                    data = reply.data.get("data") or {}
                    entry["present"] = True
                    entry["type"] = data.get("type")
                    entry["options"] = data.get("options")
                elif reply.status == 404:
                    entry["present"] = False
            except (ProviderUnavailable, AccessDenied, ConfigError) as exc:
                problems.append(str(exc))
            report["mounts"][label] = entry
            if entry["present"] is False:
                problems.append(f"no {label} mount at {mount}/: run `childvault vault setup`")
        for label, name in (("dek", s.key_name), ("index", s.index_key_name)):
            kentry: dict[str, Any] = {"name": name, "present": None}
            try:
                reply = self._conn.call("GET", f"{s.transit_mount}/keys/{name}", ok=(200, 403, 404))
                if reply.status == 200:
                    data = reply.data.get("data") or {}
                    kentry.update(
                        present=True,
                        type=data.get("type"),
                        derived=data.get("derived"),
                        exportable=data.get("exportable"),
                        latest_version=data.get("latest_version"),
                        min_decryption_version=data.get("min_decryption_version"),
                    )
                elif reply.status == 404:
                    kentry["present"] = False
            except (ProviderUnavailable, AccessDenied, ConfigError) as exc:
                problems.append(str(exc))
            report["keys"][label] = kentry
            if kentry["present"] is False:
                problems.append(f"no Transit key {name}: run `childvault vault setup`")
            if (
                label == "dek"
                and kentry.get("present")
                and (kentry.get("derived") is not True or kentry.get("exportable") is not False)
            ):
                problems.append(f"Transit key {name} must be derived and not exportable")
        paths = self._probe_paths()
        try:
            reply = self._conn.call(
                "POST",
                "sys/capabilities-self",
                body={"paths": list(paths.values())},
                need=("update", "the default policy"),
            )
            caps = reply.data.get("data") or reply.data
            report["capabilities"] = {
                label: {"path": path, "capabilities": sorted(caps.get(path) or [])}
                for label, path in paths.items()
            }
        except (ProviderUnavailable, AccessDenied, ConfigError) as exc:
            problems.append(str(exc))
        report["roles"] = _roles(report["capabilities"])
        report["ok"] = not problems
        return report


def _roles(capabilities: Mapping[str, Any]) -> list[str]:
    def has(label: str, cap: str) -> bool:
        entry = capabilities.get(label) or {}
        caps = entry.get("capabilities") or []
        return cap in caps or "root" in caps

    roles = []
    if has("encrypt", "update") and has("kv_data", "create") and has("kv_data", "read"):
        roles.append("staff")
    if has("decrypt", "update") and has("kv_data", "read") and has("kv_destroy", "update"):
        roles.append("officer")
    if has("rotate", "update") and has("rewrap", "update") and has("config", "update"):
        roles.append("admin")
    return roles


# -- setup ------------------------------------------------------------------------------


def render_policies(settings: VaultSettings) -> dict[str, str]:
    """The three policies (name -> HCL text) for these settings, as ``setup`` writes them."""
    out: dict[str, str] = {}
    base = resources.files("childvault.keys").joinpath("policies")
    for role, name in POLICY_NAMES.items():
        text = base.joinpath(f"{role}.hcl").read_text(encoding="utf-8")
        # Plain replacement, not str.format: HCL is full of braces.
        for placeholder, value in (
            ("{transit}", settings.transit_mount),
            ("{kv}", settings.kv_mount),
            ("{key}", settings.key_name),
            ("{max_wrapping_ttl}", settings.max_wrapping_ttl),
        ):
            text = text.replace(placeholder, value)
        out[name] = text
    return out


def _audit_stanza(path: str) -> str:
    return f'audit "file" "childvault" {{\n  options {{\n    file_path = "{path}"\n  }}\n}}'


def _kv_config_when_ready(conn: _Connection, mount: str, root: str) -> dict[str, Any]:
    """Read a KV v2 mount's config, waiting out the upgrade a fresh mount goes through.

    On a server with persistent storage a new KV v2 mount answers 400 ("upgrading
    from non-versioned to versioned data") for a moment; a dev server does not.
    """
    deadline = time.monotonic() + 30.0
    while True:
        reply = conn.call("GET", f"{mount}/config", ok=(200, 400), need=("read", root))
        if reply.status == 200:
            return reply.data
        if time.monotonic() > deadline:
            raise ProviderUnavailable(
                f"the KV mount {mount}/ at {conn.addr} did not become ready within 30 s"
            )
        time.sleep(0.2)


def setup(settings: VaultSettings, token: str, *, audit_file: str | None = None) -> list[str]:
    """Prepare a Vault/OpenBao server for childvault; return what was done, line by line.

    Needs a root or bootstrap token (mounts, policies and audit devices are
    beyond the childvault-admin policy on purpose). Idempotent: a second run
    changes nothing and says so.
    """
    conn = _Connection(settings, token=token, approle=None)
    lines: list[str] = []
    changed = False
    root = _ROOT
    try:
        health = conn.call("GET", "sys/health", ok=(200, 429, 472, 473, 501, 503), auth=False).data
        if health.get("sealed"):
            raise ProviderUnavailable(
                f"the Vault server at {settings.addr} is sealed: unseal it and run setup again"
            )
        if health.get("initialized") is False:
            raise ProviderUnavailable(f"the Vault server at {settings.addr} is not initialised")
        mounts = conn.call("GET", "sys/mounts", need=("read", root)).data
        table: dict[str, Any] = mounts["data"] if isinstance(mounts.get("data"), dict) else mounts
        for mount, engine, options in (
            (settings.transit_mount, "transit", None),
            (settings.kv_mount, "kv", {"version": "2"}),
        ):
            existing = table.get(f"{mount}/")
            label = "Transit" if engine == "transit" else "KV v2"
            if existing is None:
                body: dict[str, Any] = {"type": engine}
                if options:
                    body["options"] = options
                conn.call("POST", f"sys/mounts/{mount}", body=body, need=("update", root))
                lines.append(f"{label} secrets engine: enabled at {mount}/")
                changed = True
            else:
                version = str((existing.get("options") or {}).get("version", "1"))
                if existing.get("type") != engine or (options and version != "2"):
                    raise ConfigError(
                        f"{mount}/ is already mounted as {existing.get('type')} "
                        f"(version {version}), not {label}: choose another mount name"
                    )
                lines.append(f"{label} secrets engine: already enabled at {mount}/")
        # Require check-and-set on every salt write: a salt is never replaced
        # blindly, by childvault or by any other tool.
        kv_config = _kv_config_when_ready(conn, settings.kv_mount, root)
        if (kv_config.get("data") or {}).get("cas_required") is True:
            lines.append(f"{settings.kv_mount}/: check-and-set already required")
        else:
            conn.call(
                "POST",
                f"{settings.kv_mount}/config",
                body={"cas_required": True},
                need=("update", root),
            )
            lines.append(f"{settings.kv_mount}/: check-and-set now required on every write")
            changed = True
        for name, derived in ((settings.key_name, True), (settings.index_key_name, False)):
            path = f"{settings.transit_mount}/keys/{name}"
            reply = conn.call("GET", path, ok=(200, 404), need=("read", root))
            if reply.status == 404:
                conn.call(
                    "POST",
                    path,
                    body={"type": "aes256-gcm96", "derived": derived, "exportable": False},
                    need=("update", root),
                )
                what = "derived wrapping key" if derived else "blind-index HMAC key"
                lines.append(f"Transit key {name}: created ({what}, aes256-gcm96, not exportable)")
                changed = True
                continue
            data = reply.data.get("data") or {}
            if (
                data.get("type") != "aes256-gcm96"
                or bool(data.get("derived")) != derived
                or data.get("exportable") is not False
            ):
                raise ConfigError(
                    f"Transit key {name} exists with other settings (type {data.get('type')}, "
                    f"derived {data.get('derived')}, exportable {data.get('exportable')}); "
                    "childvault needs aes256-gcm96, "
                    f"derived={str(derived).lower()}, not exportable"
                )
            if derived:
                lines.append(
                    f"Transit key {name}: already present "
                    f"(latest version {data.get('latest_version')})"
                )
            else:
                latest = int(data.get("latest_version") or 1)
                minimum = int(data.get("min_encryption_version") or 0)
                pinned = settings.index_key_version
                if pinned > latest or pinned < minimum:
                    raise ConfigError(
                        f"index_key_version {pinned} is not usable with Transit key {name} "
                        f"(versions {max(minimum, 1)}..{latest})"
                    )
                lines.append(
                    f"Transit key {name}: already present (latest version {latest}; "
                    f"childvault uses version {pinned})"
                )
        for name, text in render_policies(settings).items():
            path = f"sys/policies/acl/{name}"
            reply = conn.call("GET", path, ok=(200, 404), need=("read", root))
            current = (reply.data.get("data") or {}).get("policy") if reply.status == 200 else None
            if isinstance(current, str) and current.strip() == text.strip():
                lines.append(f"policy {name}: already up to date")
                continue
            conn.call("PUT", path, body={"policy": text}, need=("update", root))
            lines.append(f"policy {name}: {'written' if current is None else 'updated'}")
            changed = True
        if audit_file is not None:
            devices = conn.call("GET", "sys/audit", need=("sudo", root)).data
            table = devices["data"] if isinstance(devices.get("data"), dict) else devices
            found = [
                path
                for path, dev in table.items()
                if isinstance(dev, dict)
                and dev.get("type") == "file"
                and (dev.get("options") or {}).get("file_path") == audit_file
            ]
            if found:
                lines.append(f"audit device: already writing to {audit_file} ({found[0]})")
            else:
                reply = conn.call(
                    "PUT",
                    "sys/audit/childvault",
                    body={"type": "file", "options": {"file_path": audit_file}},
                    ok=(200, 204, 400),
                    need=("sudo", root),
                )
                if reply.status == 400:
                    raise ConfigError(
                        "the server refuses to enable audit devices through the API "
                        "(OpenBao and recent Vault versions); everything else is set up. Add "
                        f"this to the server configuration, restart it, and run setup again:\n"
                        f"{_audit_stanza(audit_file)}",
                        detail=_scrub(reply.data.get("errors")),
                    )
                lines.append(f"audit device: file audit device enabled, writing to {audit_file}")
                changed = True
    finally:
        conn.close()
    lines.append(
        "setup complete" if changed else "nothing to change: the server was already set up"
    )
    return lines
