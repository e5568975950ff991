"""The state every facet of :class:`~._facade.Vault` shares: the session, whether it is
closed, and the services, each built on first use.

A real base class (no attribute stubs): each facet derives from it, and
:class:`~._facade.Vault` combines the facets.
"""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from childvault._i18n import _t
from childvault.keys import UsageError
from childvault.vault._schema import Schema
from childvault.vault._session import Session
from childvault.vault._svc_notices import NoticeService
from childvault.vault._svc_records import RecordService

if TYPE_CHECKING:
    # Imported when first used: see the properties of VaultBase below.
    from childvault.vault._svc_access import AccessService
    from childvault.vault._svc_audit import AuditService
    from childvault.vault._svc_export import ExportService
    from childvault.vault._svc_health import HealthService
    from childvault.vault._svc_lifecycle import LifecycleService
    from childvault.vault._svc_reconcile import ReconcileService
    from childvault.vault._svc_reports import ReportService
    from childvault.vault._svc_rotation import RotationService
    from childvault.vault._svc_users import UserService


class VaultBase:
    """An open vault's session and services, shared by the facets of :class:`Vault`."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._closed = False

    # The services, each made on first use: a command on a session imports and
    # builds only the ones it calls (issue 18: a command in <= 0.3 s), e.g.
    # `childvault list` never loads approvals, reports, rotation or export.

    @functools.cached_property
    def _notices(self) -> NoticeService:
        return NoticeService(self._session)

    @functools.cached_property
    def _records(self) -> RecordService:
        return RecordService(self._session, self._notices)

    @functools.cached_property
    def _audit(self) -> AuditService:
        from childvault.vault._svc_audit import AuditService

        return AuditService(self._session)

    @functools.cached_property
    def _users(self) -> UserService:
        from childvault.vault._svc_users import UserService

        return UserService(self._session)

    @functools.cached_property
    def _access(self) -> AccessService:
        from childvault.vault._svc_access import AccessService

        return AccessService(self._session, self._audit)

    @functools.cached_property
    def _lifecycle(self) -> LifecycleService:
        from childvault.vault._svc_lifecycle import LifecycleService

        return LifecycleService(self._session, self._notices, self._audit)

    @functools.cached_property
    def _rotation(self) -> RotationService:
        from childvault.vault._svc_rotation import RotationService

        return RotationService(self._session)

    @functools.cached_property
    def _reconcile(self) -> ReconcileService:
        from childvault.vault._svc_reconcile import ReconcileService

        return ReconcileService(self._session)

    @functools.cached_property
    def _reports(self) -> ReportService:
        from childvault.vault._svc_reports import ReportService

        return ReportService(self._session, self._audit, self._access)

    @functools.cached_property
    def _export(self) -> ExportService:
        from childvault.vault._svc_export import ExportService

        return ExportService(self._session, self._access)

    @functools.cached_property
    def _health(self) -> HealthService:
        from childvault.vault._svc_health import HealthService

        return HealthService(self._session, self._notices)

    def close(self) -> None:
        """Close the database (and the Vault session, if one was opened).

        Closing twice is harmless; any other call on a closed vault raises
        :class:`UsageError`.
        """
        if not self._closed:
            self._closed = True
            self._session.close()

    def _live(self, where: str) -> str:
        """``where`` if this vault is open; a closed one raises :class:`UsageError`."""
        if self._closed:
            raise UsageError(
                _t("{where}: this Vault is closed; open it again with Vault.open", where=where)
            )
        return where

    @property
    def vault_id(self) -> str:
        """This vault's random id."""
        return self._session.vault_id

    @property
    def user(self) -> str:
        """The acting user."""
        return self._session.user

    @property
    def roles(self) -> frozenset[str]:
        """The acting user's roles."""
        return self._session.roles

    @property
    def schema(self) -> Schema:
        """The vault's schema."""
        return self._session.schema

    @property
    def home(self) -> Path:
        """The home directory."""
        return self._session.home.path

    @property
    def witness_path(self) -> Path:
        """Where checkpoints are witnessed."""
        return self._session.witness_path

    @property
    def provider_kind(self) -> str:
        """The key provider's name in ``config.json``: ``"local"`` or ``"vault"``."""
        return self._session.keys.name

    def now(self) -> datetime:
        """The vault's clock (injectable for tests)."""
        return self._session.clock()
