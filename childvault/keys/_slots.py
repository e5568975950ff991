"""Key-slot file: vault-wide secrets sealed to every user's identity key.

The SQLCipher key (and the blind-index key) are 32 random bytes each. They are
sealed, together with the vault id and the user's name, to each user's X25519
key, so every person unlocks the database with their own passphrase and a
slot cannot be moved to another user or vault.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys._encoding import b64
from childvault.keys._errors import ConfigError, DecryptionFailed, NotFound
from childvault.keys._files import atomic_write
from childvault.keys._identity import Identity, PublicIdentity

_FORMAT = "childvault-keyslots/1"


class KeySlots:
    """The key-slot file beside a vault's database."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(
                _t(
                    "key-slot file {path} is missing: restore it from backup (without it no one"
                    " can open the database)",
                    path=self.path,
                )
            ) from exc
        try:
            doc = json.loads(raw)
            if doc.get("format") != _FORMAT or not isinstance(doc.get("slots"), dict):
                raise ValueError(_t("format"))
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            raise ConfigError(
                _t(
                    "key-slot file {path} is damaged or truncated: restore it from backup",
                    path=self.path,
                )
            ) from exc
        return dict(doc)

    def create(self, vault_id: str) -> None:
        """Write an empty slot file for ``vault_id``."""
        self._write({"format": _FORMAT, "vault": vault_id, "slots": {}})

    def _write(self, doc: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")

    def users(self) -> list[str]:
        """Names of the users that hold a slot."""
        return sorted(self._read()["slots"])

    def add(self, user: PublicIdentity, vault_id: str, secrets: dict[str, bytes]) -> None:
        """Seal ``secrets`` to ``user`` and store the slot (replacing an older one)."""
        self.install(user.name, vault_id, sealed_slot(user, vault_id, secrets))

    def install(self, name: str, vault_id: str, sealed: str | None) -> str | None:
        """Store ``name``'s slot as the sealed text ``sealed`` (None: remove it).

        For a slot sealed elsewhere (:func:`sealed_slot`, by ``keys renew``
        in the owner's process). Returns the slot it replaced, to put it back.
        """
        doc = self._read()
        if doc.get("vault") != vault_id:
            raise ConfigError(_t("key-slot file {path} belongs to another vault", path=self.path))
        previous = doc["slots"].get(name)
        if sealed is None:
            doc["slots"].pop(name, None)
        else:
            doc["slots"][name] = sealed
        self._write(doc)
        return previous if isinstance(previous, str) else None

    def remove(self, name: str) -> None:
        """Drop a user's slot (the user can no longer open the database)."""
        doc = self._read()
        doc["slots"].pop(name, None)
        self._write(doc)

    def open(self, identity: Identity, vault_id: str) -> dict[str, bytes]:
        """Open the acting user's slot; raise if absent, altered or not theirs."""
        doc = self._read()
        if doc.get("vault") != vault_id:
            raise ConfigError(_t("key-slot file {path} belongs to another vault", path=self.path))
        sealed_b64 = doc["slots"].get(identity.name)
        if sealed_b64 is None:
            raise NotFound(
                _t(
                    "user {name!r} has no key slot in this vault; ask an admin to run "
                    "`childvault user add`",
                    name=identity.name,
                )
            )
        try:
            sealed = base64.b64decode(sealed_b64, validate=True)
        except (ValueError, TypeError) as exc:
            raise DecryptionFailed("key slot is not valid base64") from exc
        inner = identity.unseal(sealed)
        try:
            slot = json.loads(inner)
            if slot["vault"] != vault_id or slot["user"] != identity.name:
                raise DecryptionFailed("key slot bound to another vault or user")
            return {str(k): base64.b64decode(v, validate=True) for k, v in slot["secrets"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise DecryptionFailed("key slot content is malformed") from exc


def sealed_slot(user: PublicIdentity, vault_id: str, secrets: dict[str, bytes]) -> str:
    """``secrets`` sealed to ``user`` for ``vault_id``, as a key-slot file stores them."""
    inner = json.dumps(
        {
            "vault": vault_id,
            "user": user.name,
            "secrets": {k: b64(v) for k, v in sorted(secrets.items())},
        }
    ).encode()
    return b64(user.seal(inner))
