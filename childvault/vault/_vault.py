"""The :class:`Vault` facade: the one entry point of the library.

It ties the schema, the store, field encryption, the key provider, approvals
and the audit log together. Every operation that touches records appends its
audit entries in the same database transaction; an operation whose entry cannot
be written does not happen. Denied attempts are logged before the error is
raised.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from childvault.keys import (
    AccessDenied,
    ApprovalInvalid,
    ChildVaultError,
    ConfigError,
    CustodianSecret,
    DecryptionFailed,
    FieldKey,
    Identity,
    ImportFailed,
    IntegrityError,
    KeyProvider,
    KeySlots,
    LocalProvider,
    NotFound,
    ProviderUnavailable,
    PublicIdentity,
    RecordKeys,
    ReleasedKeys,
    Selection,
    StorageError,
    UsageError,
    ValidationError,
    WrappedRecord,
    check_user_name,
)
from childvault.keys._files import atomic_write
from childvault.vault import _audit, _note, _tokens
from childvault.vault._audit import Event, VerifyReport
from childvault.vault._config import Config, Home, make_home
from childvault.vault._consent import CONSENT_COLUMNS, Consent, check_consent, parse_consent_columns
from childvault.vault._fieldcrypto import open_field, seal_field
from childvault.vault._importer import BadRow, file_digest, iter_rows
from childvault.vault._lifecycle import LifecycleMixin
from childvault.vault._reports import ReportsMixin
from childvault.vault._schema import Schema
from childvault.vault._store import GrantRow, NewRecord, RecordRow, RequestRow, Store, UserRow
from childvault.vault._time import Clock, iso, system_clock, today
from childvault.vault._types import ROLES, Approval, ImportReport, RecordInfo, RequestInfo, UserInfo

if TYPE_CHECKING:
    from childvault.keys._vault import VaultProvider

_IMPORT_BATCH = 500
#: Key-slot entries holding a custodian secret are named ``custodian/<generation>``.
_CUSTODIAN = "custodian/"
_DEFAULTS = {
    "max_ttl_s": str(8 * 3600),
    "default_ttl_s": str(3600),
    "max_records": "50",
    "max_uses": "10",
    "notice_version": "2026-1",
}
_WRITERS = ("staff", "officer")


def _new_id() -> str:
    return secrets.token_hex(16)


def _new_record_id() -> str:
    """A record id: 48-bit creation time in milliseconds, then 80 random bits (32 hex).

    UUIDv7's layout. Why: fully random ids put every insert of a large import on a
    random page of each record-keyed B-tree (records, fields, key blobs, index),
    so throughput fell as the vault grew; ids that grow with time append at the
    right edge. The creation time is already in clear in the record's bookkeeping
    and its log entry, so the prefix discloses nothing new (docs/decisions.md).
    """
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def _check_id(value: str, what: str) -> str:
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise NotFound(f"no {what} {value!r}: ids are 32 lowercase hex characters")
    return value


def signer_name(vault_id: str, user: str) -> str:
    """The signed-note signer name of ``user`` in vault ``vault_id``."""
    return f"childvault/{vault_id}/{user}"


def log_origin(vault_id: str) -> str:
    """The checkpoint origin line of a vault's log."""
    return f"childvault/{vault_id}"


@dataclass(frozen=True)
class _Prepared:
    """A validated, encrypted record not yet stored."""

    keys: RecordKeys
    record: NewRecord
    event: Event
    index: list[tuple[str, str]]


@dataclass(frozen=True)
class NewRecordInput:
    """One record to add: its type, field values (text) and consent."""

    type: str
    values: Mapping[str, str]
    consent: Consent


class Vault(LifecycleMixin, ReportsMixin):
    """An open vault, acting as one unlocked user.

    Create one with :meth:`Vault.init` (a new vault) or :meth:`Vault.open`.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        home: Home,
        config: Config,
        identity: Identity,
        store: Store,
        secrets_: Mapping[str, bytes],
        schema: Schema,
        clock: Clock,
        provider_options: Mapping[str, Any],
    ) -> None:
        self._home = home
        self._config = config
        self._me = identity
        self._store = store
        self._secrets = dict(secrets_)
        self._schema = schema
        self._clock = clock
        self._provider_options = dict(provider_options)
        self._writer: LocalProvider | None = None
        self._officer: LocalProvider | None = None
        self._remote: VaultProvider | None = None
        user = store.get_user(identity.name)
        if user is None:
            raise AccessDenied(f"user {identity.name!r} is not registered in this vault")
        if (user.enc_key, user.sign_key) != (
            identity.public.encryption_key,
            identity.public.signing_key,
        ):
            raise AccessDenied(
                f"the identity file of {identity.name!r} does not match the registered keys"
            )
        self._roles = frozenset(user.roles)

    # ------------------------------------------------------------------ opening

    @classmethod
    def init(
        cls,
        home: Path | str,
        *,
        institution: str,
        admin: str,
        admin_passphrase: str,
        provider: str = "local",
        schema: Path | None = None,
        witness: Path | None = None,
        vault_settings: Mapping[str, Any] | None = None,
        clock: Clock = system_clock,
    ) -> Vault:
        """Create a new vault in an empty ``home`` with its first admin; return it opened."""
        check_user_name(admin)
        if provider not in {"local", "vault"}:
            raise UsageError(f"unknown provider {provider!r}: use local or vault")
        if provider == "vault" and not vault_settings:
            raise UsageError("the vault provider needs its settings (address, mounts, key)")
        if not institution.strip() or len(institution) > 200:
            raise UsageError("--institution must be a non-empty name of at most 200 characters")
        loaded = Schema.load(Path(schema)) if schema else Schema.default()
        h = make_home(Path(home))
        try:
            now = clock()
            vault_id = _new_id()
            atomic_write(h.schema, loaded.source, mode=0o600)
            ident = Identity.generate(admin)
            ident.save(h.identity(admin), admin_passphrase)
            secrets_ = {"db": secrets.token_bytes(32), "index": secrets.token_bytes(32)}
            slots = KeySlots(h.keyslots)
            slots.create(vault_id)
            slots.add(ident.public, vault_id, secrets_)
            config = Config(
                vault_id=vault_id,
                institution=institution.strip(),
                provider=provider,
                witness=str(Path(witness).resolve()) if witness else None,
                vault_settings=dict(vault_settings) if vault_settings else None,
            )
            store = Store(h.database, secrets_["db"], create=True)
            with store.write():
                for key, value in {
                    **_DEFAULTS,
                    "vault_id": vault_id,
                    "institution": config.institution,
                    "provider": provider,
                    "schema_digest": loaded.digest,
                    "created_at": iso(now),
                    "accepting_records": "1",
                    "notices": json.dumps(
                        {
                            _DEFAULTS["notice_version"]: {
                                "sha256": _packaged_notice_sha256(),
                                "published_at": iso(now),
                                "by": admin,
                            }
                        }
                    ),
                }.items():
                    store.set_meta(key, value)
                store.add_user(
                    UserRow(
                        admin,
                        ("admin",),
                        ident.public.encryption_key,
                        ident.public.signing_key,
                        iso(now),
                        admin,
                    )
                )
                _audit.append(
                    store,
                    [
                        Event(admin, "vault.init", detail={"provider": provider}),
                        Event(
                            admin, "user.add", detail=_user_detail(admin, ["admin"], ident.public)
                        ),
                    ],
                    now,
                )
            config.save(h)
        except BaseException:
            # A half-made home would confuse the next `init`: remove what we made.
            _remove_tree(h.path)
            raise
        return cls(h, config, ident, store, secrets_, loaded, clock, {})

    @classmethod
    def open(
        cls,
        home: Path | str,
        user: str | None = None,
        passphrase: str | None = None,
        *,
        identity: Identity | None = None,
        clock: Clock = system_clock,
        vault_token: str | None = None,
        approle: tuple[str, str] | None = None,
    ) -> Vault:
        """Open the vault in ``home`` as ``user`` (unlocking with ``passphrase``).

        Pass ``identity=`` instead of user and passphrase to reuse an unlocked
        identity (embedding applications, tests). ``vault_token`` / ``approle``
        are the Vault/OpenBao credentials of the acting user (Vault provider).
        """
        h = Home(Path(home))
        config = Config.load(h)
        if identity is None:
            if user is None or passphrase is None:
                raise UsageError("give the acting user and passphrase (or an unlocked identity)")
            check_user_name(user)
            path = h.identity(user)
            if not path.exists():
                raise NotFound(
                    f"unknown user {user!r} in {h.path}: check --as / CHILDVAULT_USER, "
                    "or ask an admin to run `childvault user add`"
                )
            identity = Identity.load(path, passphrase)
        secrets_ = KeySlots(h.keyslots).open(identity, config.vault_id)
        store = Store(h.database, secrets_["db"])
        try:
            if store.get_meta("vault_id") != config.vault_id:
                raise ConfigError(f"{h.config} does not belong to the database {h.database}")
            if store.get_meta("provider") != config.provider:
                raise ConfigError(f"{h.config} names another key provider than the database")
            schema = Schema.load(h.schema)
            if schema.digest != store.get_meta("schema_digest"):
                raise ConfigError(f"{h.schema} differs from the schema this vault was created with")
            options: dict[str, Any] = {"vault_token": vault_token, "approle": approle}
            return cls(h, config, identity, store, secrets_, schema, clock, options)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Close the database (and the Vault session, if one was opened)."""
        if self._remote is not None:
            self._remote.close()
        self._store.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- properties

    @property
    def vault_id(self) -> str:
        """This vault's random id."""
        return self._config.vault_id

    @property
    def user(self) -> str:
        """The acting user."""
        return self._me.name

    @property
    def roles(self) -> frozenset[str]:
        """The acting user's roles."""
        return self._roles

    @property
    def schema(self) -> Schema:
        """The vault's schema."""
        return self._schema

    @property
    def home(self) -> Path:
        """The home directory."""
        return self._home.path

    @property
    def witness_path(self) -> Path:
        """Where checkpoints are witnessed."""
        return self._config.witness_path(self._home)

    @property
    def provider_kind(self) -> str:
        """``"local"`` or ``"vault"``."""
        return self._config.provider

    def now(self) -> datetime:
        """The vault's clock (injectable for tests)."""
        return self._clock()

    def setting(self, key: str) -> str:
        """A vault-wide setting (limits, notice version)."""
        value = self._store.get_meta(key)
        if value is None:
            raise ConfigError(f"vault setting {key!r} is missing from the database")
        return value

    # --------------------------------------------------------------- internals

    def _now(self, now: datetime | None) -> datetime:
        return now if now is not None else self._clock()

    def _log(self, events: Sequence[Event], now: datetime) -> None:
        with self._store.write():
            _audit.append(self._store, events, now)

    def _deny(self, event: Event, message: str, now: datetime) -> NoReturn:
        """Log a denied attempt, then raise AccessDenied. Fail closed if logging fails."""
        self._log([event], now)
        raise AccessDenied(message)

    def _require(self, roles: Sequence[str], action: str, now: datetime, what: str) -> None:
        if self._roles.isdisjoint(roles):
            self._deny(
                Event(self.user, action, "denied", detail={"reason": "role"}),
                f"{what} needs the role {' or '.join(roles)}; {self.user!r} has "
                f"{', '.join(sorted(self._roles))}",
                now,
            )

    def _vault_provider(self) -> VaultProvider:
        """The one VaultProvider of this session (one HTTP session, reused)."""
        if self._remote is None:
            from childvault.keys import VaultProvider, VaultSettings

            if self._config.provider != "vault":
                raise UsageError("this vault uses the local key provider, not Vault")
            self._remote = VaultProvider(
                VaultSettings.from_json(self._config.vault_settings or {}),
                self.vault_id,
                token=self._provider_options.get("vault_token"),
                approle=self._provider_options.get("approle"),
            )
        return self._remote

    def _writer_provider(self) -> KeyProvider:
        """The provider as a writer: seals new keys (staff and up)."""
        if self._config.provider == "vault":
            return self._vault_provider()
        if self._writer is None:
            current = [c for c in self._store.custodians() if c[2] == "current"]
            if not current:
                raise ConfigError(
                    "no officer exists yet, so records cannot be sealed: an admin must first "
                    "run `childvault user add NAME --role officer`"
                )
            generation, public, _ = current[0]
            # Never seal children's data to a key an insider slipped into the table.
            self._check_custodian_logged(generation, public)
            self._writer = LocalProvider(self.vault_id, generation, public)
        return self._writer

    def _officer_provider(self) -> KeyProvider:
        """The provider with the officer's powers (custodian key or officer token)."""
        if self._config.provider == "vault":
            return self._vault_provider()
        if self._officer is None:
            self._officer = self._local_officer()
        return self._officer

    def _custodian_secrets(self) -> dict[str, bytes]:
        """The acting user's custodian entries from their key slot (officers only)."""
        return {k: v for k, v in self._secrets.items() if k.startswith(_CUSTODIAN)}

    def _base_secrets(self) -> dict[str, bytes]:
        """The secrets every user's key slot holds (database and index keys)."""
        return {k: self._secrets[k] for k in ("db", "index")}

    def _local_officer(self) -> LocalProvider:
        unlocked = [
            CustodianSecret.from_bytes(int(k[len(_CUSTODIAN) :]), v)
            for k, v in self._custodian_secrets().items()
        ]
        current = [(g, p) for g, p, state in self._store.custodians() if state == "current"]
        if not current:
            raise ConfigError("no custodian key exists yet: add an officer first")
        generation, public = current[0]
        mine = [c for c in unlocked if c.generation == generation]
        if not mine:
            raise AccessDenied(
                f"{self.user!r} does not hold the custodian key yet: an existing officer must "
                f"run `childvault --as OFFICER keys share {self.user}`"
            )
        if mine[0].public != public:
            raise DecryptionFailed("the custodian key in the key slot does not match the database")
        return LocalProvider(self.vault_id, generation, public, unlocked)

    def _public(self, name: str) -> PublicIdentity:
        row = self._store.get_user(name)
        if row is None:
            raise NotFound(f"unknown user {name!r}")
        return PublicIdentity(row.name, row.enc_key, row.sign_key)

    def _signers(self) -> dict[str, bytes]:
        """Signed-note names and keys of everyone allowed to sign checkpoints."""
        return {
            signer_name(self.vault_id, u.name): u.sign_key
            for u in self._store.list_users()
            if {"officer", "admin"} & set(u.roles)
        }

    # ------------------------------------------------------------------- users

    def add_user(
        self, name: str, roles: Sequence[str], passphrase: str, *, now: datetime | None = None
    ) -> UserInfo:
        """Admin: enrol a user with ``roles``, writing their identity file.

        The first officer receives the newly created custodian key; later
        officers receive it when an existing officer runs :meth:`share_custodian`.
        """
        moment = self._now(now)
        self._require(("admin",), "user.add", moment, "adding users")
        check_user_name(name)
        role_set = tuple(sorted(set(roles)))
        if not role_set or any(r not in ROLES for r in role_set):
            raise UsageError(f"roles must be among {', '.join(ROLES)}")
        if self._store.get_user(name) is not None or self._home.identity(name).exists():
            raise UsageError(f"user {name!r} already exists")
        ident = Identity.generate(name)
        path = self._home.identity(name)
        ident.save(path, passphrase)
        slots = KeySlots(self._home.keyslots)
        secrets_ = self._base_secrets()
        first_officer = "officer" in role_set and not self._store.custodians()
        custodian = CustodianSecret.generate(1) if first_officer else None
        if custodian is not None:
            # The first officer: the custodian key is created and given to them only.
            secrets_[f"{_CUSTODIAN}1"] = custodian.secret_bytes()
        try:
            slots.add(ident.public, self.vault_id, secrets_)
            events = [
                Event(self.user, "user.add", detail=_user_detail(name, role_set, ident.public))
            ]
            with self._store.write():
                self._store.add_user(
                    UserRow(
                        name,
                        role_set,
                        ident.public.encryption_key,
                        ident.public.signing_key,
                        iso(moment),
                        self.user,
                    )
                )
                if custodian is not None:
                    self._store.add_custodian(1, custodian.public, "current", iso(moment))
                    self._store.add_custodian_holder(1, name)
                    events.append(
                        Event(
                            self.user,
                            "custodian.create",
                            detail={
                                "generation": 1,
                                "to": name,
                                "public_key": custodian.public.hex(),
                            },
                        )
                    )
                _audit.append(self._store, events, moment)
        except BaseException:
            with contextlib.suppress(ChildVaultError, OSError):
                slots.remove(name)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        finally:
            del custodian, secrets_
        return self._user_info(name)

    def share_custodian(self, name: str, *, now: datetime | None = None) -> None:
        """Officer: give officer ``name`` the custodian key so they can approve.

        Rewrites ``name``'s key slot with the database and index keys plus every
        custodian generation the acting officer holds.
        """
        moment = self._now(now)
        self._require(("officer",), "custodian.share", moment, "sharing the custodian key")
        if self._config.provider != "local":
            raise UsageError("the Vault provider has no custodian key: officers use Vault policy")
        target = self._store.get_user(name)
        if target is None or "officer" not in target.roles:
            raise UsageError(f"{name!r} is not a registered officer")
        self._local_officer()  # fails clearly unless the acting officer holds the current key
        pub = PublicIdentity(target.name, target.enc_key, target.sign_key)
        mine = self._custodian_secrets()
        KeySlots(self._home.keyslots).add(pub, self.vault_id, {**self._base_secrets(), **mine})
        with self._store.write():
            for key in mine:
                self._store.add_custodian_holder(int(key[len(_CUSTODIAN) :]), name)
            _audit.append(
                self._store, [Event(self.user, "custodian.share", detail={"to": name})], moment
            )

    def _user_info(self, name: str) -> UserInfo:
        row = self._store.get_user(name)
        if row is None:
            raise NotFound(f"unknown user {name!r}")
        return self._info(row)

    def _info(self, row: UserRow) -> UserInfo:
        current = [g for g, _, s in self._store.custodians() if s == "current"]
        if self._config.provider == "local":
            can = (
                "officer" in row.roles
                and bool(current)
                and row.name in self._store.custodian_holders(current[0])
            )
        else:
            can = "officer" in row.roles
        signs = {"officer", "admin"} & set(row.roles)
        return UserInfo(
            row.name,
            row.roles,
            row.created_at,
            _note.vkey(signer_name(self.vault_id, row.name), row.sign_key) if signs else None,
            can,
        )

    def users(self) -> list[UserInfo]:
        """Every registered user with roles and (for signers) their verifier key."""
        return [self._info(r) for r in self._store.list_users()]

    # ----------------------------------------------------------------- records

    def add_record(
        self,
        type_name: str,
        values: Mapping[str, str],
        consent: Consent,
        *,
        now: datetime | None = None,
    ) -> str:
        """Staff: validate, encrypt and store one record; return its id."""
        return self.add_records([NewRecordInput(type_name, values, consent)], now=now)[0]

    def add_records(
        self, items: Sequence[NewRecordInput], *, now: datetime | None = None
    ) -> list[str]:
        """Staff: add several records in one transaction (all or nothing)."""
        moment = self._now(now)
        self._require(_WRITERS, "record.create", moment, "writing records")
        self._check_accepting()
        prepared = [self._prepare(item, moment) for item in items]
        return self._store_new(prepared, moment)

    def _check_accepting(self) -> None:
        if self._store.get_meta("accepting_records") != "1":
            raise AccessDenied("this vault is decommissioned: it no longer accepts records")

    def _prepare(
        self,
        item: NewRecordInput,
        moment: datetime,
        notice_sha256: Callable[[str], str] | None = None,
    ) -> _Prepared:
        """Validate and encrypt one record. ``notice_sha256``: a memoised
        :meth:`notice_sha256` for a whole import (one register read, not one a row)."""
        values = self._schema.validate_record(item.type, item.values)
        dob_text = values.get("date_of_birth")
        dob = datetime.fromisoformat(dob_text).date() if dob_text else None
        consent = check_consent(
            item.consent, date_of_birth=dob, schema=self._schema, today=today(moment)
        )
        sha_of = notice_sha256 or self.notice_sha256
        consent = dataclasses.replace(consent, notice_sha256=sha_of(consent.notice_version))
        rtype = self._schema.record_type(item.type)
        record_id = _new_record_id()
        sealed: list[tuple[str, int, bytes]] = []
        keys: dict[str, FieldKey] = {}
        metadata: dict[str, str] = {}
        for name, value in values.items():
            if rtype.fields[name].metadata:
                metadata[name] = value
                continue
            ct, key = seal_field(
                _field_bytes(value),
                vault_id=self.vault_id,
                record_id=record_id,
                field=name,
                version=1,
            )
            sealed.append((name, 1, ct))
            keys[name] = key
        stamp = iso(moment)
        row = RecordRow(
            record_id,
            item.type,
            1,
            stamp,
            self.user,
            stamp,
            consent.to_json(),
            consent.retain_until.isoformat(),
            metadata,
        )
        event = Event(
            self.user,
            "record.create",
            records=[record_id],
            fields=[n for n, _, _ in sealed],
            detail={"type": item.type},
        )
        index = [(n, v) for n, v in values.items() if rtype.fields[n].searchable]
        return _Prepared(
            RecordKeys(record_id, 1, keys, new=True), NewRecord(row, sealed, b""), event, index
        )

    def _store_new(
        self,
        prepared: Sequence[_Prepared],
        moment: datetime,
        *,
        source: str | None = None,
        rows: Sequence[int] = (),
        progress_to: int | None = None,
    ) -> list[str]:
        blobs = self._writer_provider().wrap([p.keys for p in prepared])
        records = [
            NewRecord(p.record.row, p.record.fields, blob, source, rows[i] if rows else None)
            for i, (p, blob) in enumerate(zip(prepared, blobs, strict=True))
        ]
        # Blind-index tags, computed per field in one batch (one Transit call in Vault mode).
        by_field: dict[str, list[tuple[str, str]]] = {}
        for p in prepared:
            for name, value in p.index:
                by_field.setdefault(name, []).append((p.record.row.id, value))
        tags: list[tuple[str, bytes, str]] = []
        for name, pairs in by_field.items():
            macs = self.index_tags(name, [v for _, v in pairs])
            tags.extend((name, mac, rid) for (rid, _), mac in zip(pairs, macs, strict=True))
        with self._store.write():
            if records:
                self._store.insert_records(records)
            if tags:
                self._store.add_index_tags(tags)
            events = [
                p.event
                if source is None
                else Event(
                    p.event.actor,
                    p.event.action,
                    records=p.event.records,
                    fields=p.event.fields,
                    detail={**p.event.detail, "source": source[:16], "row": rows[i]},
                )
                for i, p in enumerate(prepared)
            ]
            if events:
                _audit.append(self._store, events, moment)
            if source is not None and progress_to is not None:
                self._store.set_import_progress(source, progress_to, at=iso(moment))
        return [r.row.id for r in records]

    def import_file(
        self,
        path: Path | str,
        *,
        type_name: str | None = None,
        skip_invalid: bool = False,
        fmt: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        now: datetime | None = None,
    ) -> ImportReport:
        """Staff: import a CSV or JSON Lines file, streaming, in batches; resumable.

        First every row is validated; if any is invalid and ``skip_invalid`` is
        false nothing is written and :class:`ImportFailed` lists the bad rows.
        Rows are then written in batches, each batch in one transaction with its
        log entries and the import's progress, so an interrupted import resumes
        where it stopped and never duplicates a row.
        """
        moment = self._now(now)
        self._require(_WRITERS, "record.create", moment, "importing records")
        self._check_accepting()
        path = Path(path)
        type_name = type_name or next(iter(self._schema.types))
        self._schema.record_type(type_name)
        source = file_digest(path)
        done, finished = self._store.import_progress(source)
        errors: list[tuple[int, str]] = []
        n_errors = 0
        total = 0
        # Read once per import, not once a row: the default notice and the register.
        notice = self.setting("notice_version")
        sha_of = functools.cache(self.notice_sha256)
        for number, row in iter_rows(path, fmt):
            total = number
            problem = self._check_row(type_name, row, moment, notice, sha_of)
            if problem is not None:
                n_errors += 1
                if len(errors) < 1000:
                    errors.append((number, problem))
        if n_errors and not skip_invalid:
            shown = "; ".join(f"row {r}: {m}" for r, m in errors[:20])
            more = f" (and {n_errors - 20} more)" if n_errors > 20 else ""
            raise ImportFailed(
                f"{n_errors} invalid row(s) in {path.name}, nothing was imported: {shown}{more}. "
                "Fix them, or pass --skip-invalid to import the valid rows"
            )
        if finished:
            return ImportReport(source, total, 0, n_errors, total, tuple(errors))
        imported: list[str] = []
        count = 0
        batch: list[_Prepared] = []
        batch_rows: list[int] = []
        last = done
        for number, row in iter_rows(path, fmt):
            if number <= done:
                continue
            last = number
            if not isinstance(row, BadRow):
                # _prepare validates the row exactly as _check_row does: a row that
                # fails (skipped in pass 1 with skip_invalid) is skipped here too.
                try:
                    item = self._row_input(type_name, row, moment, notice)
                    batch.append(self._prepare(item, moment, sha_of))
                    batch_rows.append(number)
                except (ValidationError, UsageError):
                    pass
            if len(batch) >= _IMPORT_BATCH:
                ids = self._store_new(
                    batch, moment, source=source, rows=batch_rows, progress_to=number
                )
                count += len(ids)
                if len(imported) < 1000:
                    imported.extend(ids[: 1000 - len(imported)])
                batch, batch_rows = [], []
                if progress is not None:
                    progress(number, total)
        ids = self._store_new(batch, moment, source=source, rows=batch_rows, progress_to=last)
        count += len(ids)
        if len(imported) < 1000:
            imported.extend(ids[: 1000 - len(imported)])
        with self._store.write():
            self._store.set_import_progress(source, total, at=iso(moment), finished=True)
        if progress is not None:
            progress(total, total)
        return ImportReport(source, total, count, n_errors, done, tuple(errors), tuple(imported))

    def _row_input(
        self,
        type_name: str,
        row: Mapping[str, str],
        moment: datetime,
        notice: str | None = None,
    ) -> NewRecordInput:
        values = {k: v for k, v in row.items() if k not in CONSENT_COLUMNS}
        consent_cols = {k: v for k, v in row.items() if k in CONSENT_COLUMNS}
        consent = parse_consent_columns(
            consent_cols,
            default_notice=notice if notice is not None else self.setting("notice_version"),
            today=today(moment),
        )
        return NewRecordInput(type_name, values, consent)

    def _check_row(
        self,
        type_name: str,
        row: Mapping[str, str] | BadRow,
        moment: datetime,
        notice: str | None = None,
        notice_sha256: Callable[[str], str] | None = None,
    ) -> str | None:
        if isinstance(row, BadRow):
            return row.reason
        try:
            item = self._row_input(type_name, row, moment, notice)
            values = self._schema.validate_record(item.type, item.values)
            dob_text = values.get("date_of_birth")
            dob = datetime.fromisoformat(dob_text).date() if dob_text else None
            check_consent(item.consent, date_of_birth=dob, schema=self._schema, today=today(moment))
            (notice_sha256 or self.notice_sha256)(item.consent.notice_version)
        except (ValidationError, UsageError) as exc:
            return str(exc)
        return None

    def list_records(self, *, now: datetime | None = None) -> Iterator[RecordInfo]:
        """Bookkeeping of every record (never a value); the listing is logged."""
        moment = self._now(now)
        self._require(ROLES, "record.list", moment, "listing records")
        self._log(
            [Event(self.user, "record.list", detail={"count": self._store.count_records()})], moment
        )
        after = ""
        while True:
            page = self._store.iter_records(after=after)
            if not page:
                return
            for row in page:
                yield self._record_info(row)
            after = page[-1].id

    def record_info(self, record_id: str) -> RecordInfo:
        """Bookkeeping of one record."""
        row = self._store.get_record(_check_id(record_id, "record"))
        if row is None:
            if self._store.tombstone(record_id):
                raise NotFound(f"record {record_id} was deleted")
            raise NotFound(f"no record {record_id}")
        return self._record_info(row)

    def _record_info(self, row: RecordRow) -> RecordInfo:
        consent = row.consent
        return RecordInfo(
            row.id,
            row.type,
            row.version,
            row.created_at,
            row.created_by,
            row.updated_at,
            tuple(consent.get("purposes", ())),
            row.retain_until,
            str(consent.get("by", "")),
            str(consent.get("notice_version", "")),
            tuple(self._store.field_names(row.id)),
            row.metadata,
        )

    # ---------------------------------------------------------------- requests

    def request_access(
        self,
        records: Sequence[str],
        fields: Sequence[str],
        purpose: str,
        reason: str,
        *,
        now: datetime | None = None,
    ) -> str:
        """File an access request for named records, fields and purpose; return its id."""
        moment = self._now(now)
        self._require(_WRITERS, "request.create", moment, "requesting access")
        recs = tuple(dict.fromkeys(_check_id(r, "record") for r in records))
        flds = tuple(dict.fromkeys(fields))
        if not recs or not flds:
            raise UsageError("a request names at least one record and one field")
        self._schema.check_purpose(purpose)
        reason = reason.strip()
        if not reason or len(reason) > 1000:
            raise UsageError("--reason must say why, in at most 1000 characters")
        cap = int(self.setting("max_records"))
        if len(recs) > cap:
            raise UsageError(
                f"a request may name at most {cap} records (to prevent bulk copying); "
                "split it and explain each"
            )
        for rid in recs:
            row = self._store.get_record(rid)
            if row is None:
                raise NotFound(
                    f"no record {rid}" + (" (deleted)" if self._store.tombstone(rid) else "")
                )
            declared = self._schema.record_type(row.type).fields
            for f in flds:
                if f not in declared:
                    raise UsageError(
                        f"field {f!r} is not in the {row.type} schema: choose from "
                        + ", ".join(declared)
                    )
        request_id = _new_id()
        with self._store.write():
            self._store.add_request(
                RequestRow(
                    request_id,
                    self.user,
                    recs,
                    flds,
                    purpose,
                    reason,
                    iso(moment),
                    "pending",
                    None,
                    None,
                    None,
                )
            )
            _audit.append(
                self._store,
                [
                    Event(
                        self.user,
                        "request.create",
                        records=recs,
                        fields=flds,
                        purpose=purpose,
                        request=request_id,
                    )
                ],
                moment,
            )
        return request_id

    def requests(self, status: str | None = "pending") -> list[RequestInfo]:
        """Access requests with ``status`` (``None`` for all); logged.

        Officers and admins see every request; staff see their own, with the
        decision and the officer's reason, so they learn why one was denied.
        """
        moment = self._now(None)
        self._require(ROLES, "request.list", moment, "listing requests")
        rows = self._store.list_requests(status)
        if self._roles.isdisjoint(("officer", "admin")):
            rows = [r for r in rows if r.requester == self.user]
        self._log([Event(self.user, "request.list", detail={"count": len(rows)})], moment)
        return [
            RequestInfo(
                r.id,
                r.requester,
                r.records,
                r.fields,
                r.purpose,
                r.reason,
                r.created_at,
                r.status,
                r.decided_by,
                r.decision_reason,
            )
            for r in rows
        ]

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
        moment = self._now(now)
        self._require(("officer",), "request.approve", moment, "approving requests")
        req = self._store.get_request(_check_id(request_id, "request"))
        if req is None:
            raise NotFound(f"no request {request_id}")
        max_ttl = timedelta(seconds=int(self.setting("max_ttl_s")))
        ttl = ttl if ttl is not None else timedelta(seconds=int(self.setting("default_ttl_s")))
        base = Event(
            self.user,
            "request.approve",
            "denied",
            records=req.records,
            fields=req.fields,
            purpose=req.purpose,
            request=req.id,
        )

        def refuse(reason: str, message: str, usage: bool = False) -> NoReturn:
            event = dataclasses.replace(base, detail={"reason": reason})
            if usage:
                # Logged like every refusal, but reported as a usage error (exit 2).
                self._log([event], moment)
                raise UsageError(message)
            self._deny(event, message, moment)

        if req.status != "pending":
            raise UsageError(f"request {req.id} is already {req.status}")
        if req.requester == self.user:
            refuse(
                "own request", "an officer cannot approve their own request; ask another officer"
            )
        if ttl <= timedelta(0) or ttl > max_ttl:
            refuse("ttl", f"the TTL must be positive and at most {max_ttl}", usage=True)
        max_uses = int(self.setting("max_uses"))
        if not 1 <= uses <= max_uses:
            refuse("uses", f"uses must be between 1 and {max_uses}", usage=True)
        if len(req.records) > int(self.setting("max_records")):
            refuse("cap", f"more than {self.setting('max_records')} records in one approval")
        day = today(moment).isoformat()
        selections: list[Selection] = []
        for rid in req.records:
            row = self._store.get_record(rid)
            blob = self._store.get_keyblob(rid)
            if row is None or blob is None:
                refuse("deleted", f"record {rid} was deleted")
            if row.retain_until < day:
                refuse("retention", f"record {rid} is past its retention date ({row.retain_until})")
            if req.purpose not in row.consent.get("purposes", ()):
                refuse(
                    "purpose",
                    f"record {rid} has no consent for the purpose {req.purpose!r} "
                    "(record a new consent first)",
                )
            if row.consent.get("notice_version") != self.setting("notice_version"):
                refuse(
                    "notice",
                    f"record {rid} consented to notice {row.consent.get('notice_version')!r}, "
                    f"but the current notice is {self.setting('notice_version')!r}: "
                    "renew the consent first",
                )
            selections.append(Selection(WrappedRecord(rid, blob[0], blob[1]), req.fields))
        requester = self._public(req.requester)
        try:
            provider = self._officer_provider()
        except AccessDenied as exc:
            refuse("no custodian key", str(exc))
        grant_id = _new_id()
        material = provider.release(
            selections, requester, grant_id, wrap_ttl=int(ttl.total_seconds())
        )
        claims = _tokens.GrantClaims(
            jti=grant_id,
            req=req.id,
            iss=self.user,
            sub=req.requester,
            vault=self.vault_id,
            rec=req.records,
            fld=req.fields,
            pur=req.purpose,
            iat=moment,
            nbf=moment,
            exp=moment + ttl,
            uses=uses,
            keys=material,
        )
        token = _tokens.issue(self._me, claims)
        with self._store.write():
            if not self._store.decide_request(
                req.id, status="approved", by=self.user, at=iso(moment), reason=None
            ):
                raise UsageError(f"request {req.id} was decided meanwhile")
            self._store.add_grant(
                GrantRow(
                    grant_id,
                    req.id,
                    self.user,
                    req.requester,
                    iso(moment),
                    iso(moment + ttl),
                    uses,
                    0,
                    None,
                    None,
                    None,
                )
            )
            _audit.append(
                self._store,
                [
                    Event(
                        self.user,
                        "request.approve",
                        records=req.records,
                        fields=req.fields,
                        purpose=req.purpose,
                        request=req.id,
                        grant=grant_id,
                        detail={"expires": iso(moment + ttl), "uses": uses},
                    )
                ],
                moment,
            )
            note = self._sign_checkpoint(moment, full=False)
        try:
            self._witness(note)
        except ChildVaultError:
            # Fail closed: an approval whose checkpoint is not witnessed is withdrawn.
            with contextlib.suppress(ChildVaultError):
                self.revoke(grant_id, now=moment)
            raise
        return Approval(grant_id, req.id, req.requester, token, iso(moment + ttl), uses, note)

    def deny(self, request_id: str, reason: str, *, now: datetime | None = None) -> None:
        """Officer: deny a pending request with a reason."""
        moment = self._now(now)
        self._require(("officer",), "request.deny", moment, "denying requests")
        req = self._store.get_request(_check_id(request_id, "request"))
        if req is None:
            raise NotFound(f"no request {request_id}")
        reason = reason.strip()
        if not reason or len(reason) > 1000:
            raise UsageError("--reason must say why, in at most 1000 characters")
        with self._store.write():
            if not self._store.decide_request(
                req.id, status="denied", by=self.user, at=iso(moment), reason=reason
            ):
                raise UsageError(f"request {req.id} is already {req.status}")
            _audit.append(
                self._store,
                [
                    Event(
                        self.user,
                        "request.deny",
                        records=req.records,
                        fields=req.fields,
                        purpose=req.purpose,
                        request=req.id,
                    )
                ],
                moment,
            )

    def revoke(self, grant_id: str, *, now: datetime | None = None) -> None:
        """Officer: revoke a grant; later reads with its token are denied."""
        moment = self._now(now)
        self._require(("officer",), "grant.revoke", moment, "revoking grants")
        grant = self._store.get_grant(_check_id(grant_id, "grant"))
        if grant is None:
            raise NotFound(f"no grant {grant_id}")
        with self._store.write():
            if not self._store.revoke_grant(grant.id, at=iso(moment), by=self.user):
                raise UsageError(f"grant {grant.id} is already revoked")
            _audit.append(
                self._store,
                [Event(self.user, "grant.revoke", request=grant.request_id, grant=grant.id)],
                moment,
            )

    # ------------------------------------------------------------------ reading

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
        return self._read_with_claims(token, records, fields, self._now(now))[1]

    def _read_with_claims(
        self,
        token: str,
        records: Sequence[str] | None,
        fields: Sequence[str] | None,
        moment: datetime,
    ) -> tuple[_tokens.GrantClaims, dict[str, dict[str, str]]]:
        """:meth:`read_with_grant`, also returning the verified claims (for reports)."""
        claims = self._check_grant(token, records, fields, moment)
        want_recs = tuple(records) if records else claims.rec
        want_flds = tuple(fields) if fields else claims.fld
        with self._store.write():
            if not self._store.use_grant(claims.jti):
                self._store_denied_in_tx(
                    claims, want_recs, want_flds, "uses exhausted or revoked", moment
                )
                denied = True
            else:
                _audit.append(self._store, [self._read_event(claims, want_recs, want_flds)], moment)
                denied = False
        if denied:
            raise ApprovalInvalid("uses exhausted or revoked")
        try:
            keys = self._redeem(claims)
            return claims, self._decrypt(keys, want_recs, want_flds)
        except (ApprovalInvalid, DecryptionFailed) as exc:
            reason = (exc.detail or "failed")[:200]
            self._log([self._read_event(claims, want_recs, want_flds, "error", reason)], moment)
            raise
        except (ProviderUnavailable, AccessDenied) as exc:
            # The key provider failed (down, sealed, token or policy) before any
            # plaintext existed: log it and give the use back, so the read can be
            # retried once the fault is gone (an unwrapped token stays unusable).
            with contextlib.suppress(ChildVaultError), self._store.write():
                self._store.refund_grant_use(claims.jti)
                reason = f"key provider: {type(exc).__name__}"
                _audit.append(
                    self._store,
                    [self._read_event(claims, want_recs, want_flds, "error", reason)],
                    moment,
                )
            raise

    def _store_denied_in_tx(
        self,
        claims: _tokens.GrantClaims,
        recs: Sequence[str],
        flds: Sequence[str],
        reason: str,
        moment: datetime,
    ) -> None:
        _audit.append(self._store, [self._read_event(claims, recs, flds, "denied", reason)], moment)

    def _read_event(
        self,
        claims: _tokens.GrantClaims,
        recs: Sequence[str],
        flds: Sequence[str],
        outcome: str = "ok",
        reason: str | None = None,
    ) -> Event:
        """The ``grant.read`` log entry of a read with ``claims`` (its outcome and why)."""
        return Event(
            self.user,
            "grant.read",
            outcome,
            records=recs,
            fields=flds,
            purpose=claims.pur,
            request=claims.req,
            grant=claims.jti,
            detail={} if reason is None else {"reason": reason},
        )

    def _check_grant(
        self,
        token: str,
        records: Sequence[str] | None,
        fields: Sequence[str] | None,
        moment: datetime,
    ) -> _tokens.GrantClaims:
        claims: _tokens.GrantClaims | None = None

        def fail(reason: str) -> NoReturn:
            recs = [r for r in (records or (claims.rec if claims else ())) if _is_id(r)][:100]
            flds = [f for f in (fields or (claims.fld if claims else ())) if f.isidentifier()][:100]
            self._log(
                [
                    Event(
                        self.user,
                        "grant.read",
                        "denied",
                        records=recs,
                        fields=flds,
                        purpose=claims.pur if claims else None,
                        request=claims.req if claims else None,
                        grant=claims.jti if claims else None,
                        detail={"reason": reason},
                    )
                ],
                moment,
            )
            raise ApprovalInvalid(reason)

        try:
            kid = _tokens.key_id(token)
        except ApprovalInvalid as exc:
            fail(exc.detail or "malformed token")
        signer: UserRow | None = None
        for user in self._store.list_users():
            if _tokens.paserk_pid(user.sign_key) == kid:
                signer = user
                break
        if signer is None:
            fail("signed by a key not registered in this vault")
        try:
            claims = _tokens.verify(token, signer.sign_key)
        except ApprovalInvalid as exc:
            fail(exc.detail or "invalid token")
        if "officer" not in signer.roles:
            fail(f"signed by {signer.name}, who is not an officer")
        if claims.iss != signer.name:
            fail("issuer claim does not match the signing key")
        if claims.vault != self.vault_id:
            fail("token from another vault")
        if claims.sub != self.user:
            fail(f"token issued to {claims.sub}, not {self.user}")
        if moment < claims.nbf or claims.iat > moment + timedelta(minutes=5):
            fail("token not yet valid")
        if moment >= claims.exp:
            fail("token expired")
        if records and not set(records) <= set(claims.rec):
            fail("record outside the grant's scope")
        if fields and not set(fields) <= set(claims.fld):
            fail("field outside the grant's scope")
        grant = self._store.get_grant(claims.jti)
        if grant is None:
            fail("grant unknown to this vault")
        if (grant.request_id, grant.officer, grant.requester) != (
            claims.req,
            claims.iss,
            claims.sub,
        ):
            fail("token does not match the recorded grant")
        if grant.revoked_at is not None:
            fail("grant revoked")
        if grant.uses >= grant.max_uses or claims.uses != grant.max_uses:
            fail("uses exhausted")
        req = self._store.get_request(claims.req)
        if (
            req is None
            or req.status != "approved"
            or (req.records, req.fields, req.purpose) != (claims.rec, claims.fld, claims.pur)
        ):
            fail("token does not match the approved request")
        day = today(moment).isoformat()
        for rid in records or claims.rec:
            row = self._store.get_record(rid)
            if row is None or self._store.get_keyblob(rid) is None:
                fail(f"record {rid} was deleted")
            # Re-checked at every read: consent narrowed or retention passed since approval.
            if claims.pur not in row.consent.get("purposes", ()):
                fail(f"record {rid} no longer has consent for {claims.pur}")
            if row.retain_until < day:
                fail(f"record {rid} is past its retention date")
        return claims

    def _redeem(self, claims: _tokens.GrantClaims) -> ReleasedKeys:
        grant = self._store.get_grant(claims.jti)
        if grant is not None and grant.cache is not None:
            return _keys_from_cache(self._me.unseal(grant.cache), claims.jti)
        keys = self._writer_provider().redeem(claims.keys, self._me, claims.jti)
        if self._config.provider == "vault" and claims.uses > 1:
            # Vault wrapping tokens unwrap once: keep the keys, sealed to the requester only.
            with self._store.write():
                self._store.set_grant_cache(
                    claims.jti, self._me.public.seal(_keys_to_cache(keys, claims.jti))
                )
        return keys

    def _decrypt(
        self, keys: ReleasedKeys, records: Sequence[str], fields: Sequence[str]
    ) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for rid in records:
            rkeys = keys.get(rid)
            if rkeys is None:
                raise ApprovalInvalid("grant material lacks a record in scope")
            stored = self._store.get_fields(rid, list(fields))
            values: dict[str, str] = {}
            for name in fields:
                if name not in stored:
                    continue  # an optional field this record does not have
                version, sealed = stored[name]
                key = rkeys.get(name)
                if key is None:
                    raise ApprovalInvalid("grant material lacks a field in scope")
                plain = open_field(
                    sealed, key, vault_id=self.vault_id, record_id=rid, field=name, version=version
                )
                values[name] = plain.decode("utf-8")
            out[rid] = values
        return out

    # ----------------------------------------------------------------- notices

    def notices(self) -> dict[str, dict[str, str]]:
        """The register of published notices: version -> sha256, date, publisher."""
        raw = self._store.get_meta("notices") or "{}"
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise IntegrityError("the notice register in the database is damaged") from exc
        return {str(k): dict(v) for k, v in doc.items()}

    def notice_sha256(self, version: str) -> str:
        """The SHA-256 of a published notice version; refuse an unpublished one."""
        entry = self.notices().get(version)
        if entry is None:
            raise ValidationError(
                f"notice version {version!r} was never published in this vault: publish it "
                "with `childvault notice publish` (admin) or use "
                f"{self.setting('notice_version')!r}",
                field="notice_version",
            )
        return str(entry["sha256"])

    def publish_notice(
        self, version: str, text: bytes, *, now: datetime | None = None
    ) -> dict[str, str]:
        """Admin: register a notice text (P-10) and make it the current version.

        Records consented under another version need fresh consent before an
        approval (``consent renew``). Publishing is logged with the text's hash.
        """
        moment = self._now(now)
        self._require(("admin",), "notice.publish", moment, "publishing notices")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", version):
            raise UsageError("--version: 1-32 letters, digits, '.', '_' or '-'")
        if not text.strip():
            raise UsageError("the notice file is empty")
        digest = hashlib.sha256(text).hexdigest()
        register = self.notices()
        if version in register and register[version]["sha256"] != digest:
            raise UsageError(
                f"notice version {version!r} was already published with other text: "
                "a changed text needs a new version"
            )
        register[version] = {"sha256": digest, "published_at": iso(moment), "by": self.user}
        with self._store.write():
            self._store.set_meta("notices", json.dumps(register, sort_keys=True))
            self._store.set_meta("notice_version", version)
            _audit.append(
                self._store,
                [Event(self.user, "notice.publish", detail={"version": version, "sha256": digest})],
                moment,
            )
        return {"version": version, "sha256": digest}

    def health(self) -> list[tuple[str, str, str]]:
        """(check, ok|warn|fail, message) about users, keys and the provider, for doctor."""
        out: list[tuple[str, str, str]] = []
        users = self._store.list_users()
        officers = [u for u in users if "officer" in u.roles]
        out.append(
            (
                "users",
                "ok" if officers else "warn",
                f"{len(users)} user(s), {len(officers)} officer(s)"
                + ("" if officers else ": add an officer before writing records"),
            )
        )
        out.append(("records", "ok", f"{self._store.count_records()} record(s)"))
        current = self.setting("notice_version")
        if self.notices().get(current, {}).get("sha256") == _packaged_notice_sha256():
            out.append(
                (
                    "notice",
                    "warn",
                    f"the current notice {current} is the unfilled template: publish your "
                    "institution's notice with `childvault notice publish` (P-10)",
                )
            )
        pending = self._store.pending_shreds()
        if pending:
            out.append(
                (
                    "shredding",
                    "warn",
                    f"{len(pending)} deleted record(s) whose key material is not yet "
                    "destroyed in the provider: run `childvault retention sweep`",
                )
            )
        if self._config.provider == "local":
            gens = self._store.custodians()
            states = ", ".join(f"generation {g} {s}" for g, _, s in gens) or "none"
            status = "ok" if any(s == "current" for _, _, s in gens) else "warn"
            if any(s == "pending" for _, _, s in gens):
                status = "warn"
                states += ": a key rotation was interrupted; run `childvault keys rotate` again"
            out.append(("custodian", status, states))
        else:
            out.extend(_vault_checks(self._vault_provider().diagnose()))
        return out

    # -------------------------------------------------------------------- audit

    def _sign_checkpoint(self, moment: datetime, *, full: bool = True) -> str:
        """Sign the current log root as the acting user; store it (inside a write).

        The log is verified first (hashes, chain, every stored and witnessed
        checkpoint), so a signature never blesses a log an insider rewrote or
        truncated. With ``full=False`` (approvals) the check resumes from the
        acting user's own latest checkpoint: the entries it covers are fixed
        by that signature, so only the newer ones are read and the cost of an
        approval does not grow with the log (docs/decisions.md).
        """
        report = _audit.verify(
            self._store,
            origin=log_origin(self.vault_id),
            signers=self._signers(),
            witness_notes=_audit.read_witness(self.witness_path),
            resume=None if full else self._own_resume_point(),
        )
        cp = _note.Checkpoint(log_origin(self.vault_id), report.entries, report.root)
        note = _note.sign_note(
            cp.body(),
            signer_name(self.vault_id, self.user),
            self._me.sign,
            self._me.public.signing_key,
        )
        self._store.add_checkpoint(
            cp.size, cp.root, note, self.user, iso(moment), report.resume_state
        )
        return note

    def _own_resume_point(self) -> _audit.Resume | None:
        """Where the acting user's latest checkpoint left the log, if it holds up.

        The signature is checked with the unlocked identity's own key (not a
        key from the database, which an insider could edit), and the stored
        Merkle state must give the signed root. Anything else: ``None``, and
        the caller verifies the whole log.
        """
        found = self._store.latest_checkpoint_by(self.user)
        if found is None:
            return None
        note, state = found
        name = signer_name(self.vault_id, self.user)
        try:
            cp, _ = _note.verify_note(note, {name: self._me.public.signing_key})
        except IntegrityError:
            return None
        if cp.origin != log_origin(self.vault_id):
            return None
        return _audit.Resume.from_state(cp.size, state, cp.root)

    def _witness(self, note: str) -> None:
        path = self.witness_path
        line = json.dumps({"note": note}, ensure_ascii=False) + "\n"
        try:
            # Created private like every other file of the vault (0600).
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StorageError(
                f"could not append the checkpoint to the witness file {path}: {exc.strerror}"
            ) from exc

    def checkpoint(self, *, now: datetime | None = None) -> str:
        """Officer or admin: sign a checkpoint of the whole log and witness it."""
        moment = self._now(now)
        self._require(("officer", "admin"), "audit.checkpoint", moment, "signing checkpoints")
        with self._store.write():
            _audit.append(self._store, [Event(self.user, "audit.checkpoint")], moment)
            note = self._sign_checkpoint(moment)
        self._witness(note)
        return note

    def verify_audit(self, *, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Verify the whole log against its stored and witnessed checkpoints, then
        check that every registered user and custodian key was put there by a
        logged operation (an insider editing those tables directly is caught)."""
        report = _audit.verify(
            self._store,
            origin=log_origin(self.vault_id),
            signers=self._signers(),
            witness_notes=_audit.read_witness(self.witness_path),
            progress=progress,
        )
        self._verify_registrations()
        return report

    def _logged_registrations(self) -> tuple[dict[str, dict[str, Any]], dict[int, set[str]]]:
        """From the log: each user's ``user.add`` detail, and every custodian public key
        (hex) a logged creation or rotation introduced, by generation."""
        added: dict[str, dict[str, Any]] = {}
        custodians: dict[int, set[str]] = {}
        for entry in self._store.audit_entries_with_actions(
            ("user.add", "custodian.create", "keys.rotate")
        ):
            obj = _audit.decode_entry(entry)
            detail = obj.get("detail", {})
            if obj.get("outcome") != "ok":
                continue
            if obj["action"] == "user.add":
                added[str(detail.get("user"))] = detail
            elif obj["action"] in ("custodian.create", "keys.rotate") and "public_key" in detail:
                generation = int(detail.get("generation", 0))
                custodians.setdefault(generation, set()).add(str(detail["public_key"]))
        return added, custodians

    def _check_custodian_logged(self, generation: int, public: bytes) -> None:
        if public.hex() not in self._logged_registrations()[1].get(generation, set()):
            raise IntegrityError(
                f"the custodian key (generation {generation}) in the database was not created "
                "by a logged operation: nothing will be sealed to it; run `childvault audit "
                "verify` and alert the officers"
            )

    def _verify_registrations(self) -> None:
        added, custodians = self._logged_registrations()
        for user in self._store.list_users():
            logged = added.get(user.name)
            if logged != _user_detail(
                user.name, user.roles, PublicIdentity(user.name, user.enc_key, user.sign_key)
            ):
                raise IntegrityError(
                    f"audit log integrity failure: user {user.name!r} is registered with keys "
                    "or roles that no logged `user add` gave them (the users table was edited)"
                )
        if self._config.provider == "local":
            for generation, public, _ in self._store.custodians():
                if public.hex() not in custodians.get(generation, set()):
                    raise IntegrityError(
                        "audit log integrity failure: custodian key generation "
                        f"{generation} was not created by a logged operation "
                        "(the custodians table was edited)"
                    )

    def audit_entries(self, *, record: str | None = None) -> Iterator[dict[str, Any]]:
        """Officer or admin: the log entries (optionally about one record), with hashes."""
        self._require(("officer", "admin"), "audit.read", self._now(None), "reading the audit log")
        for _, entry, digest in self._store.iter_audit():
            obj = _audit.decode_entry(entry)
            if record is not None and record not in obj.get("records", ()):
                continue
            yield {"entry": obj, "hash": digest.hex()}

    def signer_vkeys(self) -> list[str]:
        """Verifier keys (signed-note vkey form) of every checkpoint signer."""
        return [_note.vkey(name, key) for name, key in sorted(self._signers().items())]


def _vault_checks(diag: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Doctor lines from ``VaultProvider.diagnose()``."""
    addr = diag.get("addr")
    if not diag.get("reachable"):
        return [("vault", "fail", f"{addr} is unreachable: is the server running? (VAULT_ADDR)")]
    if diag.get("sealed"):
        return [("vault", "fail", f"{addr} is sealed: unseal it")]
    out = [("vault", "ok", f"{addr} reachable, unsealed, version {diag.get('version')}")]
    mounts = ", ".join(
        f"{label} {m.get('path')} {'present' if m.get('present') else 'MISSING'}"
        for label, m in (diag.get("mounts") or {}).items()
    )
    out.append(("vault mounts", "ok" if mounts and "MISSING" not in mounts else "fail", mounts))
    caps = diag.get("capabilities") or {}
    granted = sorted(
        label for label, c in caps.items() if c.get("capabilities") not in ([], ["deny"])
    )
    out.append(
        (
            "vault token",
            "ok",
            f"acts as {', '.join(diag.get('roles') or []) or 'no childvault role'}"
            f"; capabilities on: {', '.join(granted) or 'none'}",
        )
    )
    for problem in diag.get("problems") or []:
        out.append(("vault", "fail", str(problem)))
    return out


def _user_detail(
    name: str, roles: Sequence[str], public: PublicIdentity
) -> dict[str, str | list[str]]:
    """The ``user.add`` log detail: who, which roles, which public keys."""
    return {
        "user": name,
        "roles": sorted(roles),
        "enc_key": public.encryption_key.hex(),
        "sign_key": public.signing_key.hex(),
    }


def _packaged_notice_sha256() -> str:
    """SHA-256 of the notice template shipped as version 2026-1 (docs/notice-template.md)."""
    from importlib import resources

    data = resources.files("childvault.vault").joinpath("data/notice-template.md").read_bytes()
    return hashlib.sha256(data).hexdigest()


def _field_bytes(value: str) -> bytes:
    return value.encode("utf-8")


def _is_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _keys_to_cache(keys: ReleasedKeys, grant_id: str) -> bytes:
    return json.dumps(
        {
            "grant": grant_id,
            "keys": {
                rid: {f: [k.version, base64.b64encode(k.key).decode()] for f, k in fields.items()}
                for rid, fields in keys.items()
            },
        }
    ).encode()


def _keys_from_cache(raw: bytes, grant_id: str) -> ReleasedKeys:
    try:
        doc = json.loads(raw)
        if doc["grant"] != grant_id:
            raise ApprovalInvalid("cached keys belong to another grant")
        return {
            rid: {f: FieldKey(int(v), base64.b64decode(k)) for f, (v, k) in fields.items()}
            for rid, fields in doc["keys"].items()
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise ApprovalInvalid("cached grant keys are malformed") from exc


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path)
