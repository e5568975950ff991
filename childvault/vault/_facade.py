"""The :class:`Vault` facade: the one entry point of the library.

It opens a vault as one unlocked user (a :class:`~._session.Session`) and
delegates every operation, in one line, to the service that owns it
(docs/architecture.md). Every operation that touches records appends its audit
entries in the same database transaction; an operation whose entry cannot be
written does not happen. Denied attempts are logged before the error is raised.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from childvault._i18n import _t, join
from childvault.keys import ConfigError, Identity, KeySlots, NotFound, UsageError, check_user_name
from childvault.keys._files import atomic_write
from childvault.vault import _check as check
from childvault.vault import _settings, _statements
from childvault.vault._audit import Event, VerifyReport
from childvault.vault._backend import Backend, UserRow
from childvault.vault._check import REQUEST_STATUSES, RequestStatus
from childvault.vault._config import Config, Home, make_home, read_dsn_file
from childvault.vault._consent import Consent
from childvault.vault._keyconfig import (
    KeysConfig,
    LocalKeys,
    OpenBaoCredentials,
    OpenBaoKeys,
    keys_from_config,
)
from childvault.vault._registrations import (
    append_with_statements,
    enrol_with_invite,
    invite_summary,
    is_upgraded,
    read_invite,
    register_statement,
    user_detail,
    with_statement,
)
from childvault.vault._schema import Schema
from childvault.vault._session import Session, new_id
from childvault.vault._sqlcipher import SQLCipherBackend
from childvault.vault._statements import Anchor
from childvault.vault._svc_incidents import IncidentService
from childvault.vault._svc_notices import NoticeService, packaged_notice_sha256
from childvault.vault._svc_records import NewRecordInput, RecordPage, RecordService
from childvault.vault._svc_rights import RightsService
from childvault.vault._time import Clock, iso, parse_iso, system_clock
from childvault.vault._types import Approval, ImportReport, RecordInfo, RequestInfo, UserInfo

if TYPE_CHECKING:
    # The result types are imported where a method builds one, and the services
    # when first used (the properties of Vault below): see Vault.__init__.
    from childvault.vault._results import (
        AnonymizedExport,
        AuditReconciliation,
        BackupReport,
        DecommissionCosign,
        DecommissionReport,
        DisabledUser,
        GcReport,
        Incident,
        InviteSummary,
        KeyRenewal,
        KeyRenewalRequest,
        RebaselineReport,
        RightsRequest,
        RotationReport,
        SweepReport,
        Transfer,
        UpgradeReport,
        UserInvite,
        VaultSetting,
    )
    from childvault.vault._svc_access import AccessService, Basis
    from childvault.vault._svc_audit import AuditService
    from childvault.vault._svc_export import ExportService
    from childvault.vault._svc_health import HealthService
    from childvault.vault._svc_lifecycle import LifecycleService
    from childvault.vault._svc_reconcile import ReconcileService
    from childvault.vault._svc_reports import ReportService
    from childvault.vault._svc_rotation import RotationService
    from childvault.vault._svc_users import UserService

__all__ = ["LocalKeys", "NewRecordInput", "OpenBaoCredentials", "OpenBaoKeys", "Vault"]

#: The settings a new vault starts with (limits of approvals, the notice version).
DEFAULTS = {
    "max_ttl_s": str(8 * 3600),
    "default_ttl_s": str(3600),
    "max_records": "50",
    "max_uses": "10",
    "notice_version": "2026-1",
}

#: Settings that are whole numbers (seconds or counts).
_INT_SETTINGS = frozenset({"max_ttl_s", "default_ttl_s", "max_records", "max_uses"})

#: What :meth:`Vault.setting` reads besides the signed settings (``_settings.SPECS``):
#: the vault's own ``meta`` rows that are settings (not its internal rows).
_META_SETTINGS = frozenset(
    {
        "accepting_records",
        "created_at",
        "institution",
        "notice_version",
        "provider",
        "schema_digest",
        "vault_id",
    }
)


class Vault:
    """An open vault, acting as one unlocked user.

    Create one with :meth:`Vault.init` (a new vault) or :meth:`Vault.open`.
    Use it as a context manager, or call :meth:`close`.
    """

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
        where = "Vault.init"
        home = check.path_arg(where, "home", home)
        check.str_arg(where, "institution", institution)
        check.str_arg(where, "admin", admin)
        check.str_arg(where, "admin_passphrase", admin_passphrase, data=True)
        if keys is not None and not isinstance(keys, LocalKeys | OpenBaoKeys):
            raise UsageError(_t("{where}: 'keys' must be LocalKeys or OpenBaoKeys", where=where))
        schema = check.opt_path(where, "schema", schema)
        witness = check.opt_path(where, "witness", witness)
        if not callable(clock):
            raise UsageError(
                _t("{where}: 'clock' must be a function returning an aware datetime", where=where)
            )
        check.str_arg(where, "store_dsn", store_dsn, optional=True)
        store_dsn_file = check.opt_path(where, "store_dsn_file", store_dsn_file)
        check_user_name(admin)
        keys = keys if keys is not None else LocalKeys()
        if not institution.strip() or len(institution) > 200:
            raise UsageError(_t("--institution must be a non-empty name of at most 200 characters"))
        loaded = Schema.load(Path(schema)) if schema else Schema.default()
        store_doc, dsn = _store_choice(store_dsn, store_dsn_file)
        if isinstance(keys, OpenBaoKeys):
            # Without the `vault` extra the provider cannot be built when the vault
            # opens below: refuse (ExtraRequired) before the home exists, not after.
            from childvault.keys._openbao import load

            load("_provider")
        h = make_home(Path(home))
        try:
            now = clock()
            vault_id = new_id()
            atomic_write(h.schema, loaded.source, mode=0o600)
            ident = Identity.generate(admin)
            # The anchor goes inside the admin's passphrase-encrypted part (docs/trust.md).
            anchor = Anchor(vault_id, admin, ident.public.signing_key)
            ident.anchor = anchor.to_json()
            ident.save(h.identity(admin), admin_passphrase)
            secrets_ = {"db": secrets.token_bytes(32), "index": secrets.token_bytes(32)}
            slots = KeySlots(h.keyslots)
            slots.create(vault_id)
            slots.add(ident.public, vault_id, secrets_)
            config = Config(
                vault_id=vault_id,
                institution=institution.strip(),
                provider=keys.name,
                witness=str(Path(witness).resolve()) if witness else None,
                vault_settings=keys.settings_json(),
                store=store_doc,
            )
            store = _open_store(h, dsn, secrets_["db"], create=True)
            store.audit.signer = ident  # the founding entries carry the admin's signature
            with store.transaction():
                for key, value in {
                    **DEFAULTS,
                    "vault_id": vault_id,
                    "institution": config.institution,
                    "provider": keys.name,
                    "schema_digest": loaded.digest,
                    "created_at": iso(now),
                    "accepting_records": "1",
                    "notices": json.dumps(
                        {
                            DEFAULTS["notice_version"]: {
                                "sha256": packaged_notice_sha256(),
                                "published_at": iso(now),
                                "by": admin,
                            }
                        }
                    ),
                }.items():
                    store.meta.set(key, value)
                store.users.add(
                    UserRow(
                        admin,
                        ("admin",),
                        ident.public.encryption_key,
                        ident.public.signing_key,
                        iso(now),
                        admin,
                    )
                )
                # The founding admin's registration, self-signed with the anchor key.
                founding = _statements.sign(
                    register_statement(vault_id, iso(now), admin, ["admin"], ident.public), [ident]
                )
                append_with_statements(
                    store,
                    [
                        (Event(admin, "vault.init", detail={"provider": keys.name}), None),
                        (
                            Event(
                                admin,
                                "user.add",
                                detail=with_statement(
                                    user_detail(admin, ["admin"], ident.public), founding
                                ),
                            ),
                            founding,
                        ),
                    ],
                    now,
                )
            config.save(h)
        except BaseException:
            # A half-made home would confuse the next `init`: remove what we made.
            _remove_tree(h.path)
            raise
        return cls(Session(h, config, ident, store, secrets_, loaded, clock, keys))

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
        where = "Vault.open"
        home = check.path_arg(where, "home", home)
        check.str_arg(where, "user", user, optional=True)
        check.str_arg(where, "passphrase", passphrase, optional=True, data=True)
        check.instance(where, "identity", identity, Identity, optional=True)
        check.instance(where, "credentials", credentials, OpenBaoCredentials, optional=True)
        if not callable(clock):
            raise UsageError(
                _t("{where}: 'clock' must be a function returning an aware datetime", where=where)
            )
        h = Home(Path(home))
        config = Config.load(h)
        if identity is None:
            if user is None or passphrase is None:
                raise UsageError(
                    _t("give the acting user and passphrase (or an unlocked identity)")
                )
            check_user_name(user)
            path = h.identity(user)
            if not path.exists():
                raise NotFound(
                    _t(
                        "unknown user {user!r} in {path}: check --as / CHILDVAULT_USER, or ask an "
                        "admin to run `childvault user add`",
                        user=user,
                        path=h.path,
                    )
                )
            identity = Identity.load(path, passphrase)
        return cls._open_as(h, config, identity, clock, credentials)

    @classmethod
    def _open_as(
        cls,
        h: Home,
        config: Config,
        identity: Identity,
        clock: Clock,
        credentials: OpenBaoCredentials | None,
        *,
        upgrading: bool = False,
    ) -> Vault:
        """Open as the unlocked ``identity``; refuse a vault not upgraded unless ``upgrading``."""
        secrets_ = KeySlots(h.keyslots).open(identity, config.vault_id)
        store = _open_store(h, config.store_dsn(h), secrets_["db"])
        try:
            if not upgrading and not is_upgraded(store):
                raise ConfigError(
                    _t(
                        "this vault was made by an earlier childvault and has no signed "
                        "statements yet: an admin must run `childvault upgrade` "
                        "(docs/operators.md)"
                    )
                )
            if store.meta.get("vault_id") != config.vault_id:
                raise ConfigError(
                    _t(
                        "{config} does not belong to the database {store}",
                        config=h.config,
                        store=_where(store),
                    )
                )
            if store.meta.get("provider") != config.provider:
                raise ConfigError(
                    _t("{config} names another key provider than the database", config=h.config)
                )
            schema = Schema.load(h.schema)
            if schema.digest != store.meta.get("schema_digest"):
                raise ConfigError(
                    _t(
                        "{schema} differs from the schema this vault was created with",
                        schema=h.schema,
                    )
                )
            keys = keys_from_config(config)
            return cls(
                Session(h, config, identity, store, secrets_, schema, clock, keys, credentials)
            )
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Close the database (and the Vault session, if one was opened).

        Closing twice is harmless; any other call on a closed vault raises
        :class:`UsageError`.
        """
        if not self._closed:
            self._closed = True
            self._session.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self, where: str) -> str:
        """``where`` if this vault is open; a closed one raises :class:`UsageError`."""
        if self._closed:
            raise UsageError(
                _t("{where}: this Vault is closed; open it again with Vault.open", where=where)
            )
        return where

    # ---------------------------------------------------------------- properties

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

    # The literal keys overlap ``str`` on purpose (as in typeshed's ``open``).
    @overload
    def setting(  # type: ignore[overload-overlap]
        self, key: Literal["max_ttl_s", "default_ttl_s", "max_records", "max_uses"]
    ) -> int: ...
    @overload
    def setting(self, key: Literal["created_at"]) -> datetime: ...  # type: ignore[overload-overlap]
    @overload
    def setting(self, key: Literal["accepting_records"]) -> bool: ...  # type: ignore[overload-overlap]
    @overload
    def setting(self, key: str) -> str: ...
    def setting(self, key: str) -> int | datetime | bool | str:
        """A vault-wide setting, typed: the approval limits (``max_ttl_s``,
        ``default_ttl_s``, ``max_records``, ``max_uses``) as ``int``,
        ``created_at`` as an aware ``datetime``, ``accepting_records`` as
        ``bool``, the others (``notice_version``, ``institution``, ...) as ``str``.
        An unknown name is a :class:`UsageError` naming the known ones."""
        w = self._live("Vault.setting")
        check.str_arg(w, "key", key)
        if key not in _settings.SPECS and key not in _META_SETTINGS:
            # A name the caller got wrong, as any unknown enum value (issue 18).
            raise UsageError(
                _t(
                    "unknown setting {key!r}: one of {keys}",
                    key=key,
                    keys=join(", ", sorted({*_settings.SPECS, *_META_SETTINGS})),
                )
            )
        value = self._session.setting(key)
        if key in _INT_SETTINGS:
            return int(value)
        if key == "created_at":
            return parse_iso(value)
        if key == "accepting_records":
            return value == "1"
        return value

    def index_tags(self, field: str, values: Sequence[str]) -> list[bytes]:
        """Truncated keyed blind-index tags of ``values`` for ``field``."""
        w = self._live("Vault.index_tags")
        check.str_arg(w, "field", field)
        values = check.str_seq(w, "values", values)
        return self._session.keys.index_tags(field, values)

    # ---------------------------------------------------------------- operations

    def add_user(
        self, name: str, roles: Sequence[str], passphrase: str, *, now: datetime | None = None
    ) -> UserInfo:
        """Admin: enrol a user with ``roles``, writing their identity file.

        The first officer receives the newly created custodian key; later
        officers receive it when an existing officer runs :meth:`share_custodian`.
        """
        w = self._live("Vault.add_user")
        check.str_arg(w, "name", name)
        roles = check.str_seq(w, "roles", roles)
        check.str_arg(w, "passphrase", passphrase, data=True)
        check.datetime_arg(w, "now", now)
        return self._users.add_user(name, roles, passphrase, now=now)

    def share_custodian(self, name: str, *, now: datetime | None = None) -> None:
        """Officer: give officer ``name`` the custodian key so they can approve.

        Rewrites ``name``'s key slot with the database and index keys plus every
        custodian generation the acting officer holds.
        """
        w = self._live("Vault.share_custodian")
        check.str_arg(w, "name", name)
        check.datetime_arg(w, "now", now)
        self._users.share_custodian(name, now=now)

    def disable_user(
        self, name: str, *, reason: str | None = None, now: datetime | None = None
    ) -> DisabledUser:
        """Admin: disable ``name`` (signed); removes their key slot and revokes their grants."""
        w = self._live("Vault.disable_user")
        check.str_arg(w, "name", name)
        check.str_arg(w, "reason", reason, optional=True)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import DisabledUser

        return DisabledUser.from_json(self._users.disable_user(name, reason=reason, now=now))

    def users(self) -> list[UserInfo]:
        """Every registered user with roles and (for signers) their verifier key."""
        self._live("Vault.users")
        return self._users.users()

    def add_record(
        self,
        type_name: str,
        values: Mapping[str, str],
        consent: Consent,
        *,
        now: datetime | None = None,
    ) -> str:
        """Staff: validate, encrypt and store one record; return its id."""
        w = self._live("Vault.add_record")
        check.str_arg(w, "type_name", type_name)
        check.mapping_of_str(w, "values", values)
        check.consent_arg(w, "consent", consent)
        check.datetime_arg(w, "now", now)
        return self._records.add_record(type_name, values, consent, now=now)

    def add_records(
        self, items: Sequence[NewRecordInput], *, now: datetime | None = None
    ) -> list[str]:
        """Staff: add several records in one transaction (all or nothing)."""
        w = self._live("Vault.add_records")
        check.new_records(w, "items", items)
        check.datetime_arg(w, "now", now)
        return self._records.add_records(items, now=now)

    def import_file(
        self,
        path: Path | str,
        *,
        type_name: str | None = None,
        skip_invalid: bool = False,
        fmt: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        now: datetime | None = None,
        encoding: str | None = None,
        allow_duplicates: bool = False,
        confirm_backdated: bool = False,
    ) -> ImportReport:
        """Staff: import a CSV or JSON Lines file, streaming, in batches; resumable.

        First every row is validated; if any is invalid and ``skip_invalid`` is
        false nothing is written and :class:`ImportFailed` lists the bad rows.
        Rows are then written in batches, each batch in one transaction with its
        log entries and the import's progress, so an interrupted import resumes
        where it stopped and never duplicates a row.

        ``encoding``: ``utf-8`` (default, a byte-order mark is dropped), ``gbk``
        or ``gb18030``. Column names may be the schema's Chinese labels. A row
        with the same identity number (compared by blind index) as an earlier
        row or a record of the vault is invalid unless ``allow_duplicates``.
        A row whose ``consented_at`` is beyond the back-dating window is invalid
        unless it carries ``consent_form_sha256`` and an officer imports with
        ``confirm_backdated`` (docs/compliance.md, M-12).
        """
        w = self._live("Vault.import_file")
        path = check.path_arg(w, "path", path)
        check.str_arg(w, "type_name", type_name, optional=True)
        check.bool_arg(w, "skip_invalid", skip_invalid)
        check.choice(w, "fmt", fmt, ("csv", "jsonl"), optional=True)
        check.callable_arg(w, "progress", progress)
        check.datetime_arg(w, "now", now)
        check.bool_arg(w, "confirm_backdated", confirm_backdated)
        return self._records.import_file(
            path,
            type_name=type_name,
            skip_invalid=skip_invalid,
            fmt=fmt,
            progress=progress,
            now=now,
            encoding=encoding,
            allow_duplicates=allow_duplicates,
            confirm_backdated=confirm_backdated,
        )

    def list_records(self, *, now: datetime | None = None) -> Iterator[RecordInfo]:
        """Bookkeeping of every record (never a value); the listing is logged."""
        w = self._live("Vault.list_records")
        check.datetime_arg(w, "now", now)
        return self._records.list_records(now=now)

    def record_info(self, record_id: str) -> RecordInfo:
        """Bookkeeping of one record."""
        w = self._live("Vault.record_info")
        check.str_arg(w, "record_id", record_id)
        return self._records.record_info(record_id)

    def find(
        self, field: str, value: str, *, type_name: str | None = None, now: datetime | None = None
    ) -> list[str]:
        """Staff: candidate records whose ``field`` may equal ``value`` (blind index).

        Tags are truncated, so the list can hold false positives; they are only
        told apart after an approved read. Refuses fields the schema does not
        mark ``searchable`` (never low-entropy ones). The lookup is logged.
        """
        w = self._live("Vault.find")
        check.str_arg(w, "field", field)
        check.str_arg(w, "value", value, data=True)
        check.str_arg(w, "type_name", type_name, optional=True)
        check.datetime_arg(w, "now", now)
        return self._records.find(field, value, type_name=type_name, now=now)

    def request_access(
        self,
        records: Sequence[str],
        fields: Sequence[str],
        purpose: str,
        reason: str,
        *,
        now: datetime | None = None,
        basis: Basis | None = None,
    ) -> str:
        """File an access request for named records, fields and purpose; return its id.

        ``basis`` names a statutory basis instead of consent (:class:`Basis`).
        """
        w = self._live("Vault.request_access")
        records = check.str_seq(w, "records", records)
        fields = check.str_seq(w, "fields", fields)
        check.str_arg(w, "purpose", purpose)
        check.str_arg(w, "reason", reason)
        check.datetime_arg(w, "now", now)
        if basis is not None:
            from childvault.vault._svc_access import Basis

            check.instance(w, "basis", basis, Basis)
            for attr in ("kind", "link", "recipient", "provision", "assessment"):
                # Each lands in the request's log detail.
                check.str_arg(w, f"basis.{attr}", getattr(basis, attr), optional=attr != "kind")
        return self._access.request_access(records, fields, purpose, reason, now=now, basis=basis)

    def requests(self, status: RequestStatus | None = "pending") -> list[RequestInfo]:
        """Access requests with ``status`` (``None`` for all); logged.

        Officers and admins see every request; staff see their own, with the
        decision and the officer's reason, so they learn why one was denied.
        """
        w = self._live("Vault.requests")
        check.choice(w, "status", status, REQUEST_STATUSES, optional=True)
        return self._access.requests(status)

    def approve(
        self,
        request_id: str,
        *,
        ttl: timedelta | None = None,
        uses: int = 1,
        now: datetime | None = None,
    ) -> Approval:
        """Officer: approve a pending request and issue its approval token.

        Refuses (logged): the officer's own request, a purpose a record did not
        consent to, a record past retention or deleted, more records than the
        cap, a TTL above the maximum. The approval and a signed checkpoint are
        committed together; the checkpoint is then appended to the witness file.
        """
        w = self._live("Vault.approve")
        check.str_arg(w, "request_id", request_id)
        check.timedelta_arg(w, "ttl", ttl)
        check.int_arg(w, "uses", uses)
        check.datetime_arg(w, "now", now)
        return self._access.approve(request_id, ttl=ttl, uses=uses, now=now)

    def deny(self, request_id: str, reason: str, *, now: datetime | None = None) -> None:
        """Officer: deny a pending request with a reason."""
        w = self._live("Vault.deny")
        check.str_arg(w, "request_id", request_id)
        check.str_arg(w, "reason", reason)
        check.datetime_arg(w, "now", now)
        self._access.deny(request_id, reason, now=now)

    def revoke(self, grant_id: str, *, now: datetime | None = None) -> None:
        """Officer: revoke a grant; later reads with its token are denied."""
        w = self._live("Vault.revoke")
        check.str_arg(w, "grant_id", grant_id)
        check.datetime_arg(w, "now", now)
        self._access.revoke(grant_id, now=now)

    def read_with_grant(
        self,
        token: str,
        records: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
        *,
        now: datetime | None = None,
    ) -> dict[str, dict[str, str]]:
        """Read approved fields with an approval token.

        Verifies the token (signature by a registered officer, vault, requester,
        time window, uses, revocation, scope), appends and commits the log entry,
        then decrypts. Any failure raises the opaque :class:`ApprovalInvalid`
        after logging a denied attempt with the reason.
        """
        w = self._live("Vault.read_with_grant")
        check.str_arg(w, "token", token, data=True)
        records = check.opt_str_seq(w, "records", records)
        fields = check.opt_str_seq(w, "fields", fields)
        check.datetime_arg(w, "now", now)
        return self._access.read_with_grant(token, records, fields, now=now)

    def notices(self) -> dict[str, dict[str, str]]:
        """The register of published notices: version -> sha256, date, publisher."""
        self._live("Vault.notices")
        return self._notices.notices()

    def notice_sha256(self, version: str) -> str:
        """The SHA-256 of a published notice version; refuse an unpublished one."""
        w = self._live("Vault.notice_sha256")
        check.str_arg(w, "version", version)
        return self._notices.notice_sha256(version)

    def publish_notice(
        self,
        version: str,
        text: bytes,
        *,
        now: datetime | None = None,
        non_substantive: bool = False,
    ) -> dict[str, str]:
        """Admin: register a notice text (P-10) and make it the current version.

        Records consented under another version need fresh consent before an
        approval (``consent renew``) unless the change is ``non_substantive``.
        The text must name every P-10 item, the refusal option and the
        responsible person's contact. Publishing is logged with the text's hash.
        """
        w = self._live("Vault.publish_notice")
        check.str_arg(w, "version", version)
        check.instance(w, "text", text, bytes)
        check.datetime_arg(w, "now", now)
        check.instance(w, "non_substantive", non_substantive, bool)
        return self._notices.publish_notice(version, text, now=now, non_substantive=non_substantive)

    def health(self) -> list[tuple[str, str, str]]:
        """(check, ok|warn|fail, message) about users, keys and the provider, for doctor."""
        self._live("Vault.health")
        return self._health.health()

    def checkpoint(self, *, now: datetime | None = None) -> str:
        """Officer or admin: sign a checkpoint of the whole log and witness it."""
        w = self._live("Vault.checkpoint")
        check.datetime_arg(w, "now", now)
        return self._audit.checkpoint(now=now)

    def backup(self, out: Path | str) -> BackupReport:
        """Officer or admin: a consistent copy of this vault in the new directory ``out``
        (database by the online backup API, key slots, config, schema, identities,
        witness); safe while other commands run. See docs/operators.md."""
        from childvault.vault._backup import backup

        w = self._live("Vault.backup")
        out = check.path_arg(w, "out", out)
        self._session.require(
            ("officer", "admin"),
            "vault.backup",
            self._session.now(None),
            _t("backing up the vault"),
        )
        from childvault.vault._results import BackupReport

        return BackupReport.from_json(backup(self._session, Path(out)))

    def rebaseline(self, *, now: datetime | None = None) -> RebaselineReport:
        """Officer: after restoring a backup, append a signed restore note to the
        witness (which entries were lost) so approvals resume; see docs/operators.md."""
        w = self._live("Vault.rebaseline")
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import RebaselineReport

        return RebaselineReport.from_json(self._audit.rebaseline(now=now))

    def verify_audit(
        self, *, progress: Callable[[int], None] | None = None, full: bool = False
    ) -> VerifyReport:
        """Verify the whole log against its stored and witnessed checkpoints, then
        check that every registered user and custodian key was put there by a
        logged operation (an insider editing those tables directly is caught).

        Actor signatures and signed statements already verified by this user
        (their own signed state, bound to the chain's hash) are not checked
        again unless ``full`` is true; the chain and checkpoints always are."""
        w = self._live("Vault.verify_audit")
        check.callable_arg(w, "progress", progress)
        check.bool_arg(w, "full", full)
        return self._audit.verify_audit(progress=progress, full=full)

    def audit_entries(self, *, record: str | None = None) -> Iterator[dict[str, Any]]:
        """Officer or admin: the log entries (optionally about one record), with hashes."""
        w = self._live("Vault.audit_entries")
        check.str_arg(w, "record", record, optional=True)
        return self._audit.audit_entries(record=record)

    def reconcile_vault_audit(
        self, vault_audit: Path, *, device: str = "childvault", now: datetime | None = None
    ) -> AuditReconciliation:
        """Officer or admin, Vault mode: the Transit decrypts in Vault's file audit
        log that no childvault approval accounts for (``audit reconcile``)."""
        w = self._live("Vault.reconcile_vault_audit")
        vault_audit = check.path_arg(w, "vault_audit", vault_audit)
        check.str_arg(w, "device", device)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import AuditReconciliation

        return AuditReconciliation.from_json(
            self._reconcile.reconcile(vault_audit, device=device, now=now)
        )

    def signer_vkeys(self) -> list[str]:
        """Verifier keys (signed-note vkey form) of every checkpoint signer."""
        self._live("Vault.signer_vkeys")
        return self._audit.signer_vkeys()

    def correct(
        self,
        record_id: str,
        field: str,
        value: str,
        *,
        rights_request: str | None = None,
        now: datetime | None = None,
    ) -> int:
        """Officer: store a corrected value as a new field version (P-19).

        The new value gets a new key; the record's wrapped keys are replaced so
        the old version's key is gone (local: resealed without it; Vault: its
        salt destroyed). The log records that a correction happened, never the
        values. Returns the new field version. ``rights_request``: the open
        correction request (``rights_open``) this answers; it is annotated (and
        so no longer overdue), and stays open for an officer to close.
        """
        w = self._live("Vault.correct")
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "field", field)
        check.str_arg(w, "value", value, data=True)
        check.str_arg(w, "rights_request", rights_request, optional=True)
        check.datetime_arg(w, "now", now)
        rights = RightsService(self._session)
        if rights_request is not None:
            rights.check_link(rights_request, "record.correct", record_id)
        version = self._lifecycle.correct(record_id, field, value, now=now)
        if rights_request is not None:
            rights.link(rights_request, "record.correct", record_id, now=now)
        return version

    def delete(
        self,
        record_id: str,
        reason: str,
        *,
        category: str = "request",
        rights_request: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Officer or admin: crypto-shred a record, leaving a tombstone (P-20).

        The rows (sealed values, wrapped keys, index tags) are removed and the
        tombstone and log entry written in one transaction; then the provider
        destroys what it holds outside the database (Vault: the record's salts).
        ``reason`` stays in the tombstone only; the log gets the ``category``.
        ``rights_request``: the open deletion request this answers; it is
        annotated and closed as ``done``.
        """
        w = self._live("Vault.delete")
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "reason", reason)
        check.str_arg(w, "category", category)
        check.str_arg(w, "rights_request", rights_request, optional=True)
        check.datetime_arg(w, "now", now)
        rights = RightsService(self._session)
        if rights_request is not None:
            rights.check_link(rights_request, "record.delete", record_id)
        self._lifecycle.delete(record_id, reason, category=category, now=now)
        if rights_request is not None:
            rights.link(rights_request, "record.delete", record_id, now=now)

    def withdraw_consent(
        self, record_id: str, *, reason: str = "consent withdrawn", now: datetime | None = None
    ) -> None:
        """Officer or admin: consent withdrawn, so the record is crypto-shredded (P-20)."""
        w = self._live("Vault.withdraw_consent")
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "reason", reason)
        check.datetime_arg(w, "now", now)
        self._lifecycle.withdraw_consent(record_id, reason=reason, now=now)

    def update_consent(
        self, record_id: str, consent: Consent, *, now: datetime | None = None
    ) -> None:
        """Officer: record a new consent (more purposes, or a new notice version).

        The age rule (M-12) is checked against the record's date of birth, which
        the officer's process decrypts for that purpose only; the check and the
        consent change are logged.
        """
        w = self._live("Vault.update_consent")
        check.str_arg(w, "record_id", record_id)
        check.consent_arg(w, "consent", consent)
        check.datetime_arg(w, "now", now)
        self._lifecycle.update_consent(record_id, consent, now=now)

    def consent_of(self, record_id: str) -> Consent:
        """The record's current consent."""
        w = self._live("Vault.consent_of")
        check.str_arg(w, "record_id", record_id)
        return self._lifecycle.consent_of(record_id)

    def retention_sweep(self, *, dry_run: bool = False, now: datetime | None = None) -> SweepReport:
        """Admin or officer: crypto-shred every record past its retention date (P-12).

        Also completes deletions whose provider-side destruction was interrupted.
        """
        w = self._live("Vault.retention_sweep")
        check.bool_arg(w, "dry_run", dry_run)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import SweepReport

        return SweepReport.from_json(self._lifecycle.retention_sweep(dry_run=dry_run, now=now))

    def decommission(self, *, confirm: bool, now: datetime | None = None) -> DecommissionReport:
        """Admin: stop collection, shred every record, sign a final checkpoint (P-23).

        Writes ``decommission-report.json`` into the home (no child data).
        """
        w = self._live("Vault.decommission")
        check.bool_arg(w, "confirm", confirm)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import DecommissionReport

        return DecommissionReport.from_json(self._lifecycle.decommission(confirm=confirm, now=now))

    def rotate_keys(
        self,
        *,
        progress: Callable[[int, int], None] | None = None,
        now: datetime | None = None,
        trim: bool = False,
        rekey: bool = False,
    ) -> RotationReport:
        """Rotate the key that wraps every record's keys; resumable.

        Local provider (an officer): a new custodian key pair is sealed to every
        officer, every record box is resealed to it, then the old pair is
        destroyed, so backups taken before become unreadable. Vault provider
        (an admin): the Transit key is rotated, every wrapped key is rewrapped
        inside Vault (no plaintext), then older key versions are retired, and
        with ``trim`` deleted from Vault (docs/vault.md, key rotation).
        ``rekey`` (local provider): then re-encrypt every live field under a new
        field key, so earlier approval tokens open nothing stored from then on.
        """
        w = self._live("Vault.rotate_keys")
        check.callable_arg(w, "progress", progress)
        check.datetime_arg(w, "now", now)
        check.bool_arg(w, "trim", trim)
        check.bool_arg(w, "rekey", rekey)
        report = self._rotation.rotate_keys(progress=progress, now=now, trim=trim, rekey=rekey)
        from childvault.vault._results import RotationReport

        return RotationReport.from_json(report)

    def prove_entry(self, seq: int, *, now: datetime | None = None) -> dict[str, Any]:
        """Officer or admin: an inclusion proof of log entry ``seq`` (``audit prove``).

        If the latest checkpoint does not cover the entry yet, a new one is
        signed (and witnessed) first. The result is a self-contained document
        (format :data:`ENTRY_PROOF_FORMAT`) that :func:`verify_entry_proof`
        checks without the database: the entry as its exact canonical JSON
        text, its leaf hash, the RFC 6962 audit path and the signed checkpoint.
        """
        w = self._live("Vault.prove_entry")
        check.int_arg(w, "seq", seq)
        check.datetime_arg(w, "now", now)
        return self._reports.prove_entry(seq, now=now)

    def subject_report(
        self,
        record_id: str,
        token: str,
        *,
        rights_request: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Subject-access report (M-17, P-19) for the child or guardian.

        ``token`` is an approval token issued to the acting user for this
        record: the data is read through :meth:`read_with_grant`, so the token
        is verified and the read is logged like any other; the report discloses
        exactly the granted fields. The report also gives the record's consent
        and retention and every log entry about the record, each with an
        RFC 6962 inclusion proof against the latest signed checkpoint, and is
        logged as ``report.subject`` with a salted commitment to its content.

        An officer or admin signs a new checkpoint first, so every entry is
        proven. Staff cannot sign: entries newer than the latest checkpoint
        (at least the report's own read) are marked ``"checkpointed": false``;
        an officer completes the proofs with :meth:`complete_subject_report`.
        Check the result with :func:`verify_subject_report`. ``rights_request``:
        the open access request (查询/复制) this answers; it is annotated and
        closed as ``done``.
        """
        w = self._live("Vault.subject_report")
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "token", token, data=True)
        check.str_arg(w, "rights_request", rights_request, optional=True)
        check.datetime_arg(w, "now", now)
        rights = RightsService(self._session)
        if rights_request is not None:
            rights.check_link(rights_request, "report.subject", record_id)
        report = self._reports.subject_report(record_id, token, now=now)
        if rights_request is not None:
            rights.link(
                rights_request, "report.subject", record_id, grant=report["grant"]["id"], now=now
            )
        return report

    def complete_subject_report(
        self, report: Mapping[str, Any], *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Officer or admin: prove the entries of a staff-made report that were pending.

        Every entry the report carries must still be in the log byte for byte
        (else :class:`IntegrityError`: the report or the log was altered). A new
        checkpoint is signed if needed, and every entry gets a proof against
        it. No field value is decrypted; the report's data is passed through
        unchanged, so its commitment still verifies.
        """
        w = self._live("Vault.complete_subject_report")
        check.mapping_arg(w, "report", report)
        check.datetime_arg(w, "now", now)
        return self._reports.complete_subject_report(report, now=now)

    def incident_report(
        self,
        actor: str,
        since: datetime,
        until: datetime | None = None,
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Officer or admin: breach impact of one user (P-21), from the audit log.

        Lists the records and fields ``actor`` read (``grant.read`` entries
        with outcome ok) or decrypted for an anonymised export
        (``export.anonymized``) between ``since`` and ``until`` (inclusive;
        default now), with counts per record and per field, and counts their
        denied or failed attempts separately. It is the basis for notifying
        the affected children and guardians; it holds record ids and field
        names only, no name or contact detail: those are read, like any data,
        through an approval. Logged as ``report.incident``.
        """
        w = self._live("Vault.incident_report")
        check.str_arg(w, "actor", actor)
        check.datetime_arg(w, "since", since, optional=False)
        check.datetime_arg(w, "until", until)
        check.datetime_arg(w, "now", now)
        return self._reports.incident_report(actor, since, until, now=now)

    def export_anonymized(
        self, out: Path | str, *, k: int = 5, now: datetime | None = None
    ) -> AnonymizedExport:
        """Officer: write anonymised statistics (M-3, M-14) as CSV to ``out``.

        Only records that consented to the ``statistics`` purpose under the
        current notice and are within retention are used. Direct identifiers
        are never decrypted; quasi identifiers are generalised (date of birth
        to an :data:`AGE_BANDS` band on the export date, address to its
        county-level district, enum values kept) and fields declared
        ``identifier = "none"`` are kept as is (binary fields never). The file
        holds one row per equivalence class (all exported columns) with its
        ``count``; classes smaller than ``k`` are suppressed. Cells are
        neutralised against spreadsheet formulas; the file is written
        atomically with mode 0600.

        Keys are released by the provider to the officer's own identity, at
        most 50 records at a time, each batch logged (``export.anonymized``,
        records and fields, no values) and committed before it is decrypted;
        a final entry records the counts. Memory holds only the class counts.
        """
        w = self._live("Vault.export_anonymized")
        out = check.path_arg(w, "out", out)
        check.int_arg(w, "k", k)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import AnonymizedExport

        return AnonymizedExport.from_json(self._export.export_anonymized(out, k=k, now=now))

    def vault_gc(
        self, *, grace: timedelta, destroy: bool = False, now: datetime | None = None
    ) -> GcReport:
        """Admin, Vault mode: the salt documents in Vault that no record (live or
        deleted) accounts for and that are older than ``grace``; with ``destroy``
        they are destroyed like shredded salts and the destruction is logged
        (``vault gc``; docs/vault.md)."""
        w = self._live("Vault.vault_gc")
        check.timedelta_arg(w, "grace", grace, optional=False)
        check.bool_arg(w, "destroy", destroy)
        check.datetime_arg(w, "now", now)
        # Imported here: only Vault-mode administration needs it.
        from childvault.vault._results import GcReport
        from childvault.vault._svc_vaultgc import VaultGcService

        return GcReport.from_json(
            VaultGcService(self._session).gc(grace=grace, destroy=destroy, now=now)
        )

    # -- compliance (issue 15): bases, transfers, rights and incident registers --

    def cosign(self, request_id: str, *, now: datetime | None = None) -> None:
        """Officer: co-sign a legal-obligation request (the first of the two officers)."""
        w = self._live("Vault.cosign")
        check.str_arg(w, "request_id", request_id)
        check.datetime_arg(w, "now", now)
        self._access.cosign(request_id, now=now)

    def transfers(self, *, now: datetime | None = None) -> list[Transfer]:
        """Officer or admin: reads that handed data to another organisation (P-17); logged."""
        check.datetime_arg(self._live("Vault.transfers"), "now", now)
        from childvault.vault._results import Transfer

        return [Transfer.from_json(row) for row in self._access.transfers(now=now)]

    def rights_open(
        self,
        kind: str,
        record_id: str,
        *,
        requester: str,
        received: date,
        identity_checked: bool,
        now: datetime | None = None,
    ) -> RightsRequest:
        """Officer: register a child's or guardian's request (查询/更正/删除/异议)."""
        w = self._live("Vault.rights_open")
        check.str_arg(w, "kind", kind)
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "requester", requester)
        check.date_arg(w, "received", received)
        check.bool_arg(w, "identity_checked", identity_checked)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import RightsRequest

        return RightsRequest.from_json(
            RightsService(self._session).open(
                kind,
                record_id,
                requester=requester,
                received=received,
                identity_checked=identity_checked,
                now=now,
            )
        )

    def rights_close(
        self,
        rights_id: str,
        outcome: str,
        *,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> RightsRequest:
        """Officer: close a rights request with its outcome (``refused`` needs ``reason``;
        a correction request closes ``done`` only with a linked correction)."""
        w = self._live("Vault.rights_close")
        check.str_arg(w, "rights_id", rights_id)
        check.str_arg(w, "outcome", outcome)
        check.str_arg(w, "reason", reason, optional=True)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import RightsRequest

        return RightsRequest.from_json(
            RightsService(self._session).close(rights_id, outcome, reason=reason, now=now)
        )

    def rights_list(self, *, now: datetime | None = None) -> list[RightsRequest]:
        """Officer or admin: the rights register, overdue requests marked; logged."""
        check.datetime_arg(self._live("Vault.rights_list"), "now", now)
        from childvault.vault._results import RightsRequest

        return [RightsRequest.from_json(r) for r in RightsService(self._session).list(now=now)]

    def incident_open(
        self, kind: str, discovered: datetime, *, now: datetime | None = None
    ) -> Incident:
        """Officer: register an incident (leak, damage or loss)."""
        w = self._live("Vault.incident_open")
        check.str_arg(w, "kind", kind)
        check.datetime_arg(w, "discovered", discovered, optional=False)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import Incident

        return Incident.from_json(IncidentService(self._session).open(kind, discovered, now=now))

    def incident_add_records(
        self, incident_id: str, records: Sequence[str], *, now: datetime | None = None
    ) -> Incident:
        """Officer: add affected records to an open incident."""
        w = self._live("Vault.incident_add_records")
        check.str_arg(w, "incident_id", incident_id)
        records = check.str_seq(w, "records", records)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import Incident

        return Incident.from_json(
            IncidentService(self._session).add_records(incident_id, records, now=now)
        )

    def incident_notify(
        self, incident_id: str, audience: str, *, now: datetime | None = None
    ) -> Incident:
        """Officer: record that the guardians or the authority were notified."""
        w = self._live("Vault.incident_notify")
        check.str_arg(w, "incident_id", incident_id)
        check.str_arg(w, "audience", audience)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import Incident

        return Incident.from_json(
            IncidentService(self._session).notify(incident_id, audience, now=now)
        )

    def incident_close(self, incident_id: str, *, now: datetime | None = None) -> Incident:
        """Officer: close an incident reported to the authority."""
        w = self._live("Vault.incident_close")
        check.str_arg(w, "incident_id", incident_id)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import Incident

        return Incident.from_json(IncidentService(self._session).close(incident_id, now=now))

    def incidents(self, *, now: datetime | None = None) -> list[Incident]:
        """Officer or admin: the incident register; logged."""
        check.datetime_arg(self._live("Vault.incidents"), "now", now)
        from childvault.vault._results import Incident

        return [Incident.from_json(r) for r in IncidentService(self._session).list(now=now)]

    def incident_contacts(
        self,
        incident_id: str,
        *,
        tokens: Sequence[str] = (),
        out: Path | str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Officer: the guardian contact list of an incident (P-21), in two steps.

        Without ``tokens``: files ``breach_notification`` requests for the
        contact fields of its live records; returns ``{"requests": [...]}``
        for another officer to approve. With their approval ``tokens`` and
        ``out``: reads through them (logged) and writes the list sealed to
        this officer's key (mode 0600); :meth:`open_incident_contacts` opens it.
        """
        from childvault.vault._svc_incident_contacts import contacts

        w = self._live("Vault.incident_contacts")
        check.str_arg(w, "incident_id", incident_id)
        tokens = check.str_seq(w, "tokens", tokens)
        path = check.opt_path(w, "out", out)
        check.datetime_arg(w, "now", now)
        return contacts(
            IncidentService(self._session),
            self._access,
            incident_id,
            tokens=tokens,
            out=path,
            now=now,
        )

    def open_incident_contacts(self, path: Path | str) -> dict[str, Any]:
        """Officer: open a contact list :meth:`incident_contacts` sealed to you."""
        from childvault.vault._svc_incident_contacts import open_contacts

        w = self._live("Vault.open_incident_contacts")
        return open_contacts(IncidentService(self._session), check.path_arg(w, "path", path))

    def cosign_decommission(
        self, contacts: Path | str, *, now: datetime | None = None
    ) -> DecommissionCosign:
        """Officer: co-sign decommissioning, first writing the guardian contact list
        (sealed to this officer) to ``contacts`` for the P-23 notice."""
        w = self._live("Vault.cosign_decommission")
        path = check.path_arg(w, "contacts", contacts)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import DecommissionCosign

        return DecommissionCosign.from_json(self._lifecycle.cosign_decommission(path, now=now))

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
        # _failover's connect_parts: ``url`` may list several replicas.
        from childvault.vault._remote._failover import connect_parts
        from childvault.vault._remote._release import RemoteKeyring

        backend, path = connect_parts(url, identity, verify=verify)
        try:
            h = Home(path)
            config = Config.load(h)
            secrets_ = KeySlots(h.keyslots).open(identity, config.vault_id)
            if backend.meta.get("vault_id") != config.vault_id:
                raise ConfigError(
                    _t("the server {url} describes another vault than it stores", url=url)
                )
            schema = Schema.load(h.schema)
            if schema.digest != backend.meta.get("schema_digest"):
                raise ConfigError(
                    _t("the server {url} sent a schema that differs from the vault's", url=url)
                )
            keys = keys_from_config(config)
            session = Session(
                h, config, identity, backend, secrets_, schema, clock, keys, credentials
            )
            # Releases of grant material go through the server (release after logging).
            session.keys = RemoteKeyring(
                keys, config.vault_id, identity.name, backend, session.secrets, credentials
            )
            session.keys.trust = session.trust
            return cls(session)
        except BaseException:
            backend.close()
            raise

    # ------------------------------------------------- enrolment (issue 12)

    def invite_user(
        self,
        name: str,
        roles: Sequence[str],
        *,
        valid_for: timedelta = timedelta(days=7),
        now: datetime | None = None,
    ) -> UserInvite:
        """Admin: a one-time invite for ``name`` (``invite``: the file's bytes), logged.

        The person runs :meth:`enroll` with it in their own process, then the
        admin registers them with :meth:`add_user_from_request`.
        """
        w = self._live("Vault.invite_user")
        check.str_arg(w, "name", name)
        roles = check.str_seq(w, "roles", roles)
        check.timedelta_arg(w, "valid_for", valid_for, optional=False)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import UserInvite

        return UserInvite.from_json(
            self._users.invite_user(name, roles, valid_for=valid_for, now=now)
        )

    def add_user_from_request(self, request: bytes, *, now: datetime | None = None) -> UserInfo:
        """Admin: register the person whose enrolment request this is (signed by their
        new key, bound to a single-use invite of this vault); the admin countersigns."""
        w = self._live("Vault.add_user_from_request")
        check.instance(w, "request", request, bytes)
        check.datetime_arg(w, "now", now)
        return self._users.add_user_from_request(request, now=now)

    @staticmethod
    def read_invite(invite: bytes) -> InviteSummary:
        """The invite's user, roles, vault, expiry and anchor fingerprint (nothing verified
        but its form: the person confirms the fingerprint with the admin)."""
        check.instance("Vault.read_invite", "invite", invite, bytes)
        from childvault.vault._results import InviteSummary

        return InviteSummary.from_json(invite_summary(read_invite(invite)))

    @staticmethod
    def enroll(
        invite: bytes, passphrase: str, identity_path: Path | str, *, clock: Clock = system_clock
    ) -> bytes:
        """The new person's side of enrolment: new keys, their identity file at
        ``identity_path`` under their own ``passphrase``; returns the request bytes."""
        w = "Vault.enroll"
        check.instance(w, "invite", invite, bytes)
        check.str_arg(w, "passphrase", passphrase, data=True)
        path = check.path_arg(w, "identity_path", identity_path)
        check.callable_arg(w, "clock", clock)
        return enrol_with_invite(invite, passphrase, path, iso(clock()))

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
        w = "Vault.upgrade"
        home = check.path_arg(w, "home", home)
        check.str_arg(w, "user", user)
        check.str_arg(w, "passphrase", passphrase, data=True)
        check.callable_arg(w, "confirm", confirm)
        check.callable_arg(w, "clock", clock)
        check.str_arg(w, "migration_dsn", migration_dsn, optional=True)
        h = Home(home)
        config = Config.load(h)
        if migration_dsn is not None:
            service = config.store_dsn(h)
            if service is None:
                raise UsageError(
                    _t("this vault keeps its rows in SQLCipher: no migration DSN is used")
                )
            from psycopg.conninfo import conninfo_to_dict

            from childvault.vault._postgres._conn import migrate

            role = conninfo_to_dict(service).get("user")
            migrate(migration_dsn, service_role=str(role) if role else None)
        check_user_name(user)
        path = h.identity(user)
        identity = Identity.load(path, passphrase)
        with cls._open_as(h, config, identity, clock, None, upgrading=True) as vault:
            from childvault.vault._results import UpgradeReport

            return UpgradeReport.from_json(vault._users.upgrade(path, passphrase, confirm))

    def request_key_renewal(
        self,
        passphrase: str,
        *,
        now: datetime | None = None,
        identity_path: Path | str | None = None,
    ) -> KeyRenewalRequest:
        """Any user: new key pairs for oneself (the new identity file under
        ``passphrase``), pending an admin's :meth:`approve_key_renewal`.

        Over a server (:meth:`connect`) ``identity_path`` names where the new
        identity waits on the workstation (required there, refused locally,
        where it waits in the home as ``identities/NAME.renewing.id``)."""
        w = self._live("Vault.request_key_renewal")
        check.str_arg(w, "passphrase", passphrase, data=True)
        check.datetime_arg(w, "now", now)
        path = check.opt_path(w, "identity_path", identity_path)
        from childvault.vault._results import KeyRenewalRequest

        return KeyRenewalRequest.from_json(
            self._users.request_renewal(passphrase, now=now, identity_path=path)
        )

    def approve_key_renewal(self, name: str, *, now: datetime | None = None) -> KeyRenewal:
        """Admin: complete ``name``'s pending key renewal; their old key opens nothing new."""
        w = self._live("Vault.approve_key_renewal")
        check.str_arg(w, "name", name)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import KeyRenewal

        return KeyRenewal.from_json(self._users.approve_renewal(name, now=now))

    def identity_is_current(self) -> bool:
        """Whether the verified trust state registers this vault's acting identity as
        the acting user's current keys: true for a renewed identity once an admin
        approved it (``keys renew --finish`` checks it before swapping files),
        false for an identity a renewal replaced."""
        self._live("Vault.identity_is_current")
        return self._users.identity_is_current()

    def list_page(
        self, *, after: str | None = None, limit: int | None = 100, now: datetime | None = None
    ) -> RecordPage:
        """A page of at most ``limit`` records' bookkeeping (``None``: every record)
        after the record id ``after``, each verified against its signed record
        statement; records that fail are named in ``unverified``. Logged."""
        w = self._live("Vault.list_page")
        check.str_arg(w, "after", after, optional=True)
        if limit is not None:
            check.int_arg(w, "limit", limit, minimum=1)
        check.datetime_arg(w, "now", now)
        return self._records.list_page(after=after, limit=limit, now=now)

    def add_entrusted_user(
        self,
        name: str,
        passphrase: str,
        *,
        organisation: str,
        agreement: str,
        expires: date,
        now: datetime | None = None,
    ) -> UserInfo:
        """Admin: enrol a staff account of an entrusted organisation (受委托方, P-16).

        The organisation, the agreement reference and its expiry date are part
        of the signed registration; from the day after ``expires`` (the legal
        date in the vault's time zone) every operation of the account is refused.
        """
        w = self._live("Vault.add_entrusted_user")
        check.str_arg(w, "name", name)
        check.str_arg(w, "passphrase", passphrase, data=True)
        check.str_arg(w, "organisation", organisation)
        check.str_arg(w, "agreement", agreement)
        check.date_arg(w, "expires", expires)
        check.datetime_arg(w, "now", now)
        terms = {"organisation": organisation, "agreement": agreement}
        return self._users.add_user(
            name,
            ("staff",),
            passphrase,
            now=now,
            entrusted={**terms, "expires": expires.isoformat()},
        )

    def invite_entrusted_user(
        self,
        name: str,
        *,
        organisation: str,
        agreement: str,
        expires: date,
        valid_for: timedelta = timedelta(days=7),
        now: datetime | None = None,
    ) -> UserInvite:
        """Admin: a one-time invite for a staff account of an entrusted organisation.

        The invite carries the organisation, agreement reference and expiry
        date; the person's signed registration must carry them unchanged
        (:meth:`add_user_from_request` refuses anything else).
        """
        w = self._live("Vault.invite_entrusted_user")
        check.str_arg(w, "name", name)
        check.str_arg(w, "organisation", organisation)
        check.str_arg(w, "agreement", agreement)
        check.date_arg(w, "expires", expires)
        check.timedelta_arg(w, "valid_for", valid_for, optional=False)
        check.datetime_arg(w, "now", now)
        terms = {"organisation": organisation, "agreement": agreement}
        from childvault.vault._results import UserInvite

        return UserInvite.from_json(
            self._users.invite_user(
                name,
                ("staff",),
                valid_for=valid_for,
                now=now,
                entrusted={**terms, "expires": expires.isoformat()},
            )
        )

    # -- issue 13 (witness): appended, so parallel edits merge -----------------

    def verify_cosignatures(self, witness_keys: Sequence[str]) -> dict[str, int]:
        """Check the HTTP witnesses' cosignatures on the witness file's checkpoints.

        ``witness_keys`` are the witnesses' verifier keys, from the auditor
        (out of band: keys stored in the vault could be swapped by an
        insider). Every note must verify (a forged cosignature fails) and at
        least one must be cosigned by every given witness. Returns
        ``{"cosigned": notes cosigned by all, "cosigned_size": largest tree}``.
        Run :meth:`verify_audit` too: it checks the notes against the log.
        """
        w = self._live("Vault.verify_cosignatures")
        keys = check.str_seq(w, "witness_keys", witness_keys)
        return self._audit.verify_cosignatures(keys)

    def set_setting(self, key: str, value: str, *, now: datetime | None = None) -> VaultSetting:
        """Sign and log setting ``key`` = ``value``; return it as it now stands.

        The approval limits (``max_ttl_s``, ``default_ttl_s``, ``max_records``,
        ``max_uses``) are an admin's to sign; the compliance settings
        (``consent_backdate_days``, ``time_zone``, ``rights_deadline_days.<kind>``,
        ``export_min_k``) an officer's. The value is validated (whole numbers in
        range, an IANA zone); the latest signed value is what every decision
        uses, never the ``meta`` row (docs/trust.md, "Settings and other meta rows").
        """
        w = self._live("Vault.set_setting")
        check.str_arg(w, "key", key)
        check.str_arg(w, "value", value)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import VaultSetting
        from childvault.vault._svc_settings import SettingsService

        return VaultSetting.from_json(SettingsService(self._session).set(key, value, now=now))

    def list_settings(self) -> list[VaultSetting]:
        """Every signed setting: its effective value, default, the role that signs
        it, its source (``signed`` or ``default``), who signed it, and the
        database row when that differs (ignored)."""
        self._live("Vault.list_settings")
        from childvault.vault._results import VaultSetting
        from childvault.vault._svc_settings import SettingsService

        return [VaultSetting.from_json(d) for d in SettingsService(self._session).listing()]


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path)


def _store_choice(
    dsn: str | None, dsn_file: Path | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The config's store entry and the DSN to create the vault in (None, None: SQLCipher)."""
    if dsn is not None and dsn_file is not None:
        raise UsageError(_t("give the PostgreSQL DSN once: in a file or in CHILDVAULT_DSN"))
    if dsn_file is not None:
        path = Path(dsn_file).resolve()
        return {"kind": "postgresql", "dsn_file": str(path)}, read_dsn_file(path)
    if dsn is not None:
        if not dsn.strip():
            raise UsageError(_t("the PostgreSQL DSN is empty"))
        return {"kind": "postgresql", "dsn_file": None}, dsn.strip()
    return None, None


def _open_store(h: Home, dsn: str | None, key: bytes, *, create: bool = False) -> Backend:
    """The SQLCipher file of ``h``, or the PostgreSQL database ``dsn``."""
    if dsn is None:
        return SQLCipherBackend(h.database, key, create=create)
    # Imported here: psycopg is an optional extra (`pip install childvault[postgres]`).
    try:
        from childvault.vault._postgres import PostgresBackend
    except ImportError as exc:
        raise ConfigError(
            _t("this vault stores its rows in PostgreSQL: install childvault[postgres]")
        ) from exc
    return PostgresBackend(dsn, create=create)


def _where(store: Backend) -> str:
    """The database's name for messages (a path, or a DSN without password)."""
    return str(getattr(store, "where", None) or getattr(store, "path", "the database"))
