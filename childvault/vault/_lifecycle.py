"""Record lifecycle: correction (P-19), deletion and consent withdrawal by
crypto-shredding (P-20), consent changes (P-9, P-14, M-12), retention sweeps
(P-12), decommissioning (P-23), key rotation and blind-index lookup.

A mixin of :class:`vault.Vault`. Every operation appends its audit entries in
the transaction that changes the database; operations on the Vault server
(destroying salts, rotating the Transit key) happen after that commit and are
tracked so an interrupted run can be completed by running it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from childvault.keys import (
    AccessDenied,
    CustodianSecret,
    KeyProvider,
    LocalProvider,
    NotFound,
    PublicIdentity,
    Selection,
    StorageError,
    UsageError,
    WrappedRecord,
    blob_generation,
)
from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._consent import Consent, check_consent
from childvault.vault._fieldcrypto import open_field, seal_field
from childvault.vault._time import iso, today

if TYPE_CHECKING:
    from childvault.keys import Identity
    from childvault.keys._vault import VaultProvider
    from childvault.vault._config import Config, Home
    from childvault.vault._schema import Schema
    from childvault.vault._store import RecordRow, Store

#: Bytes kept of a blind-index MAC: 16 bits, so each tag is shared by many
#: possible values and an insider with the index key cannot confirm a guessed
#: identifier offline without false positives (CipherSweet's advice).
INDEX_TAG_BYTES = 2
_PAGE = 500
_DELETE_REASONS = ("request", "withdrawal", "retention", "decommission")


def _id(value: str) -> str:
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise NotFound(f"no record {value!r}: ids are 32 lowercase hex characters")
    return value


class LifecycleMixin:
    """Lifecycle methods of :class:`vault.Vault`."""

    if TYPE_CHECKING:
        _store: Store
        _schema: Schema
        _config: Config
        _home: Home
        _me: Identity
        _secrets: dict[str, bytes]
        _writer: LocalProvider | None
        _officer: LocalProvider | None

        @property
        def user(self) -> str: ...
        @property
        def vault_id(self) -> str: ...
        def _now(self, now: datetime | None) -> datetime: ...
        def _log(self, events: Sequence[Event], now: datetime) -> None: ...
        def _deny(self, event: Event, message: str, now: datetime) -> NoReturn: ...
        def _require(self, roles: Sequence[str], action: str, now: datetime, what: str) -> None: ...
        def _writer_provider(self) -> KeyProvider: ...
        def _officer_provider(self) -> KeyProvider: ...
        def _vault_provider(self) -> VaultProvider: ...
        def _local_officer(self) -> LocalProvider: ...
        def notice_sha256(self, version: str) -> str: ...
        def _sign_checkpoint(self, moment: datetime, *, full: bool = True) -> str: ...
        def _witness(self, note: str) -> None: ...

    # ------------------------------------------------------------ helpers

    def _live(self, record_id: str) -> RecordRow:
        row = self._store.get_record(_id(record_id))
        if row is None:
            if self._store.tombstone(record_id):
                raise NotFound(f"record {record_id} was deleted")
            raise NotFound(f"no record {record_id}")
        return row

    def _wrapped(self, record_id: str) -> WrappedRecord:
        found = self._store.get_keyblob(record_id)
        if found is None:
            raise NotFound(f"record {record_id} has no keys (deleted)")
        return WrappedRecord(record_id, found[0], found[1])

    def index_tags(self, field: str, values: Sequence[str]) -> list[bytes]:
        """Truncated keyed blind-index tags of ``values`` for ``field``.

        Local provider: HMAC-SHA256 under the vault's index key (sealed to every
        user like the database key). Vault provider: Transit ``hmac`` with the
        pinned index-key version.
        """
        if not values:
            return []
        if self._config.provider == "vault":
            macs = self._vault_provider().hmac(field, [v.encode("utf-8") for v in values])
        else:
            key = self._secrets["index"]
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

    def _internal_values(
        self, rows: Sequence[RecordRow], fields: Sequence[str], grant_id: str
    ) -> dict[str, dict[str, str]]:
        """Officer-internal decryption (consent checks): release to oneself, then open.

        Callers log their entry and commit it first. Goes through the provider,
        so Vault policy still applies (the officer's wrapped decrypt).
        """
        selections = [Selection(self._wrapped(r.id), fields) for r in rows]
        material = self._officer_provider().release(
            selections, self._me.public, grant_id, wrap_ttl=300
        )
        keys = self._writer_provider().redeem(material, self._me, grant_id)
        out: dict[str, dict[str, str]] = {}
        for row in rows:
            stored = self._store.get_fields(row.id, list(fields))
            values: dict[str, str] = {}
            for name, (version, sealed) in stored.items():
                key = keys.get(row.id, {}).get(name)
                if key is None:
                    continue
                values[name] = open_field(
                    sealed,
                    key,
                    vault_id=self.vault_id,
                    record_id=row.id,
                    field=name,
                    version=version,
                ).decode("utf-8")
            out[row.id] = values
        return out

    # ---------------------------------------------------------- correction

    def correct(
        self, record_id: str, field: str, value: str, *, now: datetime | None = None
    ) -> int:
        """Officer: store a corrected value as a new field version (P-19).

        The new value gets a new key; the record's wrapped keys are replaced so
        the old version's key is gone (local: resealed without it; Vault: its
        salt destroyed). The log records that a correction happened, never the
        values. Returns the new field version.
        """
        moment = self._now(now)
        self._require(("officer",), "record.correct", moment, "correcting records")
        row = self._live(record_id)
        rtype = self._schema.record_type(row.type)
        spec = rtype.fields.get(field)
        if spec is None:
            raise UsageError(
                f"field {field!r} is not in the {row.type} schema: choose from "
                + ", ".join(rtype.fields)
            )
        if spec.metadata:
            raise UsageError(f"field {field!r} is clear metadata; it is not corrected this way")
        clean = self._schema.validate_field(row.type, field, value)
        old = self._store.get_fields(record_id, [field])
        new_fv = old[field][0] + 1 if field in old else 1
        sealed, key = seal_field(
            clean.encode("utf-8"),
            vault_id=self.vault_id,
            record_id=record_id,
            field=field,
            version=new_fv,
        )
        wrapped = self._wrapped(record_id)
        new_blob = self._officer_provider().replace(wrapped, row.version + 1, {field: key})
        tags = self.index_tags(field, [clean]) if spec.searchable else []
        try:
            with self._store.write():
                if not self._store.replace_keyblob(
                    record_id, wrapped.version, row.version + 1, new_blob
                ):
                    raise UsageError(
                        f"record {record_id} changed meanwhile; run the correction again"
                    )
                self._store.put_field(record_id, field, new_fv, sealed)
                self._store.update_record(
                    record_id, version=row.version + 1, updated_at=iso(moment), consent=None
                )
                if spec.searchable:
                    self._store.drop_index_tags(record_id, field)
                    self._store.add_index_tags([(field, t, record_id) for t in tags])
                _audit.append(
                    self._store,
                    [
                        Event(
                            self.user,
                            "record.correct",
                            records=[record_id],
                            fields=[field],
                            detail={"field_version": new_fv, "record_version": row.version + 1},
                        )
                    ],
                    moment,
                )
        except StorageError as exc:
            if self._config.provider != "vault":
                raise
            # Vault already replaced the salt: the old value is unreadable either way.
            raise StorageError(
                f"the corrected {field} could not be stored ({exc}); its old value's key is "
                "already destroyed in Vault: run the same `childvault correct` again once "
                "the problem is fixed"
            ) from exc
        self._store.compact_wal()
        return new_fv

    # ------------------------------------------------------------ deletion

    def delete(
        self,
        record_id: str,
        reason: str,
        *,
        category: str = "request",
        now: datetime | None = None,
    ) -> None:
        """Officer or admin: crypto-shred a record, leaving a tombstone (P-20).

        The rows (sealed values, wrapped keys, index tags) are removed and the
        tombstone and log entry written in one transaction; then the provider
        destroys what it holds outside the database (Vault: the record's salts).
        ``reason`` stays in the tombstone only; the log gets the ``category``.
        """
        moment = self._now(now)
        self._require(("officer", "admin"), "record.delete", moment, "deleting records")
        if category not in _DELETE_REASONS:
            raise UsageError(f"deletion category must be one of {', '.join(_DELETE_REASONS)}")
        reason = reason.strip()
        if not reason or len(reason) > 1000:
            raise UsageError("--reason must say why, in at most 1000 characters")
        _id(record_id)
        if self._store.get_record(record_id) is None:
            stone = self._store.tombstone(record_id)
            if stone is None:
                raise NotFound(f"no record {record_id}")
            if not stone[3]:
                self._destroy_keys([record_id])  # finish an interrupted deletion
                return
            raise NotFound(f"record {record_id} was already deleted on {stone[0]}")
        self._delete_rows([record_id], reason, category, moment)
        self._destroy_keys([record_id])

    def _delete_rows(
        self, record_ids: Sequence[str], reason: str, category: str, moment: datetime
    ) -> None:
        local = self._config.provider == "local"
        with self._store.write():
            for rid in record_ids:
                self._store.delete_record(rid, at=iso(moment), by=self.user, reason=reason)
            if local:
                # The sealed box was the only key material; it is gone with the row.
                self._store.mark_key_destroyed(record_ids)
            _audit.append(
                self._store,
                [
                    Event(self.user, "record.delete", records=[rid], detail={"category": category})
                    for rid in record_ids
                ],
                moment,
            )
        self._store.compact_wal()

    def _destroy_keys(self, record_ids: Sequence[str]) -> None:
        if self._config.provider != "vault" or not record_ids:
            return
        self._vault_provider().shred(record_ids)
        with self._store.write():
            self._store.mark_key_destroyed(record_ids)

    def withdraw_consent(
        self, record_id: str, *, reason: str = "consent withdrawn", now: datetime | None = None
    ) -> None:
        """Officer or admin: consent withdrawn, so the record is crypto-shredded (P-20)."""
        moment = self._now(now)
        self._require(("officer", "admin"), "consent.withdraw", moment, "withdrawing consent")
        self._live(record_id)
        self._log([Event(self.user, "consent.withdraw", records=[record_id])], moment)
        self.delete(record_id, reason, category="withdrawal", now=moment)

    # -------------------------------------------------------------- consent

    def update_consent(
        self, record_id: str, consent: Consent, *, now: datetime | None = None
    ) -> None:
        """Officer: record a new consent (more purposes, or a new notice version).

        The age rule (M-12) is checked against the record's date of birth, which
        the officer's process decrypts for that purpose only; the check and the
        consent change are logged.
        """
        moment = self._now(now)
        self._require(("officer",), "consent.renew", moment, "recording consent")
        row = self._live(record_id)
        grant_id = hashlib.sha256(f"consent|{record_id}|{iso(moment)}".encode()).hexdigest()[:32]
        self._log(
            [
                Event(
                    self.user,
                    "consent.renew",
                    records=[record_id],
                    fields=["date_of_birth"],
                    detail={"phase": "age check"},
                )
            ],
            moment,
        )
        dob_text = self._internal_values([row], ["date_of_birth"], grant_id)[record_id].get(
            "date_of_birth"
        )
        dob = datetime.fromisoformat(dob_text).date() if dob_text else None
        checked = check_consent(
            consent, date_of_birth=dob, schema=self._schema, today=today(moment)
        )
        checked = dataclasses.replace(
            checked, notice_sha256=self.notice_sha256(checked.notice_version)
        )
        previous = set(row.consent.get("purposes", ()))
        added = sorted(set(checked.purposes) - previous)
        with self._store.write():
            self._store.update_record(
                record_id, version=row.version, updated_at=iso(moment), consent=checked.to_json()
            )
            _audit.append(
                self._store,
                [
                    Event(
                        self.user,
                        "consent.add_purpose" if added else "consent.renew",
                        records=[record_id],
                        detail={
                            "notice_version": checked.notice_version,
                            "purposes": list(checked.purposes),
                            "added": added,
                        },
                    )
                ],
                moment,
            )

    def consent_of(self, record_id: str) -> Consent:
        """The record's current consent."""
        return Consent.from_json(self._live(record_id).consent)

    # ------------------------------------------------------------ retention

    def retention_sweep(
        self, *, dry_run: bool = False, now: datetime | None = None
    ) -> dict[str, Any]:
        """Admin or officer: crypto-shred every record past its retention date (P-12).

        Also completes deletions whose provider-side destruction was interrupted.
        """
        moment = self._now(now)
        self._require(("admin", "officer"), "retention.sweep", moment, "retention sweeps")
        day = today(moment).isoformat()
        due: list[str] = []
        while True:
            page = [r for r in self._store.records_due(day, limit=_PAGE) if r not in due]
            if dry_run:
                due.extend(page)
                break
            if not page:
                break
            self._delete_rows(page, f"retention date passed (sweep {day})", "retention", moment)
            self._destroy_keys(page)
            due.extend(page)
        pending = [] if dry_run else self._store.pending_shreds()
        if pending:
            self._destroy_keys(pending)
        if not dry_run:
            self._log(
                [
                    Event(
                        self.user,
                        "retention.sweep",
                        detail={"deleted": len(due), "completed": len(pending), "day": day},
                    )
                ],
                moment,
            )
        return {
            "ok": True,
            "dry_run": dry_run,
            "day": day,
            "due": len(due),
            "records": due,
            "completed_pending": len(pending),
        }

    # --------------------------------------------------------- decommission

    def decommission(self, *, confirm: bool, now: datetime | None = None) -> dict[str, Any]:
        """Admin: stop collection, shred every record, sign a final checkpoint (P-23).

        Writes ``decommission-report.json`` into the home (no child data).
        """
        moment = self._now(now)
        self._require(("admin",), "vault.decommission", moment, "decommissioning")
        if not confirm:
            raise UsageError("decommissioning destroys every record: pass --confirm")
        with self._store.write():
            self._store.set_meta("accepting_records", "0")
            _audit.append(
                self._store,
                [Event(self.user, "vault.decommission", detail={"phase": "start"})],
                moment,
            )
        shredded = 0
        while True:
            page = [r.id for r in self._store.iter_records(limit=_PAGE)]
            if not page:
                break
            self._delete_rows(page, "institution decommissioned", "decommission", moment)
            self._destroy_keys(page)
            shredded += len(page)
        pending = self._store.pending_shreds()
        self._destroy_keys(pending)
        if self._config.provider == "local":
            self._destroy_custodian()
        with self._store.write():
            _audit.append(
                self._store,
                [
                    Event(
                        self.user,
                        "vault.decommission",
                        detail={"phase": "done", "shredded": shredded},
                    )
                ],
                moment,
            )
            note = self._sign_checkpoint(moment)
        self._witness(note)
        report = {
            "ok": True,
            "vault_id": self.vault_id,
            "decommissioned_at": iso(moment),
            "by": self.user,
            "records_shredded": shredded,
            "records_remaining": self._store.count_records(),
            "final_checkpoint": note,
            "witness": str(self._config.witness_path(self._home)),
        }
        from childvault.keys._files import atomic_write

        atomic_write(
            self._home.path / "decommission-report.json",
            json.dumps(report, indent=2, ensure_ascii=False).encode() + b"\n",
        )
        return report

    def _destroy_custodian(self) -> None:
        """Decommissioning (local): remove the custodian key from every key slot and
        the database, so no copy of the database can be opened any more."""
        from childvault.keys import KeySlots

        base = {k: self._secrets[k] for k in ("db", "index")}
        slots = KeySlots(self._home.keyslots)
        for user in self._store.list_users():
            if "officer" in user.roles:
                slots.add(
                    PublicIdentity(user.name, user.enc_key, user.sign_key), self.vault_id, base
                )
        with self._store.write():
            for generation, _, _ in self._store.custodians():
                self._store.delete_custodian(generation)

    # ------------------------------------------------------------- rotation

    def rotate_keys(
        self,
        *,
        progress: Callable[[int, int], None] | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Rotate the key that wraps every record's keys; resumable.

        Local provider (an officer): a new custodian key pair is sealed to every
        officer, every record box is resealed to it, then the old pair is
        destroyed, so backups taken before become unreadable. Vault provider
        (an admin): the Transit key is rotated, every wrapped key is rewrapped
        inside Vault (no plaintext), then older key versions are retired.
        """
        moment = self._now(now)
        if self._config.provider == "vault":
            self._require(("admin",), "keys.rotate", moment, "rotating Vault keys")
            return self._rotate_vault(progress, moment)
        self._require(("officer",), "keys.rotate", moment, "rotating the custodian key")
        return self._rotate_local(progress, moment)

    def _rewrite_custodian_slots(self, generations: Sequence[int]) -> None:
        """Rewrite the key slot of every holder of the current custodian key so it
        holds exactly ``generations``: this is what destroys an old custodian key."""
        from childvault.keys import KeySlots

        current = [g for g, _, s in self._store.custodians() if s == "current"]
        if not current:
            return
        holders = self._store.custodian_holders(current[0])
        mine = {
            g: self._secrets[f"custodian/{g}"]
            for g in generations
            if f"custodian/{g}" in self._secrets
        }
        if len(mine) != len(generations):
            raise AccessDenied(f"{self.user!r} does not hold every custodian generation needed")
        base = {k: self._secrets[k] for k in ("db", "index")}
        entries = {f"custodian/{g}": secret for g, secret in mine.items()}
        slots = KeySlots(self._home.keyslots)
        for name in holders:
            user = self._store.get_user(name)
            if user is None:
                continue
            pub = PublicIdentity(user.name, user.enc_key, user.sign_key)
            slots.add(pub, self.vault_id, {**base, **entries})
        self._secrets = {**base, **entries}

    def _rotate_local(
        self, progress: Callable[[int, int], None] | None, moment: datetime
    ) -> dict[str, Any]:
        gens = self._store.custodians()
        current = next(g for g, _, s in gens if s == "current")
        pending = [g for g, _, s in gens if s == "pending"]
        retired = [g for g, _, s in gens if s == "retired"]
        self._local_officer()  # the acting officer must hold the current key
        if not pending and retired:
            # Interrupted after the switch: finish resealing to the current key.
            target = current
            resumed = True
        elif pending:
            target = pending[0]
            resumed = True
            if f"custodian/{target}" not in self._secrets:
                raise AccessDenied(
                    f"{self.user!r} holds no slot of the new custodian key (generation {target}); "
                    "an officer enrolled before the rotation started must finish it"
                )
        else:
            resumed = False
            target = max(g for g, _, _ in gens) + 1
            fresh = CustodianSecret.generate(target)
            self._secrets[f"custodian/{target}"] = fresh.secret_bytes()
            # Every holder of the current key gets the new one before any box moves.
            self._rewrite_custodian_slots([current, target])
            with self._store.write():
                self._store.add_custodian(target, fresh.public, "pending", iso(moment))
                for name in self._store.custodian_holders(current):
                    self._store.add_custodian_holder(target, name)
                _audit.append(
                    self._store,
                    [
                        Event(
                            self.user,
                            "keys.rotate",
                            detail={
                                "phase": "start",
                                "generation": target,
                                "public_key": fresh.public.hex(),
                            },
                        )
                    ],
                    moment,
                )
            del fresh
        base = self._local_officer()
        target_public = next(p for g, p, _ in self._store.custodians() if g == target)
        provider = base.retarget(target, target_public)
        if not provider.holds(target):
            raise AccessDenied(f"{self.user!r} cannot unlock custodian generation {target}")
        with self._store.write():
            for g, _, s in self._store.custodians():
                if s == "current" and g != target:
                    self._store.set_custodian_state(g, "retired")
            self._store.set_custodian_state(target, "current")
        self._officer = None
        self._writer = None
        total = self._store.count_records()
        done = resealed = 0
        after = ""
        while True:
            page = self._store.iter_keyblobs(after=after, limit=_PAGE)
            if not page:
                break
            with self._store.write():
                for rid, ver, blob in page:
                    if blob_generation(blob) != target:
                        new = provider.rekey(WrappedRecord(rid, ver, blob))
                        resealed += int(self._store.put_keyblob_if_version(rid, ver, new))
            after = page[-1][0]
            done += len(page)
            if progress is not None:
                progress(min(done, total), total)
        with self._store.write():
            # Under the write lock no one can add a blob of an old generation.
            after = ""
            while True:
                page = self._store.iter_keyblobs(after=after, limit=_PAGE)
                if not page:
                    break
                for rid, ver, blob in page:
                    if blob_generation(blob) != target:
                        rewrapped = provider.rekey(WrappedRecord(rid, ver, blob))
                        resealed += int(self._store.put_keyblob_if_version(rid, ver, rewrapped))
                after = page[-1][0]
            retired = [g for g, _, s in self._store.custodians() if s == "retired"]
            for g in retired:
                self._store.delete_custodian(g)
            _audit.append(
                self._store,
                [
                    Event(
                        self.user,
                        "keys.rotate",
                        detail={
                            "phase": "done",
                            "generation": target,
                            "resealed": resealed,
                            "destroyed": [str(g) for g in retired],
                            "resumed": resumed,
                        },
                    )
                ],
                moment,
            )
        # Now drop the old secrets from every key slot: the old key is gone.
        self._rewrite_custodian_slots([target])
        self._store.compact_wal()
        self._officer = None
        self._writer = None
        return {
            "ok": True,
            "provider": "local",
            "generation": target,
            "resealed": resealed,
            "destroyed_generations": retired,
            "resumed": resumed,
        }

    def _rotate_vault(
        self, progress: Callable[[int, int], None] | None, moment: datetime
    ) -> dict[str, Any]:
        provider = self._vault_provider()
        stored = self._store.get_meta("vault_rotation_target")
        resumed = stored is not None
        if stored is None:
            target = provider.rotate_key()
            with self._store.write():
                self._store.set_meta("vault_rotation_target", str(target))
                _audit.append(
                    self._store,
                    [
                        Event(
                            self.user,
                            "keys.rotate",
                            detail={"phase": "start", "generation": target},
                        )
                    ],
                    moment,
                )
        else:
            target = int(stored)
        total = self._store.count_records()
        done = rewrapped = 0
        after = ""
        while True:
            page = self._store.iter_keyblobs(after=after, limit=_PAGE)
            if not page:
                break
            stale = [
                WrappedRecord(r, v, b) for r, v, b in page if provider.blob_key_version(b) < target
            ]
            if stale:
                fresh = provider.rekey(stale)
                with self._store.write():
                    for rec, blob in zip(stale, fresh, strict=True):
                        rewrapped += int(
                            self._store.put_keyblob_if_version(rec.record_id, rec.version, blob)
                        )
            after = page[-1][0]
            done += len(page)
            if progress is not None:
                progress(min(done, total), total)
        # Blobs written concurrently by staff already use the latest version.
        provider.finish_rotation()
        with self._store.write():
            self._store.delete_meta("vault_rotation_target")
            _audit.append(
                self._store,
                [
                    Event(
                        self.user,
                        "keys.rotate",
                        detail={
                            "phase": "done",
                            "generation": target,
                            "resealed": rewrapped,
                            "resumed": resumed,
                        },
                    )
                ],
                moment,
            )
        return {
            "ok": True,
            "provider": "vault",
            "generation": target,
            "resealed": rewrapped,
            "resumed": resumed,
        }

    # --------------------------------------------------------------- lookup

    def find(
        self, field: str, value: str, *, type_name: str | None = None, now: datetime | None = None
    ) -> list[str]:
        """Staff: candidate records whose ``field`` may equal ``value`` (blind index).

        Tags are truncated, so the list can hold false positives; they are only
        told apart after an approved read. Refuses fields the schema does not
        mark ``searchable`` (never low-entropy ones). The lookup is logged.
        """
        moment = self._now(now)
        self._require(("staff", "officer"), "record.find", moment, "looking up records")
        rtype = self._schema.record_type(type_name or next(iter(self._schema.types)))
        spec = rtype.fields.get(field)
        if spec is None or not spec.searchable:
            searchable = [f for f, s in rtype.fields.items() if s.searchable]
            raise UsageError(
                f"field {field!r} is not searchable: lookups work on {', '.join(searchable)}"
            )
        clean = self._schema.validate_field(rtype.name, field, value)
        (tag,) = self.index_tags(field, [clean])
        candidates = self._store.find_by_tag(field, tag)
        self._log(
            [
                Event(
                    self.user,
                    "record.find",
                    records=candidates,
                    fields=[field],
                    detail={"candidates": len(candidates)},
                )
            ],
            moment,
        )
        return candidates
