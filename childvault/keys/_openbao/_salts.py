"""The KV v2 engine: salt documents, created, read, replaced and destroyed.

A record's salt document (format in :mod:`._formats`) lives at
``<kv>/data/records/<record_id>``. The mount requires check-and-set, so a
document is created once (``cas=0``) and replaced only on top of the version
that was read. Staff may only create (never read back) a document; shredding
destroys every version and keeps the metadata as a tombstone, so a record id
can never get a salt again. Wrapping a batch of new records writes their documents
concurrently (:meth:`SaltStore.for_records`) because KV v2 has no batch API.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from childvault._i18n import _t
from childvault.keys._errors import (
    AccessDenied,
    DecryptionFailed,
    ProviderUnavailable,
    UsageError,
)
from childvault.keys._openbao._formats import SALT_LEN, Salts, check_record_id, parse_salts
from childvault.keys._openbao._http import Connection, scrub
from childvault.keys._openbao._policies import (
    ADMIN,
    ANY_ROLE,
    OFFICER,
    OFFICER_OR_ADMIN,
    STAFF_OR_OFFICER,
)
from childvault.keys._openbao._settings import VaultSettings

__all__ = ["SaltStore"]


class SaltStore:
    """The salt documents of one vault's records, on the configured KV v2 mount."""

    def __init__(self, conn: Connection, settings: VaultSettings) -> None:
        """Operate through ``conn`` on ``settings.kv_mount``."""
        self._conn = conn
        self._settings = settings

    def path(self, kind: str, record_id: str) -> str:
        """API path of a record's document (``kind``: data, metadata, destroy)."""
        return f"{self._settings.kv_mount}/{kind}/records/{check_record_id(record_id)}"

    # -- reading ------------------------------------------------------------------------

    def read(self, record_id: str, need_policy: str) -> Salts | None:
        """The current salt document, or None if it does not exist (any more)."""
        path = self.path("data", record_id)
        reply = self._conn.call("GET", path, ok=(200, 404), need=("read", need_policy))
        if reply.status == 404:
            # Never created, or shredded (metadata deleted), or its current
            # version destroyed: in every case the key material is gone.
            return None
        return parse_salts(reply.data, record_id)

    def require(self, record_id: str, need_policy: str) -> Salts:
        """The current salt document; :class:`DecryptionFailed` if it is gone."""
        salts = self.read(record_id, need_policy)
        if salts is None:
            raise DecryptionFailed(
                f"the key material of record {record_id} does not exist in Vault "
                "(shredded, or never written)"
            )
        return salts

    # -- creating ----------------------------------------------------------------------

    def create(self, record_id: str, field_names: Sequence[str]) -> Salts:
        """Create a new record's salt document.

        If the document exists already, a token that may read salts (officer)
        gets the one an earlier, interrupted call wrote; a create-only (staff)
        token, or any token facing a shredding tombstone, gets
        :class:`UsageError`: the record id is not reused.
        """
        # Every field of a new record gets its own salt, so a later correction
        # of any of them can destroy the old salt (and with it the old DEK in
        # every backup) without touching the others.
        salts = Salts(
            secrets.token_bytes(SALT_LEN),
            {name: secrets.token_bytes(SALT_LEN) for name in field_names},
            1,
        )
        path = self.path("data", record_id)
        try:
            reply = self._conn.call(
                "POST",
                path,
                body={"options": {"cas": 0}, "data": salts.to_doc()},
                ok=(200, 400),
                need=("create", STAFF_OR_OFFICER),
            )
        except AccessDenied:
            # A create-only (staff) token writing an existing path gets a 403,
            # not a check-and-set conflict. Tell that apart from a token that
            # lacks "create" altogether, whose own message is the right one.
            if "create" not in self._capabilities(path):
                raise
            raise self._reused(record_id) from None
        if reply.status == 200:
            return salts
        # 400: check-and-set conflict (a token with update). The document was
        # written by an earlier, interrupted attempt (reused, for a token that
        # may read it), or it is a shredded record's tombstone (refused).
        existing = self.read(record_id, OFFICER)
        if existing is None:
            raise self._reused(record_id)
        return existing

    def _capabilities(self, path: str) -> list[str]:
        reply = self._conn.call(
            "POST", "sys/capabilities-self", body={"paths": [path]}, need=("update", ANY_ROLE)
        )
        caps = reply.data.get(path) or (reply.data.get("data") or {}).get(path)
        return [str(c) for c in caps] if isinstance(caps, list) else []

    def _reused(self, record_id: str) -> UsageError:
        return UsageError(
            _t(
                "record id {record_id} already has a salt document or a shredding "
                "tombstone in Vault (an interrupted earlier attempt, or a shredded "
                "record); salts are create-only and record ids are never reused: "
                "write the record under a new id (`childvault vault gc` destroys "
                "orphaned salts)",
                record_id=record_id,
            )
        )

    def _one(self, record_id: str, new: bool, field_names: Sequence[str]) -> Salts:
        if new:
            return self.create(record_id, field_names)
        # Staff salts are create-only (no read): wrapping keys of an existing
        # record needs its salts, i.e. an officer (a correction).
        return self.require(record_id, OFFICER)

    def for_records(self, wanted: Mapping[str, tuple[bool, Sequence[str]]]) -> dict[str, Salts]:
        """Create (new records) or read each record's salts, ``salt_workers`` at a time.

        ``wanted`` maps a record id to ``(new, field names)``. KV v2 has no
        batch write, so this is one round trip per record; keeping several in
        flight hides most of their latency. After the first failure no further
        request is started, the ones in flight are waited for, and the first
        error in record order is raised. A salt already written is reused when
        the call is repeated (:meth:`create`).
        """
        workers = min(self._settings.salt_workers, len(wanted))
        if workers <= 1:
            return {rid: self._one(rid, new, names) for rid, (new, names) in wanted.items()}
        # The workers get record ids and field names only, never a DEK.
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="childvault-salts")
        try:
            futures = {
                rid: pool.submit(self._one, rid, new, names) for rid, (new, names) in wanted.items()
            }
            wait(futures.values(), return_when=FIRST_EXCEPTION)
        finally:
            # Also on an interrupt: drop what has not started, wait for what
            # has, so no request outlives this call.
            pool.shutdown(wait=True, cancel_futures=True)
        for future in futures.values():
            error = None if future.cancelled() else future.exception()
            if error is not None:
                raise error
        # Nothing failed, so nothing was cancelled.
        return {rid: future.result() for rid, future in futures.items()}

    # -- replacing and destroying ---------------------------------------------------------

    def replace(self, record_id: str, current: Salts, new: Salts) -> None:
        """Officer: write ``new`` on top of ``current`` (check-and-set), destroy older versions.

        Old versions are destroyed, not just deleted, so the DEKs that depended
        on them cannot be unwrapped again, also from a database backup.
        """
        path = self.path("data", record_id)
        reply = self._conn.call(
            "POST",
            path,
            body={"options": {"cas": current.kv_version}, "data": new.to_doc()},
            ok=(200, 400),
            need=("update", OFFICER),
        )
        if reply.status == 400:
            raise ProviderUnavailable(
                _t(
                    "the salt document at {path} changed while correcting the record "
                    "(another correction at the same time?); nothing was changed, "
                    "try again",
                    path=path,
                ),
                detail=scrub(reply.data.get("errors")),
            )
        try:
            written = int(reply.data["data"]["version"])
        except (KeyError, TypeError, ValueError):
            written = current.kv_version + 1
        self._conn.call(
            "POST",
            self.path("destroy", record_id),
            body={"versions": list(range(1, written))},
            need=("update", OFFICER_OR_ADMIN),
        )

    def metadata(self, record_id: str) -> dict[str, Any] | None:
        """A document's KV metadata (versions, custom metadata; no key material), or None."""
        reply = self._conn.call(
            "GET", self.path("metadata", record_id), ok=(200, 404), need=("read", OFFICER_OR_ADMIN)
        )
        data = reply.data.get("data")
        return data if reply.status == 200 and isinstance(data, dict) else None

    def record_ids(self) -> list[str]:
        """Admin: every record id with a salt document or a tombstone on the mount (a KV list)."""
        reply = self._conn.call(
            "GET",
            f"{self._settings.kv_mount}/metadata/records",
            params={"list": "true"},
            ok=(200, 404),
            need=("list", ADMIN),
        )
        if reply.status == 404:
            return []  # nothing was ever written
        keys = (reply.data.get("data") or {}).get("keys")
        # Only names that can be record ids: a folder ("x/") or anything else
        # another tool put under records/ is not ours to list or destroy.
        out = []
        for key in keys or []:
            try:
                out.append(check_record_id(key) if isinstance(key, str) else "")
            except UsageError:
                continue
        return sorted(k for k in out if k)

    def shred(
        self,
        record_id: str,
        *,
        when: str | None = None,
        marks: Mapping[str, str] | None = None,
    ) -> bool:
        """Destroy every version of a record's salt document and keep a tombstone.

        The metadata stays (marked ``custom_metadata.shredded=<when>``): its
        version counter is what makes a later check-and-set 0 write fail, so
        a copied salt can never be written back. Idempotent; an earlier mark
        is kept; ``marks`` are further custom metadata to set with it (say
        why: ``vault gc`` marks an orphan). Returns False if no document ever
        existed (nothing to do).
        """
        meta = self.metadata(record_id)
        if meta is None:
            return False
        current = int(meta.get("current_version") or 0)
        if current > 0:
            self._conn.call(
                "POST",
                self.path("destroy", record_id),
                body={"versions": list(range(1, current + 1))},
                need=("update", OFFICER_OR_ADMIN),
            )
        custom = meta.get("custom_metadata")
        kept = dict(custom) if isinstance(custom, dict) else {}
        if "shredded" not in kept:
            kept["shredded"] = when or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            kept.update(marks or {})
            self._conn.call(
                "POST",
                self.path("metadata", record_id),
                body={"custom_metadata": kept},
                need=("update", OFFICER_OR_ADMIN),
            )
        return True
