"""The key providers of one session: which provider seals, which releases.

A staff member's provider can wrap but not release; an officer's can release.
Local mode builds them from the custodian keys (public half in the database,
secret in the officer's key slot); Vault mode has one provider acting with the
user's Vault credentials. Built lazily: opening a vault talks to no server.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from childvault.keys import (
    AccessDenied,
    ConfigError,
    CustodianSecret,
    DecryptionFailed,
    KeyProvider,
    LocalProvider,
    UsageError,
)
from childvault.vault._backend import Backend
from childvault.vault._config import Config
from childvault.vault._registrations import check_custodian_logged

if TYPE_CHECKING:
    from childvault.keys._vault import VaultProvider

#: Key-slot entries holding a custodian secret are named ``custodian/<generation>``.
CUSTODIAN = "custodian/"
#: Bytes kept of a blind-index MAC: 16 bits, so each tag is shared by many
#: possible values and an insider with the index key cannot confirm a guessed
#: identifier offline without false positives (CipherSweet's advice).
INDEX_TAG_BYTES = 2


class Keyring:
    """The providers of the acting user, built on first use and reused."""

    def __init__(
        self,
        config: Config,
        user: str,
        db: Backend,
        secrets_: dict[str, bytes],
        provider_options: Mapping[str, Any],
    ) -> None:
        self._config = config
        self._user = user
        self._db = db
        #: The acting user's key-slot secrets (shared with the session, updated in place).
        self.secrets = secrets_
        self._options = dict(provider_options)
        self._writer: LocalProvider | None = None
        self._officer: LocalProvider | None = None
        self._remote: VaultProvider | None = None

    @property
    def vault_id(self) -> str:
        """The vault's id."""
        return self._config.vault_id

    def remote(self) -> VaultProvider:
        """The one VaultProvider of this session (one HTTP session, reused)."""
        if self._remote is None:
            from childvault.keys import VaultProvider, VaultSettings

            if self._config.provider != "vault":
                raise UsageError("this vault uses the local key provider, not Vault")
            self._remote = VaultProvider(
                VaultSettings.from_json(self._config.vault_settings or {}),
                self.vault_id,
                token=self._options.get("vault_token"),
                approle=self._options.get("approle"),
            )
        return self._remote

    def writer(self) -> KeyProvider:
        """The provider as a writer: seals new keys (staff and up)."""
        if self._config.provider == "vault":
            return self.remote()
        if self._writer is None:
            current = [c for c in self._db.custodians.all() if c[2] == "current"]
            if not current:
                raise ConfigError(
                    "no officer exists yet, so records cannot be sealed: an admin must first "
                    "run `childvault user add NAME --role officer`"
                )
            generation, public, _ = current[0]
            # Never seal children's data to a key an insider slipped into the table.
            check_custodian_logged(self._db.audit, generation, public)
            self._writer = LocalProvider(self.vault_id, generation, public)
        return self._writer

    def officer(self) -> KeyProvider:
        """The provider with the officer's powers (custodian key or officer token)."""
        if self._config.provider == "vault":
            return self.remote()
        if self._officer is None:
            self._officer = self.local_officer()
        return self._officer

    def reset(self) -> None:
        """Forget the local providers (after the custodian key changed)."""
        self._officer = None
        self._writer = None

    def custodian_secrets(self) -> dict[str, bytes]:
        """The acting user's custodian entries from their key slot (officers only)."""
        return {k: v for k, v in self.secrets.items() if k.startswith(CUSTODIAN)}

    def base_secrets(self) -> dict[str, bytes]:
        """The secrets every user's key slot holds (database and index keys)."""
        return {k: self.secrets[k] for k in ("db", "index")}

    def local_officer(self) -> LocalProvider:
        """A local provider holding the acting officer's custodian secrets."""
        unlocked = [
            CustodianSecret.from_bytes(int(k[len(CUSTODIAN) :]), v)
            for k, v in self.custodian_secrets().items()
        ]
        current = [(g, p) for g, p, state in self._db.custodians.all() if state == "current"]
        if not current:
            raise ConfigError("no custodian key exists yet: add an officer first")
        generation, public = current[0]
        mine = [c for c in unlocked if c.generation == generation]
        if not mine:
            raise AccessDenied(
                f"{self._user!r} does not hold the custodian key yet: an existing officer must "
                f"run `childvault --as OFFICER keys share {self._user}`"
            )
        if mine[0].public != public:
            raise DecryptionFailed("the custodian key in the key slot does not match the database")
        return LocalProvider(self.vault_id, generation, public, unlocked)

    def index_tags(self, field: str, values: Sequence[str]) -> list[bytes]:
        """Truncated keyed blind-index tags of ``values`` for ``field``.

        Local provider: HMAC-SHA256 under the vault's index key (sealed to every
        user like the database key). Vault provider: Transit ``hmac`` with the
        pinned index-key version.
        """
        if not values:
            return []
        if self._config.provider == "vault":
            macs = self.remote().hmac(field, [v.encode("utf-8") for v in values])
        else:
            key = self.secrets["index"]
            macs = [
                hmac.new(
                    key,
                    b"childvault/index/1|%s|%s|%s"
                    % (self.vault_id.encode(), field.encode(), v.encode("utf-8")),
                    hashlib.sha256,
                ).digest()
                for v in values
            ]
        return [m[:INDEX_TAG_BYTES] for m in macs]

    def close(self) -> None:
        """Close the Vault session, if one was opened."""
        if self._remote is not None:
            self._remote.close()
