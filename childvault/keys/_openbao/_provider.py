"""VaultProvider: field DEKs wrapped by HashiCorp Vault or OpenBao.

The provider composes the engines over one :class:`~._http.Connection`:
:class:`~._salts.SaltStore` (KV v2 salt documents), :class:`~._transit.Transit`
(wrap, rewrap, HMAC, rotation) and :class:`~._wrapping.Wrapping` (the
officer's response-wrapped decrypt, the requester's unwrap). The formats it
reads and writes are in :mod:`._formats`; docs/vault.md describes the design
from the operator's side.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from childvault._i18n import _t
from childvault.keys._errors import ApprovalInvalid, ConfigError, DecryptionFailed, UsageError
from childvault.keys._identity import Identity, PublicIdentity
from childvault.keys._openbao import _auditlog, _diagnose
from childvault.keys._openbao._formats import (
    DEK_LEN,
    SALT_LEN,
    Salts,
    blob_key_version,
    check_record_id,
    context,
    encode_blob,
    encode_material,
    parse_blob,
    parse_material,
)
from childvault.keys._openbao._http import Connection
from childvault.keys._openbao._policies import ADMIN, OFFICER, STAFF
from childvault.keys._openbao._salts import SaltStore
from childvault.keys._openbao._settings import VaultSettings, ttl
from childvault.keys._openbao._transit import Transit
from childvault.keys._openbao._wrapping import Wrapping
from childvault.keys._provider import FieldKey, RecordKeys, ReleasedKeys, Selection, WrappedRecord

__all__ = ["VaultProvider"]


def _kv_time(value: object) -> datetime | None:
    """A KV metadata time (RFC 3339, nanoseconds) as an aware datetime, or None."""
    if not isinstance(value, str) or len(value) < 19:
        return None
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _check_keys(keys: Sequence[FieldKey]) -> None:
    for fk in keys:
        if len(fk.key) != DEK_LEN or fk.version < 1:
            raise UsageError(_t("a field key must be 32 bytes with a version >= 1"))


class VaultProvider:
    """Key provider backed by a Vault/OpenBao server (Transit + KV v2).

    What an instance may do is decided by the token's policies, not by this
    class: with ``childvault-staff`` it wraps and redeems, with
    ``childvault-officer`` it also releases, replaces and shreds, with
    ``childvault-admin`` it rotates, rekeys and shreds.
    """

    kind = "vault"

    def __init__(
        self,
        settings: VaultSettings,
        vault_id: str,
        *,
        token: str | None = None,
        approle: tuple[str, str] | None = None,
        wrap_ttl: int | str | None = None,
    ) -> None:
        """Connect lazily: no request is made until the first operation.

        ``token`` defaults to ``VAULT_TOKEN``; ``approle=(role_id, secret_id)``
        logs in with AppRole instead (read the secret id from a file or the
        environment, never from the command line). ``wrap_ttl`` is the
        lifetime of released grants (default ``settings.wrap_ttl``).
        """
        if approle is not None and (
            len(approle) != 2 or not all(isinstance(p, str) and p for p in approle)
        ):
            raise ConfigError(_t("AppRole login needs a role id and a secret id"))
        if token is None and approle is None:
            token = os.environ.get("VAULT_TOKEN") or None
        self._settings = settings
        self._vault_id = vault_id
        self._wrap_ttl = ttl(wrap_ttl) if wrap_ttl is not None else settings.wrap_ttl
        # One connection shared by every engine: one HTTP session, one token.
        self._conn = Connection(settings, token=token, approle=approle)
        self._salts = SaltStore(self._conn, settings)
        self._transit = Transit(self._conn, settings, vault_id)
        self._wrapping = Wrapping(self._conn, settings)

    def __repr__(self) -> str:
        return f"VaultProvider(addr={self._settings.addr!r}, vault_id={self._vault_id!r})"

    @property
    def settings(self) -> VaultSettings:
        """The settings this provider was built with."""
        return self._settings

    @property
    def session(self) -> requests.Session:
        """The one HTTP session every request goes through (for instrumentation)."""
        return self._conn.session

    def close(self) -> None:
        """Close the HTTP session."""
        self._conn.close()

    def __enter__(self) -> VaultProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_salts(self, record_ids: Sequence[str], need_policy: str) -> dict[str, Salts]:
        # One read per record, in first-seen order.
        salts: dict[str, Salts] = {}
        for record_id in record_ids:
            if record_id not in salts:
                salts[record_id] = self._salts.require(record_id, need_policy)
        return salts

    # -- KeyProvider -------------------------------------------------------------

    def wrap(self, records: Sequence[RecordKeys]) -> list[bytes]:
        """Wrap each record's field keys with Transit; return one blob per record.

        New records get their salt document created once (``cas=0``); an
        existing document (from an interrupted earlier call) is read and used,
        so a failed call can simply be repeated. The salt documents are written
        ``settings.salt_workers`` at a time; the blobs are in the order of ``records``.
        """
        # Everything is checked before the first request: a bad input writes nothing.
        wanted: dict[str, tuple[bool, list[str]]] = {}
        for rec in records:
            check_record_id(rec.record_id)
            _check_keys(list(rec.fields.values()))
            # The first occurrence of a record id decides, as it always did.
            wanted.setdefault(rec.record_id, (rec.new, list(rec.fields)))
        salts = self._salts.for_records(wanted)
        items: list[tuple[bytes, str]] = []
        for rec in records:
            s = salts[rec.record_id]
            for name, fk in rec.fields.items():
                items.append((fk.key, context(rec.record_id, name, fk.version, s.for_field(name))))
        ciphertexts = iter(self._transit.encrypt(items, STAFF))
        blobs = []
        for rec in records:
            entries = {name: (fk.version, next(ciphertexts)) for name, fk in rec.fields.items()}
            blobs.append(encode_blob(rec.record_id, rec.version, entries))
        return blobs

    def release(
        self,
        selections: Sequence[Selection],
        requester: PublicIdentity,
        grant_id: str,
        *,
        wrap_ttl: int | str | None = None,
    ) -> bytes:
        """Officer: a response-wrapped batch decrypt of exactly the selected fields.

        The officer's client receives only wrapping tokens (the policy demands
        it with ``min_wrapping_ttl``), never a DEK. ``wrap_ttl`` is how long
        the requester has to redeem (default: the provider's ``wrap_ttl``).
        """
        return self.release_with_receipt(selections, requester, grant_id, wrap_ttl=wrap_ttl)[0]

    def release_with_receipt(
        self,
        selections: Sequence[Selection],
        requester: PublicIdentity,
        grant_id: str,
        *,
        wrap_ttl: int | str | None = None,
    ) -> tuple[bytes, dict[str, list[str]]]:
        """:meth:`release`, plus what to record: the wrapping tokens' accessors and
        the Vault request ids of the decrypts (``{"accessors": [...],
        "request_ids": [...]}``; no token, no key material)."""
        lifetime = ttl(wrap_ttl) if wrap_ttl is not None else self._wrap_ttl
        wanted: list[tuple[str, str, int, str]] = []
        seen: set[tuple[str, str]] = set()
        for sel in selections:
            entries = parse_blob(sel.record)
            for name in sel.fields:
                if name not in entries:
                    continue  # an optional field this record does not have
                if (sel.record.record_id, name) in seen:
                    raise UsageError(_t("field {name!r} of a record is selected twice", name=name))
                seen.add((sel.record.record_id, name))
                fv, ct = entries[name]
                wanted.append((sel.record.record_id, name, fv, ct))
        salts = self._require_salts([rid for rid, _name, _fv, _ct in wanted], OFFICER)
        receipt: dict[str, list[str]] = {"accessors": [], "request_ids": []}
        wraps = self._wrapping.wrapped_decrypts(wanted, salts, lifetime, receipt)
        return requester.seal(encode_material(self._vault_id, grant_id, wraps)), receipt

    def revoke_wrapping(self, accessors: Sequence[str]) -> int:
        """Officer: revoke a grant's wrapping tokens by accessor (``auth/token/revoke-accessor``).

        Returns how many were still live; used or expired ones are skipped.
        """
        return self._wrapping.revoke(accessors)

    def redeem(self, material: bytes, requester: Identity, grant_id: str) -> ReleasedKeys:
        """Requester: check and unwrap the grant's wrapping tokens (each works once)."""
        try:
            inner = requester.unseal(material)
        except DecryptionFailed as exc:
            raise ApprovalInvalid("grant material is not sealed to this requester") from exc
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ApprovalInvalid("grant material is malformed") from exc
        wraps = parse_material(inner, self._vault_id, grant_id)
        return self._wrapping.unwrap(wraps)

    def replace(
        self, record: WrappedRecord, new_version: int, changes: Mapping[str, FieldKey]
    ) -> bytes:
        """Officer: new blob for ``new_version``; the changed fields' old salts are destroyed.

        Order: wrap the new DEKs under fresh salts (nothing stored yet), then
        switch the salt document with check-and-set, then destroy every older
        KV version. Old blobs, also in backups, then fail for the changed fields.
        If the destroy step fails the call raises; repeating it is safe.
        """
        entries = parse_blob(record)
        if new_version <= record.version:
            raise UsageError(_t("the new record version must be greater than the current one"))
        _check_keys(list(changes.values()))
        if not changes:
            return encode_blob(record.record_id, new_version, entries)
        current = self._salts.require(record.record_id, OFFICER)
        fresh = dict(current.fields)
        for name in changes:
            fresh[name] = secrets.token_bytes(SALT_LEN)
        new_salts = Salts(current.record, fresh, current.kv_version + 1)
        items = [
            (fk.key, context(record.record_id, name, fk.version, fresh[name]))
            for name, fk in changes.items()
        ]
        ciphertexts = self._transit.encrypt(items, OFFICER)
        self._salts.replace(record.record_id, current, new_salts)
        merged = dict(entries)
        for (name, fk), ciphertext in zip(changes.items(), ciphertexts, strict=True):
            merged[name] = (fk.version, ciphertext)
        return encode_blob(record.record_id, new_version, merged)

    def shred(self, record_ids: Sequence[str]) -> None:
        """Destroy every version of the salt documents, keeping tombstones. Idempotent.

        The KV metadata stays, marked ``shredded``, so no salt can be written
        back at these record ids (docs/vault.md, "What shredding does").
        """
        for record_id in record_ids:
            self._salts.shred(record_id)

    # -- orphan salts (admin, `childvault vault gc`) ------------------------------------

    def orphan_salts(
        self, in_database: Callable[[str], bool], older_than: datetime
    ) -> list[dict[str, Any]]:
        """Admin: salt documents that no record in the database accounts for.

        A salt document is an orphan when ``in_database(record_id)`` is False
        (no live record, no deleted record's tombstone), it is not a shredding
        tombstone itself, and it was created before ``older_than`` (a batch
        still in flight has salts but no rows yet: the grace period spares it).
        Returns ``record_id``, ``created`` and ``versions`` per orphan; reads
        KV metadata only, never a salt.
        """
        out: list[dict[str, Any]] = []
        for record_id in self._salts.record_ids():
            if in_database(record_id):
                continue
            meta = self._salts.metadata(record_id)
            if meta is None:
                continue  # gone since the list
            custom = meta.get("custom_metadata")
            if isinstance(custom, dict) and "shredded" in custom:
                continue  # a tombstone: already destroyed
            created = _kv_time(meta.get("created_time"))
            if created is None or created >= older_than:
                continue
            out.append(
                {
                    "record_id": record_id,
                    "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "versions": int(meta.get("current_version") or 0),
                }
            )
        return out

    def revived_salts(self, shredded: Callable[[str], bool]) -> list[dict[str, Any]]:
        """Admin: record ids the database says were shredded whose salt document
        in Vault has a version not destroyed or has lost its ``shredded`` mark.

        Officers and admins may set ``custom_metadata`` (to write the mark), and
        Vault cannot limit its value, so one can clear the mark and write a saved
        salt back with ``cas=N``; this finds it. ``shredded(record_id)`` says
        whether the database holds a deletion tombstone with the key destroyed.
        Returns ``record_id``, ``live_versions`` and ``marked`` per finding; reads
        KV metadata only, never a salt.
        """
        out: list[dict[str, Any]] = []
        for record_id in self._salts.record_ids():
            if not shredded(record_id):
                continue
            meta = self._salts.metadata(record_id)
            if meta is None:
                continue  # no document: nothing to release
            versions = meta.get("versions")
            live = sorted(
                int(v)
                for v, info in (versions.items() if isinstance(versions, dict) else ())
                if not (isinstance(info, dict) and info.get("destroyed") is True)
            )
            custom = meta.get("custom_metadata")
            marked = isinstance(custom, dict) and "shredded" in custom
            if live or not marked:
                out.append({"record_id": record_id, "live_versions": live, "marked": marked})
        return out

    def destroy_orphan_salts(self, record_ids: Sequence[str], when: str) -> int:
        """Admin: destroy these salt documents, keeping tombstones marked ``orphan``.

        Like shredding: every version is destroyed and the metadata stays, so
        the record id can never get a salt again. Returns how many existed.
        """
        done = 0
        for record_id in record_ids:
            if self._salts.shred(record_id, when=when, marks={"orphan": "vault gc"}):
                done += 1
        return done

    # -- reconciliation with Vault's audit log -----------------------------------------

    def reconcile_audit_log(
        self,
        audit_file: Path,
        device: str,
        accessors: Sequence[str],
        owners: Mapping[str, tuple[str, bool]] | None = None,
    ) -> dict[str, Any]:
        """Decrypts on this vault's key, and unwraps of their wrapping tokens, in
        Vault's file audit log that childvault's log does not account for.

        ``accessors`` are the wrapping accessors childvault logged at approvals;
        ``owners`` maps each to its grant's requester and whether the
        requester's read was logged (:func:`_auditlog.unmatched_unwraps`).
        They are HMAC'd by the audit device ``device`` (``sys/audit-hash``,
        which the childvault-admin policy allows) to compare with the file.
        Returns ``decrypts``/``unwraps`` (counts) and ``unmatched``/
        ``unmatched_unwraps`` (report dicts).
        """
        decrypts, unwraps = _auditlog.operations_in(audit_file, self._wrapping.decrypt_path)
        owned = dict(owners or {})
        hashed: dict[str, tuple[str, bool]] = {}
        for accessor in accessors:
            for digest in _auditlog.audit_hashes(self._conn, device, [accessor]):
                hashed[digest] = owned.get(accessor, ("", False))
        known = set(accessors) | set(hashed)
        hashed.update((a, owned.get(a, ("", False))) for a in accessors)
        return {
            "decrypts": len(decrypts),
            "unmatched": [d.to_json() for d in _auditlog.unmatched(decrypts, known)],
            "unwraps": len(unwraps),
            "unmatched_unwraps": [
                u.to_json() for u in _auditlog.unmatched_unwraps(unwraps, hashed)
            ],
        }

    # -- rotation (admin) ----------------------------------------------------------

    def key_info(self) -> dict[str, Any]:
        """The Transit key's public description (versions, flags); no key material."""
        return self._transit.key_info()

    def latest_key_version(self) -> int:
        """The newest version of the Transit key (what new wraps use)."""
        return self._transit.latest_version()

    def rotate_key(self) -> int:
        """Admin: add a new Transit key version; return it. Old blobs still open."""
        return self._transit.rotate()

    @staticmethod
    def blob_key_version(blob: bytes) -> int:
        """The oldest Transit key version any DEK in ``blob`` is wrapped with.

        ``keys rotate`` rekeys the records whose value is below
        :meth:`latest_key_version`, which makes it resumable.
        """
        return blob_key_version(blob)

    def rekey(self, records: Sequence[WrappedRecord]) -> list[bytes]:
        """Admin: rewrap every DEK under the latest key version (no plaintext leaves Vault).

        Rewrapping an already current blob is harmless, so an interrupted
        rotation can be run again from the start.
        """
        parsed = [(rec, parse_blob(rec)) for rec in records]
        salts = self._require_salts([rec.record_id for rec, _entries in parsed], ADMIN)
        items = [
            (ct, context(rec.record_id, name, fv, salts[rec.record_id].for_field(name)))
            for rec, entries in parsed
            for name, (fv, ct) in entries.items()
        ]
        it = iter(self._transit.rewrap(items))
        out: list[bytes] = []
        for rec, entries in parsed:
            new_entries = {name: (fv, next(it)) for name, (fv, _ct) in entries.items()}
            out.append(encode_blob(rec.record_id, rec.version, new_entries))
        return out

    def finish_rotation(self, *, trim: bool = False) -> int:
        """Admin: retire every older key version; return the version still in use.

        Sets ``min_decryption_version`` (and ``min_encryption_version``) to the
        latest version, so ciphertexts under older versions (un-rekeyed blobs,
        backups) no longer open. With
        ``trim=True`` the older versions are also deleted from Vault for good
        (``keys/<key>/trim``); without it an admin could lower the minimum again.
        Call only after every live record was rekeyed.
        """
        return self._transit.retire_older(trim=trim)

    # -- blind index -------------------------------------------------------------------

    def hmac(self, field: str, values: Sequence[bytes]) -> list[bytes]:
        """Raw HMAC-SHA256 of each value under the pinned version of the index key.

        The input binds the vault id and field name, so equal values in other
        fields or vaults give unrelated MACs. The caller truncates.
        """
        return self._transit.hmac(field, values)

    # -- doctor ---------------------------------------------------------------------------

    def diagnose(self) -> dict[str, Any]:
        """Health report for ``childvault doctor``. Never raises for a down server.

        Keys: ``addr``, ``namespace``, ``reachable``, ``initialized``,
        ``sealed``, ``version``, ``token`` (valid, policies, ttl), ``mounts``,
        ``keys``, ``capabilities`` (per product path), ``roles`` (which
        childvault roles the token can act as), ``problems`` (human-readable)
        and ``ok``.
        """
        return _diagnose.diagnose(self._conn, self._settings)
