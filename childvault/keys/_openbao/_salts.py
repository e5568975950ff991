"""The KV v2 engine: salt documents, created, read, replaced and destroyed.

A record's salt document (format in :mod:`._formats`) lives at
``<kv>/data/records/<record_id>``. The mount requires check-and-set, so a
document is created once (``cas=0``) and replaced only on top of the version
that was read. Wrapping a batch of new records writes their documents
concurrently (:meth:`SaltStore.for_records`) because KV v2 has no batch API.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from childvault.keys._errors import AccessDenied, DecryptionFailed, ProviderUnavailable
from childvault.keys._openbao._formats import SALT_LEN, Salts, check_record_id, parse_salts
from childvault.keys._openbao._http import Connection, scrub
from childvault.keys._openbao._policies import OFFICER, OFFICER_OR_ADMIN, STAFF, STAFF_OR_OFFICER
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
        """Create a new record's salt document, or return the one an earlier call wrote."""
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
            # For a token with create but not update, writing an existing path
            # is a 403 rather than a check-and-set conflict. Either way the
            # salt may already exist from an earlier, interrupted call.
            existing = self.read(record_id, STAFF)
            if existing is None:
                raise
            return existing
        if reply.status == 200:
            return salts
        # 400: check-and-set conflict, i.e. written by an earlier attempt.
        existing = self.read(record_id, STAFF)
        if existing is None:
            raise ProviderUnavailable(
                f"the Vault server at {self._settings.addr} refused to create the salt "
                f"at {path}; run `childvault doctor`",
                detail=scrub(reply.data.get("errors")),
            )
        return existing

    def _one(self, record_id: str, new: bool, field_names: Sequence[str]) -> Salts:
        if new:
            return self.create(record_id, field_names)
        return self.require(record_id, STAFF)

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
                f"the salt document at {path} changed while correcting the record "
                "(another correction at the same time?); nothing was changed, try again",
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

    def shred(self, record_id: str) -> None:
        """Destroy a record's salt document (all versions and metadata). Idempotent."""
        self._conn.call(
            "DELETE",
            self.path("metadata", record_id),
            need=("delete", OFFICER_OR_ADMIN),
        )
