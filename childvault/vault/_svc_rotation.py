"""Key rotation: a new custodian key generation (custodial providers) or a new
wrapping-key version inside the provider (:class:`ServerSideRotation`).

Resumable: the state of an interrupted rotation is in the database (a
``pending`` custodian generation, or the ``vault_rotation_target`` setting),
and running it again finishes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from childvault._i18n import _t
from childvault.keys import (
    AccessDenied,
    ConfigError,
    CustodianSecret,
    FieldKey,
    IntegrityError,
    KeySlots,
    LocalProvider,
    PublicIdentity,
    RecordKeys,
    UsageError,
    WrappedRecord,
    blob_generation,
)
from childvault.vault import _audit, _statements
from childvault.vault import _record_trust as record_trust
from childvault.vault._action_roles import role_at
from childvault.vault._audit import Event
from childvault.vault._fieldcrypto import open_field, seal_field
from childvault.vault._registrations import (
    append_with_statements,
    custodian_statement,
    with_statement,
)
from childvault.vault._session import Session
from childvault.vault._statements import Envelope, TrustState
from childvault.vault._time import iso

_PAGE = 500


class RotationService:
    """Rotate the key that wraps every record's keys; resumable."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def rotate_keys(
        self,
        *,
        progress: Callable[[int, int], None] | None = None,
        now: datetime | None = None,
        trim: bool = False,
        rekey: bool = False,
    ) -> dict[str, Any]:
        """Rotate the key that wraps every record's keys; resumable.

        ``rekey`` (local provider): afterwards, re-encrypt every live field under
        a new field key (:meth:`_rekey_all`), so approval tokens issued before
        open nothing stored or backed up from then on (``rekeyed`` in the
        report).

        Custodial provider (local; an officer): a new custodian key pair is
        sealed to every officer, every record box is resealed to it, then the
        old pair is destroyed, so backups taken before become unreadable.
        Provider with :class:`ServerSideRotation` (OpenBao / Vault; an admin):
        the Transit key is rotated, every wrapped key is rewrapped inside the
        server (no plaintext), then older key versions are retired; with
        ``trim`` they are also deleted from the server (``trimmed`` in the
        report), so nobody can re-enable them by lowering
        ``min_decryption_version``. The custodial provider always destroys the
        old pair, so ``trim`` changes nothing there.
        """
        moment = self.s.now(now)
        if self.s.keys.server_side_rotation:
            self.s.require(("admin",), "keys.rotate", moment, _t("rotating Vault keys"))
            if rekey:
                raise UsageError(
                    _t(
                        "--rekey is available with the local provider only: with Vault, `keys "
                        "rotate --trim` destroys the old Transit key versions"
                    )
                )
            return self._rotate_server_side(progress, moment, trim=trim)
        self.s.require(("officer",), "keys.rotate", moment, _t("rotating the custodian key"))
        report = self._rotate_custodian(progress, moment)
        if rekey:
            report["rekeyed"] = self._rekey_all(progress, moment)
        return report

    def _rewrite_custodian_slots(self, generations: Sequence[int]) -> None:
        """Rewrite the key slot of every holder of the current custodian key so it
        holds exactly ``generations``: this is what destroys an old custodian key."""

        current = [g for g, _, s in self.s.db.custodians.all() if s == "current"]
        if not current:
            return
        state = self.s.trust()
        holders = (
            self.s.db.custodians.holders(current[0])
            if state is None
            else self._verified_holders(state)
        )
        mine = {
            g: self.s.secrets[f"custodian/{g}"]
            for g in generations
            if f"custodian/{g}" in self.s.secrets
        }
        if len(mine) != len(generations):
            raise AccessDenied(
                _t("{user!r} does not hold every custodian generation needed", user=self.s.user)
            )
        base = {k: self.s.secrets[k] for k in ("db", "index")}
        entries = {f"custodian/{g}": secret for g, secret in mine.items()}
        slots = self.s.key_slots()
        for name in holders:
            if state is not None:
                pub = self.s.trusted_public(name, "keys.rotate", self.s.now(), role="officer")
            else:
                user = self.s.db.users.get(name)
                if user is None:
                    continue
                pub = PublicIdentity(user.name, user.enc_key, user.sign_key)
            slots.add(pub, self.s.vault_id, {**base, **entries})
        if state is not None:
            self._strip_other_slots(state, slots, set(holders), base)
        # In place: the key ring reads the same dict.
        self.s.secrets.clear()
        self.s.secrets.update({**base, **entries})

    @staticmethod
    def _verified_holders(state: TrustState) -> list[str]:
        """Active officers the signed statements make holders of the current generation."""
        current = state.current_custodian()
        return [] if current is None else sorted(state.active_holders(current[0]))

    def _strip_other_slots(
        self, state: TrustState, slots: KeySlots, holders: set[str], base: dict[str, bytes]
    ) -> None:
        """Rewrite every other key slot with the database and index keys only, so no
        custodian entry survives in a slot it was once sealed to (issue 12, attack 6).

        Users with a verified registration are resealed to their verified key;
        others (a pending officer) to the key of their row: the database and
        index keys are what every user holds, so that gives an insider nothing.
        A slot of a name with no users row at all is removed.
        """
        for name in slots.users():
            if name in holders:
                continue
            if state.is_active(name):
                found = state.user(name)
                slots.add(
                    PublicIdentity(name, found.enc_key, found.sign_key), self.s.vault_id, base
                )
                continue
            row = self.s.db.users.get(name)
            if row is None or name in state.users:
                slots.remove(name)  # unknown, or disabled: no slot at all
                continue
            slots.add(PublicIdentity(name, row.enc_key, row.sign_key), self.s.vault_id, base)

    def _rotate_statement(
        self, target: int, public: bytes, moment: datetime
    ) -> tuple[Event, Envelope] | None:
        """The signed ``custodian.rotate`` entry making ``target`` current (None without
        an anchor), logged in the switch transaction; refused unless it verifies."""
        state = self.s.trust()
        if state is None:
            return None
        current = state.current_custodian()
        if current is None or current[0] == target:
            return None
        holders = self._verified_holders(state)
        envelope = _statements.sign(
            custodian_statement(
                self.s.vault_id,
                iso(moment),
                "custodian.rotate",
                generation=target,
                previous=current[0],
                public_key=public.hex(),
                holders=holders,
            ),
            [self.s.me],
        )
        trial = state.copy()
        try:
            trial.apply(envelope, seq=self.s.db.audit.head()[0])
        except IntegrityError as exc:
            self.s.distrust(
                "keys.rotate", _t("the rotation would not verify ({exc})", exc=exc), moment
            )
        event = Event(
            self.s.user,
            "keys.rotate",
            detail=with_statement(
                {"phase": "switch", "generation": target, "public_key": public.hex()}, envelope
            ),
        )
        return event, envelope

    def _rotate_custodian(
        self, progress: Callable[[int, int], None] | None, moment: datetime
    ) -> dict[str, Any]:
        gens = self.s.db.custodians.all()
        current_gens = [g for g, _, s in gens if s == "current"]
        if not current_gens:
            # Decommissioning destroys the custodian key; before the first officer there is none.
            raise ConfigError(
                _t(
                    "there is no custodian key to rotate: the vault was decommissioned, or no "
                    "officer has been added yet"
                )
            )
        current = current_gens[0]
        pending = [g for g, _, s in gens if s == "pending"]
        retired = [g for g, _, s in gens if s == "retired"]
        self.s.keys.local_officer()  # the acting officer must hold the current key
        state = self.s.trust()
        if state is not None and self.s.user not in self._verified_holders(state):
            # Checked before any slot is rewritten: the rotation statement would not verify.
            self.s.distrust(
                "keys.rotate",
                _t(
                    "{user!r} is not a verified holder of the current custodian key",
                    user=self.s.user,
                ),
                moment,
            )
        if not pending and retired:
            # Interrupted after the switch: finish resealing to the current key.
            target = current
            resumed = True
        elif pending:
            target = pending[0]
            resumed = True
            if f"custodian/{target}" not in self.s.secrets:
                raise AccessDenied(
                    _t(
                        "{user!r} holds no slot of the new custodian key (generation {target}); "
                        "an officer enrolled before the rotation started must finish it",
                        user=self.s.user,
                        target=target,
                    )
                )
        else:
            resumed = False
            target = max(g for g, _, _ in gens) + 1
            fresh = CustodianSecret.generate(target)
            self.s.secrets[f"custodian/{target}"] = fresh.secret_bytes()
            # Every holder of the current key gets the new one before any box moves.
            self._rewrite_custodian_slots([current, target])
            with self.s.db.transaction():
                self.s.db.custodians.add(target, fresh.public, "pending", iso(moment))
                for name in self.s.db.custodians.holders(current):
                    self.s.db.custodians.add_holder(target, name)
                _audit.append(
                    self.s.db.audit,
                    [
                        Event(
                            self.s.user,
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
        base = self.s.keys.local_officer()
        target_public = next(p for g, p, _ in self.s.db.custodians.all() if g == target)
        provider = base.retarget(target, target_public)
        if not provider.holds(target):
            raise AccessDenied(
                _t(
                    "{user!r} cannot unlock custodian generation {target}",
                    user=self.s.user,
                    target=target,
                )
            )
        switch = self._rotate_statement(target, target_public, moment)
        with self.s.db.transaction():
            for g, _, s in self.s.db.custodians.all():
                if s == "current" and g != target:
                    self.s.db.custodians.set_state(g, "retired")
            self.s.db.custodians.set_state(target, "current")
            if switch is not None:
                append_with_statements(self.s.db, [switch], moment)
        self.s.keys.reset()
        total = self.s.db.records.count()
        done = resealed = 0
        after = ""
        while True:
            page = self.s.db.records.keyblob_page(after=after, limit=_PAGE)
            if not page:
                break
            with self.s.db.transaction():
                resealed += self._store_resigned(
                    [
                        (rid, ver, blob, provider.rekey(WrappedRecord(rid, ver, blob)))
                        for rid, ver, blob in page
                        if blob_generation(blob) != target
                    ],
                    moment,
                )
            after = page[-1][0]
            done += len(page)
            if progress is not None:
                progress(min(done, total), total)
        with self.s.db.transaction():
            # Under the write lock no one can add a blob of an old generation.
            after = ""
            while True:
                page = self.s.db.records.keyblob_page(after=after, limit=_PAGE)
                if not page:
                    break
                resealed += self._store_resigned(
                    [
                        (rid, ver, blob, provider.rekey(WrappedRecord(rid, ver, blob)))
                        for rid, ver, blob in page
                        if blob_generation(blob) != target
                    ],
                    moment,
                )
                after = page[-1][0]
            retired = [g for g, _, s in self.s.db.custodians.all() if s == "retired"]
            for g in retired:
                self.s.db.custodians.delete(g)
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        self.s.user,
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
        self.s.db.compact()
        self.s.keys.reset()
        return {
            "ok": True,
            "provider": self.s.keys.name,
            "generation": target,
            "resealed": resealed,
            "destroyed_generations": retired,
            "resumed": resumed,
        }

    def _rekey_all(self, progress: Callable[[int, int], None] | None, moment: datetime) -> int:
        """Re-encrypt every live field under a new field key; return how many records.

        Why: a field key lives as long as its value; every approval token ever
        issued for a field holds it, so a token plus any later copy of the
        database opens that field. After a rekey no earlier token opens the
        stored ciphertexts or backups taken from now on (SECURITY.md). The
        acting officer's process decrypts every value to do it: each page is
        logged (``keys.rotate``, phase ``rekey``, naming its records) and
        committed before its values are opened. Each record is checked against
        its latest signed version first (a forgery is skipped and the refusal
        logged, not laundered) and re-signed by the officer with its new
        ciphertexts and key blob, in the transaction that stores them.
        """
        provider = self.s.keys.local_officer()
        total = self.s.db.records.count()
        done = rekeyed = 0
        after = ""
        while True:
            page = self.s.db.records.keyblob_page(after=after, limit=_PAGE)
            if not page:
                break
            after = page[-1][0]
            self.s.log(
                [
                    Event(
                        self.s.user,
                        "keys.rotate",
                        records=[rid for rid, _, _ in page],
                        detail={"phase": "rekey"},
                    )
                ],
                moment,
            )
            rekeyed += self._rekey_page(provider, page, moment)
            done += len(page)
            if progress is not None:
                progress(min(done, total), total)
        return rekeyed

    def _rekey_page(
        self, provider: LocalProvider, page: Sequence[tuple[str, int, bytes]], moment: datetime
    ) -> int:
        """Re-encrypt one page of records (see :meth:`_rekey_all`)."""
        found = record_trust.record_heads(self.s)
        prepared: list[tuple[str, int, list[tuple[str, int, bytes]], bytes, Envelope | None]] = []
        refused: list[tuple[str, str]] = []
        for rid, version, blob in page:
            row = self.s.db.records.get(rid)
            if row is None:
                continue
            if found is not None:
                why = record_trust.check_record(self.s.db, found[0], found[1], row, blob)
                if why is not None:
                    refused.append((rid, why))
                    continue
            old_keys = provider.open(WrappedRecord(rid, version, blob))
            fields: list[tuple[str, int, bytes]] = []
            new_keys: dict[str, FieldKey] = {}
            for name, fv, sealed in record_trust.stored_fields(self.s.db, rid):
                vid = self.s.vault_id
                plain = open_field(
                    sealed, old_keys[name], vault_id=vid, record_id=rid, field=name, version=fv
                )
                resealed, new_keys[name] = seal_field(
                    plain, vault_id=vid, record_id=rid, field=name, version=fv
                )
                del plain
                fields.append((name, fv, resealed))
            (new_blob,) = provider.wrap([RecordKeys(rid, version, new_keys, new=False)])
            envelope = (
                None
                if found is None
                else record_trust.sign_version(self.s, row, fields, new_blob, moment)
            )
            prepared.append((rid, version, fields, new_blob, envelope))
        count = 0
        with self.s.db.transaction():
            signed: list[tuple[Event, Envelope | None]] = []
            for rid, version, fields, new_blob, envelope in prepared:
                if not self.s.db.records.put_keyblob_if_version(rid, version, new_blob):
                    continue  # corrected meanwhile: its new version keeps its own keys
                for name, fv, resealed in fields:
                    self.s.db.records.put_field(rid, name, fv, resealed)
                count += 1
                if envelope is not None:
                    event = Event(
                        self.s.user, "record.resign", records=[rid], detail={"on": "keys.rekey"}
                    )
                    signed.append((record_trust.with_record_statement(event, envelope), envelope))
            if signed:
                record_trust.append_signed(self.s.db, signed, moment)
            self._log_unverified(refused, moment)
        self.s.db.compact()
        return count

    def _log_unverified(self, refused: Sequence[tuple[str, str]], moment: datetime) -> None:
        """One ``trust.refuse`` entry naming records a rotation left unsigned."""
        if not refused:
            return
        _audit.append(
            self.s.db.audit,
            [
                Event(
                    self.s.user,
                    "trust.refuse",
                    "denied",
                    records=[rid for rid, _ in refused[:100]],
                    detail={
                        "on": "keys.rotate",
                        "reason": f"{len(refused)} record(s) not re-signed: {refused[0][1]}",
                    },
                )
            ],
            moment,
        )

    def _store_resigned(
        self, items: Sequence[tuple[str, int, bytes, bytes]], moment: datetime
    ) -> int:
        """Store re-wrapped key blobs, each with its record re-signed; return how many.

        ``items``: (record id, version, old blob, new blob). Must run inside a
        transaction. A record statement binds the key blob's hash, so the
        officer (or, for the server-side rotation, the admin) who re-wraps a
        record signs its version again, over the same fields and the new blob,
        after checking the stored rows against the latest signed version: a
        forged record is not laundered by a rotation (it is re-wrapped but not
        re-signed, so every later use still refuses it, and the rotation logs
        one ``trust.refuse`` naming it). Without an anchor nothing is signed.
        """
        found = record_trust.record_heads(self.s)
        signed: list[tuple[Event, Envelope | None]] = []
        refused: list[tuple[str, str]] = []
        count = 0
        for rid, version, old, new in items:
            row = self.s.db.records.get(rid)
            envelope: Envelope | None = None
            if found is not None and row is not None:
                why = record_trust.check_record(self.s.db, found[0], found[1], row, old)
                if why is None:
                    fields = record_trust.stored_fields(self.s.db, rid)
                    envelope = record_trust.sign_version(self.s, row, fields, new, moment)
                else:
                    refused.append((rid, why))
            if not self.s.db.records.put_keyblob_if_version(rid, version, new):
                continue
            count += 1
            if envelope is not None:
                event = Event(
                    self.s.user, "record.resign", records=[rid], detail={"on": "keys.rotate"}
                )
                signed.append((record_trust.with_record_statement(event, envelope), envelope))
        if signed:
            record_trust.append_signed(self.s.db, signed, moment)
        self._log_unverified(refused, moment)
        return count

    def _checked_rotation_target(self, moment: datetime) -> str | None:
        """The resume point of an interrupted server-side rotation, checked against
        the log before use (docs/trust.md, "Settings and other meta rows").

        The ``vault_rotation_target`` row is only a copy: the authority is the
        verified log's last ``keys.rotate`` start entry (Vault provider: no
        ``public_key``) by an active admin with no ``done`` entry after it. A
        row that names another generation (a lowered target would leave blobs
        on key versions a ``--trim`` then deletes), a row with no open start
        entry, or an open start entry whose row was removed, is refused and
        logged (``trust.refuse``).
        """
        state = self.s.trust()
        logged: int | None = None
        for raw in self.s.db.audit.entries_by_action(("keys.rotate",)):
            doc = _audit.decode_entry(raw)
            detail = doc.get("detail") or {}
            if doc.get("outcome") != "ok" or not isinstance(detail, dict):
                continue
            # An admin's, active under their registration (``role_at``,
            # ``was_active``: the resume point lets a trim delete key versions).
            # No verified state counts no entry: the row must then be absent.
            if not role_at(state, doc.get("actor"), "admin", doc.get("seq"), mode="was_active"):
                continue
            if detail.get("phase") == "start" and "public_key" not in detail:
                generation = detail.get("generation")
                logged = generation if isinstance(generation, int) else None
            elif detail.get("phase") == "done":
                logged = None
        stored = self.s.db.meta.get("vault_rotation_target")
        if stored != (None if logged is None else str(logged)):
            self.s.distrust(
                "keys.rotate",
                _t(
                    "the resume point of the interrupted rotation ({stored}) differs from its "
                    "logged keys.rotate start entry ({logged})",
                    stored=stored or "none",
                    logged=logged or "none",
                ),
                moment,
            )
        return stored

    def _rotate_server_side(
        self, progress: Callable[[int, int], None] | None, moment: datetime, *, trim: bool
    ) -> dict[str, Any]:
        provider = self.s.keys.rotator()
        stored = self._checked_rotation_target(moment)
        resumed = stored is not None
        if stored is None:
            target = provider.rotate_key()
            with self.s.db.transaction():
                self.s.db.meta.set("vault_rotation_target", str(target))
                _audit.append(
                    self.s.db.audit,
                    [
                        Event(
                            self.s.user,
                            "keys.rotate",
                            detail={"phase": "start", "generation": target},
                        )
                    ],
                    moment,
                )
        else:
            target = int(stored)
        total = self.s.db.records.count()
        done = rewrapped = 0
        after = ""
        while True:
            page = self.s.db.records.keyblob_page(after=after, limit=_PAGE)
            if not page:
                break
            stale = [
                WrappedRecord(r, v, b) for r, v, b in page if provider.blob_key_version(b) < target
            ]
            if stale:
                fresh = provider.rekey(stale)
                with self.s.db.transaction():
                    rewrapped += self._store_resigned(
                        [
                            (rec.record_id, rec.version, rec.blob, blob)
                            for rec, blob in zip(stale, fresh, strict=True)
                        ],
                        moment,
                    )
            after = page[-1][0]
            done += len(page)
            if progress is not None:
                progress(min(done, total), total)
        # Blobs written concurrently by staff already use the latest version.
        provider.finish_rotation(trim=trim)
        with self.s.db.transaction():
            self.s.db.meta.delete("vault_rotation_target")
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        self.s.user,
                        "keys.rotate",
                        detail={
                            "phase": "done",
                            "generation": target,
                            "resealed": rewrapped,
                            "resumed": resumed,
                            "trimmed": trim,
                        },
                    )
                ],
                moment,
            )
        return {
            "ok": True,
            "provider": self.s.keys.name,
            "generation": target,
            "resealed": rewrapped,
            "resumed": resumed,
            # Every key version below ``generation`` is deleted from the server
            # (trimmed) or only retired (min_decryption_version raised).
            "trimmed": trim,
        }
