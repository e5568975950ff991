"""The key providers of one session: which provider seals, which releases.

A staff member's provider can wrap but not release; an officer's can release.
A custodial provider (local) is built from the custodian keys (public half in
the database, secret in the officer's key slot); any other has one provider
acting with the user's own credentials (OpenBao / Vault). Built lazily:
opening a vault talks to no server.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from childvault._i18n import _t, join
from childvault.keys import (
    AccessDenied,
    BlindIndexer,
    ConfigError,
    CustodianSealing,
    CustodianSecret,
    DecryptionFailed,
    Diagnosable,
    ExternalKeyMaterial,
    IntegrityError,
    KeyProvider,
    LocalProvider,
    ServerSideRotation,
    UsageError,
)
from childvault.vault._backend import Backend
from childvault.vault._keyconfig import KeysConfig, OpenBaoCredentials
from childvault.vault._registrations import check_custodian_logged
from childvault.vault._statements import TrustState

#: Key-slot entries holding a custodian secret are named ``custodian/<generation>``.
CUSTODIAN = "custodian/"
#: Bytes kept of a blind-index MAC: 16 bits, so each tag is shared by many
#: possible values and an insider with the index key cannot confirm a guessed
#: identifier offline without false positives (CipherSweet's advice).
INDEX_TAG_BYTES = 2


class Keyring:
    """The providers of the acting user, built on first use and reused.

    Which behaviour applies is asked of the configured provider's class
    (its capabilities, :mod:`childvault.keys`), never of its name.
    """

    def __init__(
        self,
        keys: KeysConfig,
        vault_id: str,
        user: str,
        db: Backend,
        secrets_: dict[str, bytes],
        credentials: OpenBaoCredentials | None = None,
    ) -> None:
        self.config = keys
        self.vault_id = vault_id
        self._user = user
        self._db = db
        #: The acting user's key-slot secrets (shared with the session, updated in place).
        self.secrets = secrets_
        self._credentials = credentials
        self._type = keys.provider_type()
        self._writer: LocalProvider | None = None
        self._officer: LocalProvider | None = None
        self._shared: KeyProvider | None = None
        #: Set by the session: the verified trust state (None without an anchor).
        self.trust: Callable[[], TrustState | None] = lambda: None

    @property
    def name(self) -> str:
        """The provider's name in ``config.json`` (for display and reports only)."""
        return self.config.name

    @property
    def custodial(self) -> bool:
        """Record keys are sealed to a custodian key officers hold (:class:`CustodianSealing`).

        Then the key material is the box in the row (deleting it is the shred),
        officers must be given the custodian key, and grant material can be
        opened again for every use.
        """
        return issubclass(self._type, CustodianSealing)

    @property
    def external_material(self) -> bool:
        """Key material lives outside the database (:class:`ExternalKeyMaterial`)."""
        return issubclass(self._type, ExternalKeyMaterial)

    @property
    def server_side_rotation(self) -> bool:
        """The provider rotates its wrapping key itself (:class:`ServerSideRotation`)."""
        return issubclass(self._type, ServerSideRotation)

    @property
    def single_use_release(self) -> bool:
        """Released grant material opens once (e.g. a response-wrapping token), so a
        multi-use grant keeps the redeemed keys, sealed to the requester."""
        return not self.custodial

    def shared(self) -> KeyProvider:
        """The one provider acting with the user's own credentials for every role
        (one connection, reused); only for non-custodial providers."""
        if self._shared is None:
            provider = self.config.connect(self.vault_id, self._credentials)
            if provider is None:
                raise UsageError(
                    _t(
                        "this vault uses the {name} key provider, which has no server",
                        name=self.name,
                    )
                )
            self._shared = provider
        return self._shared

    def writer(self) -> KeyProvider:
        """The provider as a writer: seals new keys (staff and up)."""
        if not self.custodial:
            return self.shared()
        if self._writer is None:
            current = [c for c in self._db.custodians.all() if c[2] == "current"]
            if not current:
                raise ConfigError(
                    _t(
                        "no officer exists yet, so records cannot be sealed: an admin must "
                        "first run `childvault user add NAME --role officer`"
                    )
                )
            generation, public, _ = current[0]
            # Never seal children's data to a key an insider slipped into the table.
            self._check_custodian(generation, public, sealing=True)
            self._writer = LocalProvider(self.vault_id, generation, public)
        return self._writer

    def officer(self) -> KeyProvider:
        """The provider with the officer's powers (custodian key or officer credentials)."""
        if not self.custodial:
            return self.shared()
        if self._officer is None:
            self._officer = self.local_officer()
        return self._officer

    def officer_to_self(self) -> KeyProvider:
        """The officer's provider for a release to their own key (officer-internal
        decryption: consent checks, anonymised exports), logged by the caller first.

        The same as :meth:`officer` here; in server mode it skips the server's
        release wrapping, which guards a requester's offline reads: the officer
        already holds what opens the keys, so a release key would guard nothing
        (and the server makes one only for a logged approval's grant).
        """
        return self.officer()

    def rotator(self) -> ServerSideRotation:
        """The provider that rotates its own wrapping key."""
        provider = self.shared()
        if not isinstance(provider, ServerSideRotation):
            raise UsageError(
                _t("the {name} key provider does not rotate keys itself", name=self.name)
            )
        return provider

    def shredder(self) -> ExternalKeyMaterial | None:
        """The provider holding key material outside the database, if any."""
        if not self.external_material:
            return None
        provider = self.shared()
        return provider if isinstance(provider, ExternalKeyMaterial) else None

    def diagnosable(self) -> Diagnosable | None:
        """The provider, if it reports its own health."""
        if not issubclass(self._type, Diagnosable):
            return None
        provider = self.shared()
        return provider if isinstance(provider, Diagnosable) else None

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
            raise ConfigError(_t("no custodian key exists yet: add an officer first"))
        generation, public = current[0]
        self._check_custodian(generation, public)
        mine = [c for c in unlocked if c.generation == generation]
        if not mine:
            raise AccessDenied(
                _t(
                    "{user!r} does not hold the custodian key yet: an existing officer must run"
                    " `childvault --as OFFICER keys share {user}`",
                    user=self._user,
                )
            )
        if mine[0].public != public:
            raise DecryptionFailed("the custodian key in the key slot does not match the database")
        return LocalProvider(self.vault_id, generation, public, unlocked)

    def _check_custodian(self, generation: int, public: bytes, *, sealing: bool = False) -> None:
        """Refuse a current custodian key that no verified statement made current, and
        (``sealing``) one a disabled user still holds."""
        state = self.trust()
        if state is None:
            check_custodian_logged(self._db.audit, generation, public)
            return
        if state.current_custodian() != (generation, public):
            raise IntegrityError(
                _t(
                    "the current custodian key in the database (generation {generation}) is not"
                    " the one the signed custodian statements name: nothing will be sealed to "
                    "it; run `childvault audit verify` and alert the officers",
                    generation=generation,
                )
            )
        gone = sorted(n for n in state.holders.get(generation, ()) if not state.is_active(n))
        if sealing and gone:
            # A disabled user holds this key: nothing new is sealed to it until rotation.
            raise AccessDenied(
                _t(
                    "the custodian key is held by disabled user(s) {value}: an officer must run"
                    " `childvault keys rotate` before records can be written",
                    value=join(", ", gone),
                )
            )

    def index_tags(self, field: str, values: Sequence[str]) -> list[bytes]:
        """Truncated keyed blind-index tags of ``values`` for ``field``.

        A :class:`BlindIndexer` provider computes them (Vault: Transit ``hmac``
        with the pinned index-key version); otherwise HMAC-SHA256 under the
        vault's index key (sealed to every user like the database key).
        """
        if not values:
            return []
        indexer = self.shared() if issubclass(self._type, BlindIndexer) else None
        if isinstance(indexer, BlindIndexer):
            macs = indexer.hmac(field, [v.encode("utf-8") for v in values])
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
        """Close the provider's connection, if one was opened."""
        if isinstance(self._shared, ExternalKeyMaterial):
            self._shared.close()
