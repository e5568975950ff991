"""The :class:`Vault` facade: the one entry point of the library.

It opens a vault as one unlocked user (a :class:`~._session.Session`) and
delegates every operation, in one line, to the service that owns it
(docs/architecture.md). Every operation that touches records appends its audit
entries in the same database transaction; an operation whose entry cannot be
written does not happen. Denied attempts are logged before the error is raised.

:class:`Vault` is composed of one facet class per area (``_facade_users``,
``_facade_records``, ``_facade_access``, ``_facade_audit``, ``_facade_lifecycle``,
``_facade_compliance``, ``_facade_settings``), each deriving from the one base class
that holds the session and services (``_facade_base``); making the session (init,
open, connect, upgrade) is in ``_facade_open``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childvault.keys import Identity
from childvault.vault._facade_access import AccessFacet
from childvault.vault._facade_audit import AuditFacet
from childvault.vault._facade_compliance import ComplianceFacet
from childvault.vault._facade_lifecycle import LifecycleFacet
from childvault.vault._facade_open import DEFAULTS as DEFAULTS
from childvault.vault._facade_open import _open_store as _open_store  # for server/_vault.py
from childvault.vault._facade_open import (
    connect_session,
    init_session,
    open_session,
    upgrade_vault,
)
from childvault.vault._facade_records import RecordsFacet
from childvault.vault._facade_settings import SettingsFacet
from childvault.vault._facade_users import UsersFacet
from childvault.vault._keyconfig import KeysConfig, LocalKeys, OpenBaoCredentials, OpenBaoKeys
from childvault.vault._session import Session as Session
from childvault.vault._svc_records import NewRecordInput
from childvault.vault._time import Clock, system_clock

if TYPE_CHECKING:
    from childvault.vault._results import UpgradeReport

__all__ = ["LocalKeys", "NewRecordInput", "OpenBaoCredentials", "OpenBaoKeys", "Vault"]


class Vault(
    UsersFacet,
    RecordsFacet,
    AccessFacet,
    AuditFacet,
    LifecycleFacet,
    ComplianceFacet,
    SettingsFacet,
):
    """An open vault, acting as one unlocked user.

    Create one with :meth:`Vault.init` (a new vault) or :meth:`Vault.open`.
    Use it as a context manager, or call :meth:`close`.
    """

    # Each facet derives from _facade_base.VaultBase, which defines the state
    # (session, closed flag, services) once: no facet declares or stubs it.

    @classmethod
    def init(
        cls,
        home: Path | str,
        *,
        institution: str,
        admin: str,
        admin_passphrase: str,
        keys: KeysConfig | None = None,
        schema: Path | None = None,
        witness: Path | None = None,
        clock: Clock = system_clock,
        provider: str | None = None,
        vault_settings: Mapping[str, Any] | None = None,
        store_dsn: str | None = None,
        store_dsn_file: Path | None = None,
    ) -> Vault:
        """Create a new vault in an empty ``home`` with its first admin; return it opened.

        The rows go to the SQLCipher file in ``home`` unless a PostgreSQL DSN is
        given: ``store_dsn_file`` (a file holding it; the config keeps its path)
        or ``store_dsn`` (then every open needs ``CHILDVAULT_DSN``). The database
        must be empty; its role becomes the owner of the tables (docs/scale.md).

        ``keys`` chooses the key provider: :class:`LocalKeys` (the default) or
        :class:`OpenBaoKeys`.
        """
        # provider and vault_settings are accepted and ignored, as before: `keys` chooses.
        return cls(
            init_session(
                home,
                institution=institution,
                admin=admin,
                admin_passphrase=admin_passphrase,
                keys=keys,
                schema=schema,
                witness=witness,
                clock=clock,
                store_dsn=store_dsn,
                store_dsn_file=store_dsn_file,
            )
        )

    @classmethod
    def open(
        cls,
        home: Path | str,
        user: str | None = None,
        passphrase: str | None = None,
        *,
        identity: Identity | None = None,
        clock: Clock = system_clock,
        credentials: OpenBaoCredentials | None = None,
    ) -> Vault:
        """Open the vault in ``home`` as ``user`` (unlocking with ``passphrase``).

        Pass ``identity=`` instead of user and passphrase to reuse an unlocked
        identity (embedding applications, tests). ``credentials`` are the
        acting user's OpenBao / Vault credentials (OpenBao keys only; default:
        ``VAULT_TOKEN``).
        """
        return cls(
            open_session(
                home, user, passphrase, identity=identity, clock=clock, credentials=credentials
            )
        )

    @classmethod
    def connect(
        cls,
        url: str,
        identity: Identity,
        *,
        clock: Clock = system_clock,
        credentials: OpenBaoCredentials | None = None,
        verify: bool | str = True,
    ) -> Vault:
        """Open the vault served by ``childvault serve`` at ``url`` as ``identity``.

        The same facade over the remote backend (docs/server.md): every
        cryptographic operation runs here, the server stores and checks.
        ``verify`` is the TLS CA bundle (or True for the system's). The
        identity's anchor must name the served vault.
        """
        return cls(
            connect_session(url, identity, clock=clock, credentials=credentials, verify=verify)
        )

    @classmethod
    def upgrade(
        cls,
        home: Path | str,
        user: str,
        passphrase: str,
        *,
        confirm: Callable[[str], bool],
        clock: Clock = system_clock,
        migration_dsn: str | None = None,
    ) -> UpgradeReport:
        """``childvault upgrade`` as ``user``: schema, then signed statements for what exists.

        ``migration_dsn`` (a PostgreSQL store): the migration role's DSN; the
        schema is brought up to date as that role first (the service role of
        the vault's DSN gets its grants). The SQLCipher schema is migrated on
        every open. Then :meth:`UserService.upgrade` runs the acting user's
        step (``confirm`` is asked to confirm the anchor's fingerprint).
        """
        return upgrade_vault(
            home, user, passphrase, confirm=confirm, clock=clock, migration_dsn=migration_dsn
        )

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
