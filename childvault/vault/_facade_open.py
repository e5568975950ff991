"""Making the session a :class:`~._facade.Vault` acts in: creating a vault (``init``),
opening one locally or over a server, and ``upgrade``.

Kept apart from the facade, whose classmethods call these in one line: this is where
the home, key slots, backend and schema are checked against each other.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childvault._i18n import _t
from childvault.keys import ConfigError, Identity, KeySlots, NotFound, UsageError, check_user_name
from childvault.keys._files import atomic_write
from childvault.vault import _check as check
from childvault.vault import _statements
from childvault.vault._audit import Event
from childvault.vault._backend import Backend, UserRow
from childvault.vault._config import Config, Home, make_home, read_dsn_file
from childvault.vault._keyconfig import (
    KeysConfig,
    LocalKeys,
    OpenBaoCredentials,
    OpenBaoKeys,
    keys_from_config,
)
from childvault.vault._registrations import (
    append_with_statements,
    is_upgraded,
    register_statement,
    user_detail,
    with_statement,
)
from childvault.vault._schema import Schema
from childvault.vault._session import Session, new_id
from childvault.vault._sqlcipher import SQLCipherBackend
from childvault.vault._statements import Anchor
from childvault.vault._svc_notices import packaged_notice_sha256
from childvault.vault._time import Clock, iso

if TYPE_CHECKING:
    # The result types are imported where a method builds one (issue 18: lazy loading).
    from childvault.vault._results import UpgradeReport

#: The settings a new vault starts with (limits of approvals, the notice version).
DEFAULTS = {
    "max_ttl_s": str(8 * 3600),
    "default_ttl_s": str(3600),
    "max_records": "50",
    "max_uses": "10",
    "notice_version": "2026-1",
}


def init_session(
    home: Path | str,
    *,
    institution: str,
    admin: str,
    admin_passphrase: str,
    keys: KeysConfig | None,
    schema: Path | None,
    witness: Path | None,
    clock: Clock,
    store_dsn: str | None,
    store_dsn_file: Path | None,
) -> Session:
    """:meth:`Vault.init`: check its arguments, create the vault; the admin's session."""
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
    return Session(h, config, ident, store, secrets_, loaded, clock, keys)


def open_session(
    home: Path | str,
    user: str | None,
    passphrase: str | None,
    *,
    identity: Identity | None,
    clock: Clock,
    credentials: OpenBaoCredentials | None,
) -> Session:
    """:meth:`Vault.open`: check its arguments, unlock the identity; its session."""
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
            raise UsageError(_t("give the acting user and passphrase (or an unlocked identity)"))
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
    return open_session_as(h, config, identity, clock, credentials)


def open_session_as(
    h: Home,
    config: Config,
    identity: Identity,
    clock: Clock,
    credentials: OpenBaoCredentials | None,
    *,
    upgrading: bool = False,
) -> Session:
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
        return Session(h, config, identity, store, secrets_, schema, clock, keys, credentials)
    except BaseException:
        store.close()
        raise


def connect_session(
    url: str,
    identity: Identity,
    *,
    clock: Clock,
    credentials: OpenBaoCredentials | None,
    verify: bool | str,
) -> Session:
    """:meth:`Vault.connect`: the session over the server at ``url`` as ``identity``."""
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
        session = Session(h, config, identity, backend, secrets_, schema, clock, keys, credentials)
        # Releases of grant material go through the server (release after logging).
        session.keys = RemoteKeyring(
            keys, config.vault_id, identity.name, backend, session.secrets, credentials
        )
        session.keys.trust = session.trust
        return session
    except BaseException:
        backend.close()
        raise


def upgrade_vault(
    home: Path | str,
    user: str,
    passphrase: str,
    *,
    confirm: Callable[[str], bool],
    clock: Clock,
    migration_dsn: str | None,
) -> UpgradeReport:
    """:meth:`Vault.upgrade`: the schema, then the acting user's upgrade step."""
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
            raise UsageError(_t("this vault keeps its rows in SQLCipher: no migration DSN is used"))
        from psycopg.conninfo import conninfo_to_dict

        from childvault.vault._postgres._conn import migrate

        role = conninfo_to_dict(service).get("user")
        migrate(migration_dsn, service_role=str(role) if role else None)
    check_user_name(user)
    path = h.identity(user)
    identity = Identity.load(path, passphrase)
    session = open_session_as(h, config, identity, clock, None, upgrading=True)
    try:
        from childvault.vault._results import UpgradeReport
        from childvault.vault._svc_users import UserService

        # What Vault.upgrade did through a Vault of this session (its `_users`).
        return UpgradeReport.from_json(UserService(session).upgrade(path, passphrase, confirm))
    finally:
        session.close()


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
