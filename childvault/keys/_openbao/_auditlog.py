"""Reading a Vault/OpenBao file audit log for ``childvault audit reconcile``.

The file audit device writes one JSON object per line. Secrets in it are
HMAC'd with a per-device key (``hmac-sha256:...``), so a wrapping token's
accessor recorded by childvault is compared through ``sys/audit-hash/<device>``,
which computes the same HMAC. Only the response entries of Transit decrypts
on this vault's key are of interest: each is one decrypt that childvault's
own log must account for (a response-wrapped release at an approval), and
the successful ``sys/wrapping/unwrap`` of each such decrypt's wrapping token.

An unwrap entry names the token (HMAC'd, in ``request.data.token``, or as
the client token when the wrapping token itself authenticates the call), not
its accessor; the decrypt's response names both (``wrap_info``), so the file
itself maps one to the other.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys._errors import ConfigError
from childvault.keys._openbao._http import Connection
from childvault.keys._openbao._policies import ADMIN

__all__ = [
    "VaultDecrypt",
    "audit_hashes",
    "decrypts_in",
    "operations_in",
    "unmatched",
    "unmatched_unwraps",
]

#: Audit files are read line by line; a longer line is not one of Vault's.
_MAX_LINE = 16 * 1024 * 1024


@dataclass(frozen=True)
class VaultDecrypt:
    """One Transit decrypt as Vault's audit log records it (who, when, what)."""

    time: str
    path: str
    request_id: str
    wrapped: bool
    accessor_hmac: str
    display_name: str
    entity_id: str
    role_name: str
    policies: tuple[str, ...]
    remote_address: str
    #: Empty for a decrypt; for an unwrap, why it is reported (set by the caller).
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The report form (no token, no key material; the accessor stays HMAC'd)."""
        return {
            "reason": self.reason,
            "time": self.time,
            "path": self.path,
            "vault_request_id": self.request_id,
            "wrapped": self.wrapped,
            "who": {
                "display_name": self.display_name,
                "entity_id": self.entity_id,
                "role_name": self.role_name,
                "policies": list(self.policies),
                "remote_address": self.remote_address,
            },
        }


def _text(obj: Any, *keys: str) -> str:
    for key in keys:
        if not isinstance(obj, dict):
            return ""
        obj = obj.get(key)
    return obj if isinstance(obj, str) else ""


def _is_decrypt_path(path: str, decrypt_path: str) -> bool:
    # With namespaces the audit log may name the path with the namespace in front.
    return path == decrypt_path or path.endswith("/" + decrypt_path)


def _entries(audit_file: Path) -> Iterator[dict[str, Any]]:
    """The response entries of ``audit_file`` (requests carry nothing more)."""
    try:
        handle = audit_file.open("r", encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(
            _t(
                "cannot read the Vault audit log {audit_file}: {strerror}",
                audit_file=audit_file,
                strerror=exc.strerror,
            )
        ) from None
    with handle:
        for line in handle:
            if len(line) > _MAX_LINE or not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line while the server writes
            if isinstance(entry, dict) and entry.get("type") == "response":
                yield entry


def _operation(entry: dict[str, Any], *, wrapped: bool, accessor_hmac: str) -> VaultDecrypt:
    request = entry.get("request") or {}
    auth = entry.get("auth") or {}
    policies = auth.get("policies") if isinstance(auth, dict) else None
    return VaultDecrypt(
        time=_text(entry, "time"),
        path=_text(request, "path"),
        request_id=_text(request, "id"),
        wrapped=wrapped,
        accessor_hmac=accessor_hmac,
        display_name=_text(auth, "display_name"),
        entity_id=_text(auth, "entity_id"),
        role_name=_text(auth, "metadata", "role_name"),
        policies=tuple(str(p) for p in policies) if isinstance(policies, list) else (),
        remote_address=_text(request, "remote_address"),
    )


def decrypts_in(audit_file: Path, decrypt_path: str) -> Iterator[VaultDecrypt]:
    """Every successful response to a Transit decrypt on ``decrypt_path`` in the file."""
    return iter(operations_in(audit_file, decrypt_path)[0])


def operations_in(
    audit_file: Path, decrypt_path: str
) -> tuple[list[VaultDecrypt], list[VaultDecrypt]]:
    """``(decrypts, unwraps)``: every successful Transit decrypt on ``decrypt_path``
    and every successful unwrap of one of those decrypts' wrapping tokens.

    An unwrap's ``accessor_hmac`` is its token's accessor, as the decrypt that
    made the token recorded it. Unwraps of tokens made by other requests (or
    before the file starts) are not childvault's and are left out.
    """
    decrypts: list[VaultDecrypt] = []
    unwraps: list[VaultDecrypt] = []
    accessor_of: dict[str, str] = {}  # HMAC'd wrapping token -> its HMAC'd accessor
    for entry in _entries(audit_file):
        request = entry.get("request") or {}
        path = _text(request, "path")
        if entry.get("error"):
            continue  # refused or failed: nothing was released
        if _is_decrypt_path(path, decrypt_path):
            info = (entry.get("response") or {}).get("wrap_info")
            accessor = _text(info, "accessor")
            if _text(info, "token"):
                accessor_of[_text(info, "token")] = accessor
            decrypts.append(
                _operation(entry, wrapped=isinstance(info, dict), accessor_hmac=accessor)
            )
        elif path == "sys/wrapping/unwrap" or path.endswith("/sys/wrapping/unwrap"):
            # Either the token in the body, or the wrapping token as the client token.
            token = _text(request, "data", "token") or _text(request, "client_token")
            if token in accessor_of:
                unwraps.append(_operation(entry, wrapped=True, accessor_hmac=accessor_of[token]))
    return decrypts, unwraps


def audit_hashes(conn: Connection, device: str, values: Sequence[str]) -> set[str]:
    """``values`` as the audit device ``device`` HMACs them (``sys/audit-hash``)."""
    out: set[str] = set()
    path = f"sys/audit-hash/{device.strip('/')}"
    for value in values:
        if not value:
            continue
        reply = conn.call("POST", path, body={"input": value}, need=("update", ADMIN))
        digest = (reply.data.get("data") or reply.data).get("hash")
        if isinstance(digest, str):
            out.add(digest)
    return out


def unmatched(decrypts: Sequence[VaultDecrypt], known: Collection[str]) -> list[VaultDecrypt]:
    """The decrypts whose wrapping accessor is not one childvault recorded.

    ``known`` holds the recorded accessors, both raw and as the device's HMAC
    (an audit device with ``hmac_accessor=false`` writes them raw). An
    unwrapped decrypt never matches: childvault only releases wrapped.
    """
    return [d for d in decrypts if not d.wrapped or d.accessor_hmac not in known]


def unmatched_unwraps(
    unwraps: Sequence[VaultDecrypt], owners: Mapping[str, tuple[str, bool]]
) -> list[VaultDecrypt]:
    """The unwraps childvault's log does not account for, each with its ``reason``.

    ``owners`` maps a recorded accessor (raw or HMAC'd) to the grant's
    requester and whether childvault logged the requester's read of it
    (a successful ``grant.read`` not followed by one that found the
    token already used). An unwrap is reported when its token was recorded
    by no approval; when the audit log names a per-person AppRole role
    that is not the requester; or when no such read was logged.
    """
    out: list[VaultDecrypt] = []
    for unwrap in unwraps:
        owner = owners.get(unwrap.accessor_hmac)
        if owner is None:
            reason = "unwrap-not-approved"
        elif unwrap.display_name.startswith("approle") and unwrap.role_name not in ("", owner[0]):
            reason = "unwrap-not-requester"
        elif not owner[1]:
            reason = "unwrap-no-read"
        else:
            continue
        out.append(dataclasses.replace(unwrap, reason=reason))
    return out
