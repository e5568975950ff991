"""The Transit engine: batch encrypt, rewrap and HMAC, key description and rotation.

Every batch is cut into chunks of :data:`CHUNK` items. OpenBao refuses request
bodies with more than 1000 JSON strings by default (``max_request_json_strings``);
an encrypt or decrypt item costs 4 strings, so 200 items stay well inside the
limit. The response-wrapped decrypt lives in :mod:`._wrapping`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from childvault._i18n import _t
from childvault.keys._encoding import b64, unb64
from childvault.keys._errors import DecryptionFailed, ProviderUnavailable
from childvault.keys._openbao._formats import index_input
from childvault.keys._openbao._http import Connection, Reply, scrub
from childvault.keys._openbao._policies import ADMIN, ANY_ROLE
from childvault.keys._openbao._settings import VaultSettings

__all__ = ["CHUNK", "Transit", "batch_results", "chunks"]

#: Items per Transit batch call (see the module docstring).
CHUNK = 200

_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def batch_results(reply: Reply, expected: int, what: str) -> list[dict[str, Any]]:
    """The ``batch_results`` of a Transit batch reply, checked for count and shape."""
    data = reply.data.get("data")
    results = data.get("batch_results") if isinstance(data, dict) else None
    if not isinstance(results, list) or len(results) != expected:
        raise ProviderUnavailable(
            _t("the Vault server gave an incomplete answer to {what}", what=what)
        )
    if not all(isinstance(r, dict) for r in results):
        raise ProviderUnavailable(
            _t("the Vault server gave a malformed answer to {what}", what=what)
        )
    return results


class Transit:
    """The Transit operations childvault uses, on the configured mount and keys."""

    def __init__(self, conn: Connection, settings: VaultSettings, vault_id: str) -> None:
        """Operate through ``conn``; ``vault_id`` is bound into every blind-index input."""
        self._conn = conn
        self._settings = settings
        self._vault_id = vault_id

    def path(self, op: str, key: str | None = None) -> str:
        """API path of ``op`` (``encrypt``, ``decrypt``, ...) on ``key`` (default: the DEK key)."""
        return f"{self._settings.transit_mount}/{op}/{key or self._settings.key_name}"

    @property
    def key_path(self) -> str:
        """API path of the wrapping key itself (``keys/<key>``)."""
        return f"{self._settings.transit_mount}/keys/{self._settings.key_name}"

    # -- wrapping keys ---------------------------------------------------------------

    def encrypt(self, items: Sequence[tuple[bytes, str]], need_policy: str) -> list[str]:
        """Wrap ``(dek, context)`` pairs in as few Transit calls as the limit allows."""
        out: list[str] = []
        path = self.path("encrypt")
        for chunk in chunks(items):
            batch = [{"plaintext": b64(dek), "context": ctx} for dek, ctx in chunk]
            reply = self._conn.call(
                "POST", path, body={"batch_input": batch}, ok=(200,), need=("update", need_policy)
            )
            for result in batch_results(reply, len(chunk), f"POST {path}"):
                ciphertext = result.get("ciphertext")
                if result.get("error") or not isinstance(ciphertext, str):
                    raise ProviderUnavailable(
                        _t("the Vault server refused to wrap a key (POST {path})", path=path),
                        detail=scrub([result.get("error")]),
                    )
                out.append(ciphertext)
        return out

    def rewrap(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """Admin: rewrap ``(ciphertext, context)`` pairs under the latest key version."""
        path = self.path("rewrap")
        rewrapped: list[str] = []
        for chunk in chunks(items):
            reply = self._conn.call(
                "POST",
                path,
                body={"batch_input": [{"ciphertext": ct, "context": ctx} for ct, ctx in chunk]},
                ok=(200, 400),
                need=("update", ADMIN),
            )
            data = reply.data.get("data")
            if reply.status == 400 and not isinstance(data, dict):
                raise ProviderUnavailable(
                    _t(
                        "the Vault server refused POST {path}; run `childvault doctor`",
                        path=path,
                    ),
                    detail=scrub(reply.data.get("errors")),
                )
            for result in batch_results(reply, len(chunk), f"POST {path}"):
                ciphertext = result.get("ciphertext")
                if result.get("error") or not isinstance(ciphertext, str):
                    raise DecryptionFailed(
                        f"Transit could not rewrap a key: {scrub([result.get('error')])}"
                    )
                rewrapped.append(ciphertext)
        return rewrapped

    # -- key versions -----------------------------------------------------------------

    def key_info(self) -> dict[str, Any]:
        """The wrapping key's public description (versions, flags); no key material."""
        reply = self._conn.call("GET", self.key_path, need=("read", ANY_ROLE))
        data = reply.data.get("data")
        if not isinstance(data, dict):
            raise ProviderUnavailable(_t("the Vault server returned no key description"))
        return data

    def latest_version(self) -> int:
        """The newest version of the wrapping key (what new wraps use)."""
        return int(self.key_info()["latest_version"])

    def rotate(self) -> int:
        """Admin: add a new version of the wrapping key; return it."""
        self._conn.call("POST", f"{self.key_path}/rotate", need=("update", ADMIN))
        return self.latest_version()

    def retire_older(self, *, trim: bool) -> int:
        """Admin: make the latest version the only usable one; return it."""
        latest = self.latest_version()
        base = self.key_path
        # The encryption floor too: nobody can then wrap under a retired
        # version by naming it, and Transit requires it before a trim.
        self._conn.call(
            "POST",
            f"{base}/config",
            body={"min_decryption_version": latest, "min_encryption_version": latest},
            need=("update", ADMIN),
        )
        if trim:
            self._conn.call(
                "POST",
                f"{base}/trim",
                body={"min_available_version": latest},
                need=("update", ADMIN),
            )
        return latest

    # -- blind index --------------------------------------------------------------------

    def hmac(self, field: str, values: Sequence[bytes]) -> list[bytes]:
        """Raw HMAC-SHA256 of each value under the pinned version of the index key."""
        s = self._settings
        path = self.path("hmac", s.index_key_name)
        out: list[bytes] = []
        for chunk in chunks(values):
            batch = [{"input": index_input(self._vault_id, field, bytes(v))} for v in chunk]
            reply = self._conn.call(
                "POST",
                path,
                body={
                    "batch_input": batch,
                    "algorithm": "sha2-256",
                    "key_version": s.index_key_version,
                },
                ok=(200,),
                need=("update", ANY_ROLE),
            )
            for result in batch_results(reply, len(chunk), f"POST {path}"):
                mac = result.get("hmac")
                if result.get("error") or not isinstance(mac, str):
                    raise ProviderUnavailable(
                        _t(
                            "the Vault server refused to compute an index value (POST {path})",
                            path=path,
                        ),
                        detail=scrub([result.get("error")]),
                    )
                try:
                    out.append(unb64(mac.split(":", 2)[2]))
                except (ValueError, IndexError):
                    raise ProviderUnavailable(
                        _t("the Vault server returned a malformed HMAC")
                    ) from None
        return out
