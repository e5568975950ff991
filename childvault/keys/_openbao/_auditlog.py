"""Reading a Vault/OpenBao file audit log for ``childvault audit reconcile``.

The file audit device writes one JSON object per line. Secrets in it are
HMAC'd with a per-device key (``hmac-sha256:...``), so a wrapping token's
accessor recorded by childvault is compared through ``sys/audit-hash/<device>``,
which computes the same HMAC. Only the response entries of Transit decrypts
on this vault's key are of interest: each is one decrypt that childvault's
own log must account for (a response-wrapped release at an approval).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys._errors import ConfigError
from childvault.keys._openbao._http import Connection
from childvault.keys._openbao._policies import ADMIN

__all__ = ["VaultDecrypt", "audit_hashes", "decrypts_in", "unmatched"]

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

    def to_json(self) -> dict[str, Any]:
        """The report form (no token, no key material; the accessor stays HMAC'd)."""
        return {
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


def decrypts_in(audit_file: Path, decrypt_path: str) -> Iterator[VaultDecrypt]:
    """Every successful response to a Transit decrypt on ``decrypt_path`` in the file."""
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
            if not isinstance(entry, dict) or entry.get("type") != "response":
                continue
            request = entry.get("request") or {}
            path = _text(request, "path")
            if not _is_decrypt_path(path, decrypt_path) or entry.get("error"):
                continue
            auth = entry.get("auth") or {}
            policies = auth.get("policies") if isinstance(auth, dict) else None
            yield VaultDecrypt(
                time=_text(entry, "time"),
                path=path,
                request_id=_text(request, "id"),
                wrapped=isinstance((entry.get("response") or {}).get("wrap_info"), dict),
                accessor_hmac=_text(entry, "response", "wrap_info", "accessor"),
                display_name=_text(auth, "display_name"),
                entity_id=_text(auth, "entity_id"),
                role_name=_text(auth, "metadata", "role_name"),
                policies=tuple(str(p) for p in policies) if isinstance(policies, list) else (),
                remote_address=_text(request, "remote_address"),
            )


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
