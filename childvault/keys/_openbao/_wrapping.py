"""Response wrapping: the officer's wrapped decrypt and the requester's unwrap.

An officer's client never holds a DEK: its Transit decrypt is response-wrapped
(the officer policy demands it with ``min_wrapping_ttl``), so it receives only
wrapping tokens, which it seals to the requester. The requester looks each
token up (its ``creation_path`` must be the decrypt path of this vault's key)
and then unwraps it, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from childvault._i18n import _t
from childvault.keys._encoding import unb64
from childvault.keys._errors import (
    AccessDenied,
    ApprovalInvalid,
    ConfigError,
    DecryptionFailed,
    ProviderUnavailable,
)
from childvault.keys._openbao._formats import DEK_LEN, GrantWraps, Salts, context
from childvault.keys._openbao._http import Connection, scrub
from childvault.keys._openbao._policies import OFFICER, STAFF
from childvault.keys._openbao._settings import VaultSettings
from childvault.keys._openbao._transit import chunks
from childvault.keys._provider import FieldKey, ReleasedKeys

__all__ = ["Wrapping"]


class Wrapping:
    """Wrapped Transit decrypts and their unwrapping, for one vault's key."""

    def __init__(self, conn: Connection, settings: VaultSettings) -> None:
        """Operate through ``conn`` on the decrypt path of ``settings.key_name``."""
        self._conn = conn
        self._settings = settings
        self.decrypt_path = f"{settings.transit_mount}/decrypt/{settings.key_name}"

    def wrapped_decrypts(
        self,
        wanted: Sequence[tuple[str, str, int, str]],
        salts: Mapping[str, Salts],
        ttl: str,
        receipt: dict[str, list[str]] | None = None,
    ) -> GrantWraps:
        """Officer: one wrapping token per chunk of ``(record_id, field, field_version, ct)``.

        ``receipt``, if given, collects each wrapping token's ``accessors`` (to
        revoke it later without holding it) and the Vault ``request_ids`` of
        the decrypts (to match Vault's audit log to childvault's).
        """
        wraps: GrantWraps = []
        for chunk in chunks(wanted):
            batch = [
                {"ciphertext": ct, "context": context(rid, name, fv, salts[rid].for_field(name))}
                for rid, name, fv, ct in chunk
            ]
            try:
                reply = self._conn.call(
                    "POST",
                    self.decrypt_path,
                    body={"batch_input": batch},
                    wrap_ttl=ttl,
                    ok=(200,),
                    need=("update", OFFICER),
                )
            except AccessDenied as exc:
                # The policy also refuses a wrap TTL above its max_wrapping_ttl,
                # with the same bare "permission denied": name both causes.
                raise AccessDenied(
                    _t(
                        "this token may not decrypt on {decrypt_path} with a grant "
                        "lifetime of {ttl}: it needs the childvault-officer policy, "
                        "and the lifetime must not exceed the policy's "
                        "max_wrapping_ttl ({max_wrapping_ttl} in these settings)",
                        decrypt_path=self.decrypt_path,
                        ttl=ttl,
                        max_wrapping_ttl=self._settings.max_wrapping_ttl,
                    ),
                    detail=exc.detail,
                ) from None
            info = reply.data.get("wrap_info")
            if reply.data.get("data") or not isinstance(info, dict):
                # The server answered in clear: the wrapping header was dropped
                # on the way (a proxy?). Refuse rather than hold DEKs here.
                raise ConfigError(
                    _t(
                        "the Vault server at {addr} did not response-wrap the "
                        "decrypt on {decrypt_path}; check proxies between here and "
                        "Vault",
                        addr=self._settings.addr,
                        decrypt_path=self.decrypt_path,
                    )
                )
            token = info.get("token")
            if not isinstance(token, str) or not token:
                raise ProviderUnavailable(_t("the Vault server returned no wrapping token"))
            wraps.append((token, [(rid, name, fv) for rid, name, fv, _ct in chunk]))
            if receipt is not None:
                receipt.setdefault("accessors", []).append(str(info.get("accessor") or ""))
                # OpenBao leaves request_id empty on a wrapped answer; the
                # accessor alone identifies the decrypt in its audit log.
                if reply.data.get("request_id"):
                    receipt.setdefault("request_ids", []).append(str(reply.data["request_id"]))
        return wraps

    def revoke(self, accessors: Sequence[str]) -> int:
        """Officer: revoke wrapping tokens by accessor; return how many were still live.

        A token already unwrapped or expired is gone anyway (Vault answers 400),
        so repeating a revocation is harmless.
        """
        revoked = 0
        for accessor in accessors:
            if not accessor:
                continue
            reply = self._conn.call(
                "POST",
                "auth/token/revoke-accessor",
                body={"accessor": accessor},
                ok=(200, 204, 400),
                need=("update", OFFICER),
            )
            revoked += int(reply.status != 400)
        return revoked

    def creation_path_ok(self, path: Any) -> bool:
        """Whether a wrapping token's ``creation_path`` is this key's decrypt path."""
        if path == self.decrypt_path:
            return True
        ns = (self._settings.namespace or "").strip("/")
        # Some servers report the path with the namespace in front.
        return bool(ns) and path == f"{ns}/{self.decrypt_path}"

    def unwrap(self, wraps: GrantWraps) -> ReleasedKeys:
        """Requester: check every wrapping token, then unwrap each (each works once)."""
        # Look every token up before unwrapping any: unwrapping consumes a
        # token, so a bad one found late would waste the good ones.
        for token, _items in wraps:
            reply = self._conn.call(
                "POST",
                "sys/wrapping/lookup",
                body={"token": token},
                ok=(200, 400),
                need=("update", STAFF),
            )
            if reply.status == 400:
                raise ApprovalInvalid("wrapping token is used, expired or unknown")
            data = reply.data.get("data")
            path = data.get("creation_path") if isinstance(data, dict) else None
            if not self.creation_path_ok(path):
                raise ApprovalInvalid(
                    f"wrapping token was created on {path!r}, not {self.decrypt_path!r}"
                )
        released: ReleasedKeys = {}
        for token, items in wraps:
            reply = self._conn.call(
                "POST",
                "sys/wrapping/unwrap",
                body={"token": token},
                ok=(200, 400),
                need=("update", STAFF),
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
                    raise DecryptionFailed(f"Transit could not unwrap a key: {scrub([error])}")
                try:
                    key = unb64(result.get("plaintext"))
                except ValueError:
                    raise DecryptionFailed("unwrapped key is malformed") from None
                if len(key) != DEK_LEN:
                    raise DecryptionFailed("unwrapped key has a wrong length")
                per_record = released.setdefault(rid, {})
                if name in per_record:
                    raise ApprovalInvalid("grant material names a field twice")
                per_record[name] = FieldKey(fv, key)
        return released
