"""What the VaultProvider tests share: the role policies' names, record keys
to wrap, a request counter, and readers of what OpenBao stores."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import requests

from childvault.keys import (
    FieldKey,
    Identity,
    RecordKeys,
    WrappedRecord,
)
from childvault.keys._openbao._formats import context
from childvault.testing import DevServer as BaoServer

STAFF = ["childvault-staff"]
OFFICER = ["childvault-officer"]
ADMIN = ["childvault-admin"]


def new_id() -> str:
    return "rec-" + secrets.token_hex(8)


def record(fields: tuple[str, ...] = ("name", "health", "address"), version: int = 1) -> RecordKeys:
    return RecordKeys(
        new_id(), version, {f: FieldKey(1, secrets.token_bytes(32)) for f in fields}, new=True
    )


def wrapped(rec: RecordKeys, blob: bytes) -> WrappedRecord:
    return WrappedRecord(rec.record_id, rec.version, blob)


class RequestCounter:
    """Counts the HTTP requests that go through a provider's one session."""

    def __init__(self, session: requests.Session) -> None:
        self.calls: list[tuple[str, str]] = []
        original = session.request

        def counting(*args: Any, **kwargs: Any) -> requests.Response:
            method = kwargs.get("method", args[0] if args else "?")
            url = kwargs.get("url", args[1] if len(args) > 1 else "?")
            self.calls.append((str(method).upper(), str(url).split("/v1/", 1)[-1]))
            return original(*args, **kwargs)

        session.request = counting  # type: ignore[method-assign]

    def reset(self) -> None:
        self.calls.clear()

    def paths(self, fragment: str) -> list[str]:
        return [p for _m, p in self.calls if fragment in p]


def salt_doc(server: BaoServer, record_id: str) -> dict[str, Any]:
    resp = server.api("GET", f"childvault-kv/data/records/{record_id}")
    resp.raise_for_status()
    return dict(resp.json()["data"]["data"])


def context_of(server: BaoServer, record_id: str, field: str, field_version: int = 1) -> str:
    doc = salt_doc(server, record_id)
    salt_b64 = doc.get("fields", {}).get(field, doc["salt"])
    return context(record_id, field, field_version, base64.b64decode(salt_b64))


def ciphertext_of(blob: bytes, field: str) -> str:
    return str(json.loads(blob)["f"][field][1])


def forge_material(requester: Identity, vault_id: str, grant: str, token: str, items: Any) -> bytes:
    doc = {"v": 1, "vault": vault_id, "grant": grant, "wraps": [{"token": token, "items": items}]}
    return requester.public.seal(json.dumps(doc).encode())
